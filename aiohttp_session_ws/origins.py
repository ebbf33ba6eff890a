"""Origin checks for websocket upgrades (cross-site websocket hijacking)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from yarl import URL

ANY_ORIGIN = "*"
"""In ``allowed_origins``: accept an upgrade from every origin."""

_WILDCARD_HINT = (
    "for the subdomains of a domain, write a wildcard as the whole first "
    "label, e.g. 'https://*.example.com'"
)


def normalize_origin(origin: str, *, wildcard: bool = False) -> str:
    """Return ``scheme://host:port`` for an origin, default port filled in.

    With ``wildcard``, ``scheme://*.domain[:port]`` (every subdomain of
    ``domain``, not ``domain`` itself) is an origin too.

    :raises ValueError: ``origin`` is not an http(s) origin (a scheme and a
        host, with no path, query or fragment), or uses ``*`` otherwise.
    """
    try:
        url = URL(origin.strip())
        port = url.port
    except ValueError:
        url, port = URL(), None
    if (
        url.scheme not in ("http", "https")
        or not url.host
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
        or url.user is not None
    ):
        hint = f"; {_WILDCARD_HINT}" if "*" in origin else ""
        raise ValueError(
            f"Not an origin: {origin!r}; write it as scheme://host[:port], "
            f"e.g. 'https://app.example.com'{hint}"
        )
    host = url.host.lower()
    if "*" in host:
        if not wildcard:
            raise ValueError(f"Not an origin: {origin!r}; an origin has no '*'")
        domain = host[2:] if host.startswith("*.") else ""
        labels = domain.split(".")
        if "*" in domain or not all(labels) or labels[-1].isdigit():
            raise ValueError(f"Bad wildcard in {origin!r}: {_WILDCARD_HINT}")
    return (
        f"{url.scheme}://[{host}]:{port}"
        if ":" in host
        else f"{url.scheme}://{host}:{port}"
    )


def normalize_origins(origins: Iterable[str]) -> frozenset[str]:
    """Validate and normalize a collection of allowed origins.

    ``"*"`` is kept as it is; ``scheme://*.domain[:port]`` stands for every
    subdomain of ``domain``.
    """
    if isinstance(origins, str):
        raise TypeError("allowed_origins takes a collection of origins, not a str")
    return frozenset(
        o if o == ANY_ORIGIN else normalize_origin(o, wildcard=True) for o in origins
    )


def _parts(normalized: str) -> tuple[str, str, str]:
    """Split a normalized origin into its scheme, host and port."""
    scheme, _, rest = normalized.partition("://")
    host, _, port = rest.rpartition(":")
    return scheme, host, port


def _matches_wildcard(normalized: str, allowed: frozenset[str]) -> bool:
    """Whether a ``scheme://*.domain:port`` entry of ``allowed`` covers it."""
    scheme, host, port = _parts(normalized)
    for entry in allowed:
        entry_scheme, entry_host, entry_port = _parts(entry)
        if not entry_host.startswith("*.") or entry_scheme != scheme:
            continue
        if entry_port != port:
            continue
        suffix = entry_host[1:]  # ".domain"
        subdomain = host[: -len(suffix)]
        if host.endswith(suffix) and subdomain and all(subdomain.split(".")):
            return True
    return False


def _only_scheme_differs(own: str, normalized: str) -> bool:
    """Whether the origin names the request's host under another scheme."""
    own_scheme, own_host, _ = _parts(own)
    scheme, host, _ = _parts(normalized)
    return own_host == host and own_scheme != scheme


def _own_origin(request: web.Request) -> str | None:
    """The origin of the request itself: its scheme with its ``Host``."""
    try:
        url = URL.build(scheme=request.scheme, authority=request.host)
        return normalize_origin(str(url)) if url.host else None
    except ValueError:
        return None


def check_origin(request: web.Request, allowed: frozenset[str]) -> None:
    """Refuse (403) a browser's cross-site websocket upgrade unless allowed.

    No ``Origin`` header (not a browser) passes. An origin passes when it is in
    ``allowed`` (or ``"*"`` is, or a ``scheme://*.domain[:port]`` entry covers
    it), or when it is the request's own origin: ``request.scheme`` with the
    ``Host`` header (whose port defaults to that scheme's default port).
    Behind a proxy that rewrites ``Host``, or one that ends TLS (the request's
    scheme is then ``http``), list the public origin in ``allowed`` or set the
    scheme and host with a forwarded-headers middleware (aiohttp-remotes).
    """
    origin = request.headers.get("Origin")
    if origin is None or ANY_ORIGIN in allowed:
        return
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        raise web.HTTPForbidden(text="Malformed Origin header") from None
    own = _own_origin(request)
    if normalized in allowed or normalized == own:
        return
    if _matches_wildcard(normalized, allowed):
        return
    text = (
        f"Websocket origin {origin!r} is not allowed; list it in "
        "SessionWSRegistry(allowed_origins=...) to accept it"
    )
    if own is not None and _only_scheme_differs(own, normalized):
        text += (
            f" (this request came over {request.scheme}: behind a proxy that "
            "ends TLS, list the public origin or set the scheme with a "
            "forwarded-headers middleware)"
        )
    raise web.HTTPForbidden(text=text)
