"""The aiohttp face: app keys, setup, middleware, the context manager, helpers."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Hashable
from types import TracebackType
from typing import Any

import aiohttp_session
from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from .origins import check_origin
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


class session_ws:  # noqa: N801 (1.1.1 name)
    """Upgrade a request to a websocket registered under the session's ws id.

    ``async with session_ws(request, **ws_kwargs) as ws:`` gives a prepared
    :class:`~aiohttp.web.WebSocketResponse` (made with ``ws_kwargs``) that is
    registered for the life of the block. A session without an id gets one, and
    its cookie rides on the upgrade response. A request that is not a websocket
    upgrade gets a 400 and nothing is registered; while the app shuts down, a
    new upgrade gets a 503.
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
        check_origin(self.request, registry.allowed_origins)
        self.response = response = web.WebSocketResponse(**self.options)
        await registry.ensure_id(self.request)
        self.session_ws_id = session_ws_id = await registry.get_id(self.request)
        if not isinstance(session_ws_id, Hashable):
            raise TypeError(
                f"The session holds an unhashable session ws id "
                f"({type(session_ws_id).__name__}); ids must be str or int"
            )

        # aiohttp-session saves only plain responses; save onto the upgrade.
        session = await aiohttp_session.get_session(self.request)
        if session._changed:
            storage = self.request[aiohttp_session.STORAGE_KEY]
            await storage.save_session(self.request, response, session)

        if registry.shutting_down:
            raise web.HTTPServiceUnavailable(text="Server shutting down")
        await response.prepare(self.request)
        registry.register(session_ws_id, response)
        if self.registry.shutting_down:  # it began while the upgrade was sent
            await response.close(
                code=WSCloseCode.GOING_AWAY, message=b"Server shutdown"
            )
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
    await app[REGISTRY_APP_KEY].shutdown()


def setup(app: web.Application, registry: SessionWSRegistry) -> None:
    """Put ``registry`` on ``app`` and tie it to the app's life.

    On startup the registry's backend starts; on shutdown new websockets are
    refused and every open one is closed with ``GOING_AWAY``; on cleanup pending
    closes finish and the backend stops. The registry is stored under
    :data:`REGISTRY_APP_KEY` and, for code written for 1.1.1, under the string
    :data:`REGISTRY_KEY`.
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
