"""Serve the browser client, ``session-ws.js`` and its types, from the package.

See :doc:`/client-browser`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = [
    "BROWSER_CLIENT_FILES",
    "CACHE_CONTROL",
    "DEFAULT_PREFIX",
    "add_browser_client",
]

DEFAULT_PREFIX = "/session-ws"
"""Where :func:`add_browser_client` serves the files unless told otherwise."""

BROWSER_CLIENT_FILES = {
    "session-ws.js": "text/javascript",
    "session-ws.d.ts": "application/typescript",
}
"""The files served, in the package's ``static`` folder, and their media types."""

CACHE_CONTROL = "no-cache"
"""Browsers keep the files but ask each time: an upgrade of the package shows
at once, and an unchanged file costs a 304 (the ``ETag`` is its hash)."""

_PREFIX = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
"""A path of plain characters: no ``{}`` of aiohttp's dynamic routes, no query."""


def add_browser_client(app: web.Application, prefix: str = DEFAULT_PREFIX) -> None:
    """Serve the browser client at ``{prefix}/session-ws.js`` (and ``.d.ts``).

    A page then imports it with
    ``import { connect } from "/session-ws/session-ws.js"``. The files are read
    from the installed package once, here.

    :param prefix: the path the files sit under: it starts with ``/`` and
        does not end with one.
    :raises ValueError: the prefix is not such a path.
    """
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"prefix must be a path that starts with '/', such as {DEFAULT_PREFIX!r}, "
            f"not {prefix!r}"
        )
    if prefix.endswith("/") or "//" in prefix:
        raise ValueError(
            f"prefix must not end with '/' nor hold '//', not {prefix!r}: "
            f"the files are served at prefix + '/session-ws.js'"
        )
    static = importlib.resources.files("aiohttp_session_ws") / "static"
    for name, media_type in BROWSER_CLIENT_FILES.items():
        body = (static / name).read_bytes()
        headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        if name.endswith(".js"):  # for Deno and the editors that follow it
            headers["X-TypeScript-Types"] = f"{prefix}/session-ws.d.ts"
        app.router.add_get(f"{prefix}/{name}", _file_handler(body, media_type, headers))


def _file_handler(body: bytes, media_type: str, headers: dict[str, str]) -> Handler:
    """A handler of GET (and HEAD) with one file's bytes, or 304 when unchanged."""
    etag = hashlib.sha256(body).hexdigest()[:32]

    async def serve(request: web.Request) -> web.StreamResponse:
        tags = request.if_none_match
        if tags is not None and any(tag.value in (etag, "*") for tag in tags):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(
                body=body, content_type=media_type, charset="utf-8", headers=headers
            )
        response.etag = etag
        return response

    return serve
