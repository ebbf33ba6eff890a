"""Origin checks for websocket upgrades (cross-site websocket hijacking)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from yarl import URL

ANY_ORIGIN = "*"
"""In ``allowed_origins``: accept an upgrade from every origin."""


def normalize_origin(origin: str) -> str:
    """Return ``scheme://host:port`` for an origin, default port filled in.

    :raises ValueError: ``origin`` is not an http(s) origin (a scheme and a
        host, with no path, query or fragment).
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
        raise ValueError(
            f"Not an origin: {origin!r}; write it as scheme://host[:port], "
            "e.g. 'https://app.example.com'"
        )
    host = url.host.lower()
    return (
        f"{url.scheme}://[{host}]:{port}"
        if ":" in host
        else f"{url.scheme}://{host}:{port}"
    )


def normalize_origins(origins: Iterable[str]) -> frozenset[str]:
    """Validate and normalize a collection of allowed origins (``"*"`` kept)."""
    if isinstance(origins, str):
        raise TypeError("allowed_origins takes a collection of origins, not a str")
    return frozenset(o if o == ANY_ORIGIN else normalize_origin(o) for o in origins)


def check_origin(request: web.Request, allowed: frozenset[str]) -> None:
    """Refuse (403) a browser's cross-site websocket upgrade unless allowed.

    No ``Origin`` header (not a browser) passes. An origin passes when it is in
    ``allowed`` (or ``"*"`` is), or when its host and port are the request's
    ``Host`` (whose port defaults to the origin scheme's default port). Behind a
    proxy that rewrites ``Host``, list the public origin in ``allowed``.
    """
    origin = request.headers.get("Origin")
    if origin is None or ANY_ORIGIN in allowed:
        return
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        raise web.HTTPForbidden(text="Malformed Origin header") from None
    if normalized in allowed:
        return
    scheme = normalized.split(":", 1)[0]
    try:
        host = URL.build(scheme=scheme, authority=request.host)
        same = host.host is not None and normalized == normalize_origin(str(host))
    except ValueError:
        same = False
    if not same:
        raise web.HTTPForbidden(
            text=f"Websocket origin {origin!r} is not allowed; list it in "
            "SessionWSRegistry(allowed_origins=...) to accept it"
        )
