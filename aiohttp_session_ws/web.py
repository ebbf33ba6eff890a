"""The aiohttp face: app keys, setup, middleware, the context manager, helpers."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Hashable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp_session
from aiohttp import web
from aiohttp.typedefs import Handler

from .registry import SessionWSRegistry

REGISTRY_KEY = "aiohttp_session_ws_registry"
"""The 1.1.1 string key: ``app[REGISTRY_KEY]`` still reads the registry."""

REGISTRY_APP_KEY: web.AppKey[SessionWSRegistry] = web.AppKey(
    REGISTRY_KEY, SessionWSRegistry
)
"""The typed key of the registry: ``app[REGISTRY_APP_KEY]``."""


def get_registry(request: web.Request) -> SessionWSRegistry:
    """Return the registry that :func:`setup` put on the request's application."""
    config = request.config_dict
    registry = config.get(REGISTRY_APP_KEY)
    if registry is None:
        registry = config.get(REGISTRY_KEY)  # set by hand, as 1.1.1 allowed
    if not isinstance(registry, SessionWSRegistry):
        raise RuntimeError(
            "No SessionWSRegistry on this application: call "
            "aiohttp_session_ws.setup(app, SessionWSRegistry()) when you build it"
        )
    return registry


async def get_session_ws_id(request: web.Request) -> Any:
    """Return the session ws id of the request's session, or ``None``."""
    return await get_registry(request).get_id(request)


async def new_session_ws_id(request: web.Request) -> None:
    """Give the request's session a new session ws id."""
    await get_registry(request).new_id(request)


async def delete_session_ws_id(request: web.Request) -> None:
    """Remove the session ws id from the request's session."""
    await get_registry(request).delete_id(request)


async def ensure_session_ws_id(request: web.Request) -> None:
    """Give the request's session a session ws id if it has none."""
    await get_registry(request).ensure_id(request)


async def schedule_close_all_session_ws(
    request: web.Request, response: web.StreamResponse
) -> None:
    """Close every websocket of the request's session once ``response`` is sent.

    Call it on logout with the response you return (or raise, such as an
    :class:`~aiohttp.web.HTTPFound`); it turns off that response's keep-alive.
    """
    await get_registry(request).schedule_close_all_session(request, response)


@web.middleware
async def session_ws_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Give every session a session ws id before the handler runs.

    Install it after (inside) aiohttp-session's ``session_middleware``.
    """
    await ensure_session_ws_id(request)
    return await handler(request)


def check_origin(request: web.Request, registry: SessionWSRegistry) -> None:
    """Refuse a cross-site websocket upgrade (403) unless its origin is allowed.

    A request without an ``Origin`` header (not from a browser) passes; a browser
    request passes when its origin's host is the request's host, or the origin
    is in ``registry.allowed_origins``.
    """
    origin = request.headers.get("Origin")
    if origin is None or "*" in registry.allowed_origins:
        return
    normalized = origin.rstrip("/").lower()
    if normalized in registry.allowed_origins:
        return
    if urlsplit(normalized).netloc == request.host.lower():
        return
    raise web.HTTPForbidden(
        text=f"Websocket origin {origin!r} is not allowed; list it in "
        "SessionWSRegistry(allowed_origins=...) to accept it"
    )


class session_ws:  # noqa: N801 (1.1.1 name)
    """Upgrade a request to a websocket registered under the session's ws id.

    ``async with session_ws(request, **ws_kwargs) as ws:`` gives a prepared
    :class:`~aiohttp.web.WebSocketResponse` (made with ``ws_kwargs``) that is
    registered for the life of the block. A session without an id gets one, and
    its cookie rides on the upgrade response. A request that is not a websocket
    upgrade gets a 400 and nothing is registered.
    """

    def __init__(self, request: web.Request, **ws_kwargs: Any) -> None:
        self.request = request
        self.options = ws_kwargs
        self.response: web.WebSocketResponse | None = None
        self.session_ws_id: Hashable = None

    @property
    def registry(self) -> SessionWSRegistry:
        """The registry of the request's application."""
        return get_registry(self.request)

    async def __aenter__(self) -> web.WebSocketResponse:
        registry = self.registry
        check_origin(self.request, registry)
        self.response = response = web.WebSocketResponse(**self.options)
        await registry.ensure_id(self.request)
        self.session_ws_id = await registry.get_id(self.request)

        # aiohttp-session saves only plain responses; save onto the upgrade.
        session = await aiohttp_session.get_session(self.request)
        if session._changed:
            storage = self.request[aiohttp_session.STORAGE_KEY]
            await storage.save_session(self.request, response, session)

        await response.prepare(self.request)
        registry.register(self.session_ws_id, response)
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.response is not None
        self.registry.unregister(self.session_ws_id, self.response)


async def _registry_lifecycle(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY_APP_KEY]
    await registry.start()
    yield
    await registry.stop()


async def _close_on_shutdown(app: web.Application) -> None:
    await app[REGISTRY_APP_KEY].close_all()


def setup(app: web.Application, registry: SessionWSRegistry) -> None:
    """Put ``registry`` on ``app`` and tie it to the app's life.

    On startup the registry's backend starts; on shutdown every websocket is
    closed with ``GOING_AWAY``; on cleanup pending closes finish and the backend
    stops. The registry is stored under :data:`REGISTRY_APP_KEY` and, for code
    written for 1.1.1, under the string :data:`REGISTRY_KEY`.
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"setup() takes an aiohttp.web.Application, not {app!r}")
    if not isinstance(registry, SessionWSRegistry):
        raise TypeError(
            f"setup() takes a SessionWSRegistry, not {type(registry).__name__}: "
            "call setup(app, SessionWSRegistry())"
        )
    if REGISTRY_APP_KEY in app:
        raise RuntimeError("aiohttp_session_ws.setup() was already called for this app")
    app[REGISTRY_APP_KEY] = registry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app[REGISTRY_KEY] = registry
    app.on_shutdown.append(_close_on_shutdown)
    app.cleanup_ctx.append(_registry_lifecycle)


setup_session_ws = setup
