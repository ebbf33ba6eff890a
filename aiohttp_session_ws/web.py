"""The aiohttp face: app keys, setup, middleware, the context manager, helpers."""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Hashable, Mapping
from types import TracebackType
from typing import Any

import aiohttp_session
from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from .ids import check_session_ws_id
from .origins import check_origin
from .registry import SessionWSRegistry

logger = logging.getLogger("aiohttp_session_ws")

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


async def new_session_ws_id(request: web.Request) -> Any:
    """Give the request's session a new session ws id.

    Returns what the registry's :meth:`~SessionWSRegistry.new_id` returns
    (``None``, unless a subclass returns something).
    """
    return await get_registry(request).new_id(request)


async def delete_session_ws_id(request: web.Request) -> Any:
    """Remove the session ws id from the request's session.

    Returns what the registry's :meth:`~SessionWSRegistry.delete_id` returns.
    """
    return await get_registry(request).delete_id(request)


async def ensure_session_ws_id(request: web.Request) -> Any:
    """Give the request's session a session ws id if it has none.

    Returns what the registry's :meth:`~SessionWSRegistry.ensure_id` returns.
    """
    return await get_registry(request).ensure_id(request)


async def schedule_close_all_session_ws(
    request: web.Request, response: web.StreamResponse
) -> Any:
    """Close every websocket of the request's session once ``response`` is sent.

    Call it on logout with the response you return (or raise, such as an
    :class:`~aiohttp.web.HTTPFound`); it turns off that response's keep-alive.
    Returns what the registry's
    :meth:`~SessionWSRegistry.schedule_close_all_session` returns.
    """
    return await get_registry(request).schedule_close_all_session(request, response)


SESSION_MIDDLEWARE_MISSING = (
    "aiohttp-session's middleware has not run for this request, and "
    "aiohttp_session_ws keeps its ids in the session: put "
    "aiohttp_session.session_middleware(storage) first, before "
    "session_ws_middleware, as in web.Application(middlewares=["
    "aiohttp_session.session_middleware(storage), session_ws_middleware])"
)
"""The error of a request that reaches us without aiohttp-session's middleware."""


def _session_middleware_ran(request: web.Request) -> bool:
    return request.get(aiohttp_session.STORAGE_KEY) is not None


@web.middleware
async def session_ws_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Give every session a session ws id before the handler runs.

    Install it after (inside) aiohttp-session's ``session_middleware``:
    ``middlewares=[aiohttp_session.session_middleware(storage),
    session_ws_middleware]``.

    :raises RuntimeError: :func:`setup` was not called, or aiohttp-session's
        middleware has not run before this one (the message says what to
        change).
    """
    registry = get_registry(request)
    try:
        await registry.ensure_id(request)
    except RuntimeError as exc:
        if _session_middleware_ran(request):
            raise
        raise RuntimeError(SESSION_MIDDLEWARE_MISSING) from exc
    return await handler(request)


class session_ws:  # noqa: N801 (1.1.1 name)
    """Upgrade a request to a websocket registered under the session's ws id.

    ``async with session_ws(request, **ws_kwargs) as ws:`` gives a prepared
    :class:`~aiohttp.web.WebSocketResponse` (made with ``ws_kwargs``) that is
    registered for the life of the block. A session without an id gets one, and
    its cookie rides on the upgrade response.

    An upgrade is refused, with nothing registered and nothing in the session
    changed, when its ``Origin`` is not allowed (403), when the request is not
    a websocket upgrade (400), or while the app shuts down (503). So a refused
    upgrade sets no session cookie, unless something else changed the session
    on this request: :func:`session_ws_middleware` gives every new session an
    id before the handler runs, and that id's cookie then rides on any
    response, a refusal too. An upgrade that goes ahead as shutdown begins is
    closed at once with ``GOING_AWAY``.

    :raises RuntimeError: :func:`setup` was not called, or aiohttp-session's
        middleware has not run for this request.
    """

    # one per open websocket, for its whole life: no __dict__
    __slots__ = ("options", "request", "response", "session_ws_id")

    def __init__(self, request: web.Request, **ws_kwargs: Any) -> None:
        self.request = request
        self.options: Mapping[str, Any] = ws_kwargs
        """The keyword arguments of the websocket."""
        self.response: web.WebSocketResponse | None = None
        self.session_ws_id: Hashable = None

    @property
    def registry(self) -> SessionWSRegistry:
        """The registry of the request's application."""
        return get_registry(self.request)

    async def __aenter__(self) -> web.WebSocketResponse:
        request, registry = self.request, self.registry
        if not _session_middleware_ran(request):
            raise RuntimeError(SESSION_MIDDLEWARE_MISSING)
        # Every refusal comes before the session changes, so that it sets no
        # cookie (aiohttp-session saves a changed session onto an HTTPException).
        check_origin(request, registry.allowed_origins)
        self.response = response = web.WebSocketResponse(**self.options)
        if not response.can_prepare(request).ok:
            raise web.HTTPBadRequest(
                text="Expected a websocket upgrade: this URL takes a GET with "
                "Connection: Upgrade, Upgrade: websocket and valid "
                "Sec-WebSocket-Key and Sec-WebSocket-Version headers"
            )
        if registry.shutting_down:
            raise web.HTTPServiceUnavailable(text="Server shutting down")

        await registry.ensure_id(request)
        self.session_ws_id = session_ws_id = await registry.get_id(request)
        try:
            check_session_ws_id(session_ws_id, source="the session's session ws id")
        except (TypeError, ValueError) as exc:
            # a cookie the client controls, or an id_factory of the app's
            logger.warning("Refused a websocket upgrade: %s", exc)
            raise web.HTTPBadRequest(
                text="This session holds an invalid session ws id; start a new "
                "session (log in again)"
            ) from None

        # aiohttp-session saves only plain responses; save onto the upgrade.
        session = await aiohttp_session.get_session(request)
        if session._changed:
            storage = request[aiohttp_session.STORAGE_KEY]
            await storage.save_session(request, response, session)

        await response.prepare(request)
        registry.register(session_ws_id, response)
        if self.registry.shutting_down:  # it began since the checks
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


def _is_session_middleware(middleware: object) -> bool:
    """Whether ``middleware`` is aiohttp-session's.

    That is the closure ``aiohttp_session.session_middleware(storage)``
    returns (and ``aiohttp_session.setup()`` appends), named
    ``session_middleware.<locals>.factory`` in module ``aiohttp_session``.
    """
    module = getattr(middleware, "__module__", None) or ""
    qualname = getattr(middleware, "__qualname__", None) or ""
    return module.split(".")[0] == "aiohttp_session" and qualname.startswith(
        "session_middleware."
    )


MIDDLEWARE_ORDER_WRONG = (
    "session_ws_middleware comes before aiohttp-session's middleware, so it "
    "runs before the session exists: put session_ws_middleware after "
    "aiohttp_session.session_middleware(...) in middlewares=[...] "
    "(aiohttp_session.setup(app, storage) appends its middleware to those "
    "already listed)"
)

SESSION_MIDDLEWARE_ABSENT = (
    "session_ws_middleware is installed without aiohttp-session's middleware: "
    "add aiohttp_session.session_middleware(storage) before it, as in "
    "web.Application(middlewares=[aiohttp_session.session_middleware(storage), "
    "session_ws_middleware])"
)


def _check_middlewares(app: web.Application, above: int | None) -> None:
    """Raise at startup on a middleware order that cannot work.

    ``above`` counts the middlewares of the applications above ``app`` (None:
    unknown). Only what is certain fails: session_ws_middleware listed before
    aiohttp-session's middleware in one list, or listed with no middleware at
    all before it in an application whose parents are known. Anything else
    (a middleware of its own that provides sessions) is left to the first
    request, which says what to change if the session is missing.
    """
    middlewares = list(app.middlewares)
    for index, middleware in enumerate(middlewares):
        if middleware is not session_ws_middleware:
            continue
        earlier, later = middlewares[:index], middlewares[index + 1 :]
        if any(map(_is_session_middleware, later)) and not any(
            map(_is_session_middleware, earlier)
        ):
            raise RuntimeError(f"{MIDDLEWARE_ORDER_WRONG} (in {app!r})")
        if above == 0 and not earlier:
            raise RuntimeError(f"{SESSION_MIDDLEWARE_ABSENT} (in {app!r})")
    for resource in app.router.resources():
        subapp = resource.get_info().get("app")
        if subapp is not None:
            _check_middlewares(
                subapp, None if above is None else above + len(middlewares)
            )


async def _registry_lifecycle(app: web.Application) -> AsyncIterator[None]:
    # A sub-application is pre-frozen when it is added to its parent, before
    # any startup; the application a runner starts is frozen after startup.
    # So an application not yet pre-frozen here has no parent.
    _check_middlewares(app, None if app.pre_frozen else 0)
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

    At startup, before the backend starts, the order of the middlewares is
    checked where it is certain to fail: :func:`session_ws_middleware` listed
    before aiohttp-session's middleware (in ``app`` or a sub-application), or
    listed first in an application that is not itself a sub-application,
    raise a :exc:`RuntimeError` that says what to change. A missing session
    middleware that startup cannot see fails the first request with such an
    error instead.
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
