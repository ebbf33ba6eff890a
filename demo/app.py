"""The demo application: a page, its websockets, /login, /push, /reset and /logout.

What users do (logins, pushes, messaging requests, edit locks) and sessions
coming and going are events of the event bus: the page's activity feed
subscribes to them (see :doc:`/demo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import Any

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from yarl import URL

from aiohttp_session_ws import (
    Action,
    BackendUnavailableError,
    Op,
    Peer,
    Request,
    SessionWSRegistry,
    add_browser_client,
    get_registry,
    get_session_ws_id,
    new_session_ws_id,
    schedule_close_all_session_ws,
    serve_protocol,
    session_ws,
    session_ws_middleware,
    session_ws_protocol,
    setup_session_ws,
)
from aiohttp_session_ws.authorization import (
    ACQUIRE_LOCK,
    REGISTER_EVENT,
    REGISTER_HANDLER,
    SEND_TO_PATH,
    SEND_TO_SESSION,
    SUBSCRIBE_EVENTS,
    VIEW_SESSION,
)
from aiohttp_session_ws.events import EventPayloadJson, RegisterEvent, parse_event_type
from aiohttp_session_ws.protocol import Arg, ErrorCode, ProtocolError

from .page import render_page
from .users import USER_KEY, USERS

logger = logging.getLogger("demo")

COOKIE_NAME = "AIOHTTP_SESSION_WS_DEMO"
"""The name of the session cookie."""

TICK_INTERVAL_KEY: web.AppKey[float] = web.AppKey("demo_tick_interval", float)
"""Seconds between two ticks on a websocket."""

BACKEND_KEY: web.AppKey[str] = web.AppKey("demo_backend", str)
"""What the page says about the backend: memory, or which Redis."""

CLIENT_PREFIX = "/session-ws"
"""Where the browser client is served: the page imports ``session-ws.js`` there."""

MAX_PUSH_TEXT = 500
"""Characters of one text that ``/push`` sends at most."""

MESSAGING_PERMISSIONS = frozenset(
    {REGISTER_HANDLER, SEND_TO_PATH, SEND_TO_SESSION, VIEW_SESSION}
)
"""What a logged-in user may do beyond their own session: messaging, and
reading a sender's properties with the requests they handle (or a lock
holder's)."""

LOCK_PREFIX = "docs/"
"""The session locks a logged-in user may take and look at: the page's
documents (:data:`~demo.page.DOCUMENTS`) are below it."""


FEED_TYPES = ("demo/*", "session_ws/session/*")
"""What the activity feed subscribes to: the demo's events, and the sessions
starting and ending (the registry's ``session_events``)."""

SUBSCRIBE_PREFIXES = ("demo/", "session_ws/session/")
"""The event types (and query types) a logged-in user may subscribe to and query."""

CHAT_PREFIX = "demo/chat/"
"""The event types a logged-in user may register from the page: what they say
in the feed. The other ``demo/`` events come from the demo's server code."""


def make_registry(redis_url: str | None = None) -> SessionWSRegistry:
    """Build the app's registry: in memory, or a node of a Redis cluster.

    Either way with the demo's login in each connection's properties, its
    policy for messaging, locks and events, and an event when a session
    starts or ends (``session_events``).
    """
    if redis_url is None:
        return SessionWSRegistry(
            properties_factory=connection_properties,
            authorize=authorize,
            session_events=True,
        )
    from aiohttp_session_ws import RedisSessionWSRegistry

    return RedisSessionWSRegistry(
        redis_url,
        properties_factory=connection_properties,
        authorize=authorize,
        session_events=True,
    )


async def logged_in_user(request: web.Request) -> str | None:
    """The name of the user the request's session is logged in as, if any."""
    session = await aiohttp_session.get_session(request)
    name = session.get(USER_KEY)
    return name if isinstance(name, str) and name in USERS else None


async def connection_properties(request: web.Request) -> dict[str, object]:
    """``$Principal`` and ``$Roles`` of the logged-in user; nothing for anonymous."""
    name = await logged_in_user(request)
    if name is None:
        return {}
    return {"$Principal": name, "$Roles": USERS[name]}


async def authorize(request: web.Request, action: Action) -> bool:
    """Logged-in users do messaging, locks below ``docs/``, and the feed.

    They may take the locks below ``docs/``, follow the activity feed and
    say something in it. That is: subscribe to (and query) the events
    below ``demo/`` and ``session_ws/session/``, and register those below
    ``demo/chat/``.
    Anonymous users may do nothing beyond their session. ``request`` is the
    websocket's upgrade request: the login of the moment the connection
    opened, as in its ``$Principal``.
    """
    event_type = action.event_type or ""
    if action.permission == ACQUIRE_LOCK:
        if not (action.lock or "").startswith(LOCK_PREFIX):
            return False
    elif action.permission == SUBSCRIBE_EVENTS:
        if not event_type.startswith(SUBSCRIBE_PREFIXES):
            return False
    elif action.permission == REGISTER_EVENT:
        if not event_type.startswith(CHAT_PREFIX):
            return False
    elif action.permission not in MESSAGING_PERMISSIONS:
        return False
    return await logged_in_user(request) is not None


def describe_backend(redis_url: str | None = None) -> str:
    """Name the backend for the page; a Redis URL loses its credentials."""
    if redis_url is None:
        return "memory (this process only)"
    address = redis_url.partition("?")[0]  # the query may hold a password
    url = URL(address)
    return f"Redis at {url.with_user(None) if url.host else address}"


def make_app(
    secret_key: bytes, *, tick_interval: float = 1.0, redis_url: str | None = None
) -> web.Application:
    """Build the demo app.

    :param secret_key: the 32-byte key that encrypts the session cookie; apps
        with the same key share sessions.
    :param tick_interval: seconds between two ticks on a websocket.
    :param redis_url: run as a node of the cluster on this Redis; apps with the
        same key and Redis share sessions and their websockets.
    :raises ValueError: the key is not 32 bytes, or the interval is not positive.
    """
    if not tick_interval > 0:
        raise ValueError(f"tick_interval must be positive, not {tick_interval!r}")
    storage = EncryptedCookieStorage(
        secret_key, cookie_name=COOKIE_NAME, samesite="Lax"
    )
    app = web.Application(
        middlewares=[aiohttp_session.session_middleware(storage), session_ws_middleware]
    )
    registry = make_registry(redis_url)
    registry.ops.add(connections_op(registry))
    registry.ops.add(activity_op(registry))
    setup_session_ws(app, registry)
    add_browser_client(app, CLIENT_PREFIX)
    app[TICK_INTERVAL_KEY] = tick_interval
    app[BACKEND_KEY] = describe_backend(redis_url)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/live", live),
            web.post("/push", push),
            web.get("/ws", websocket),
            web.get("/reset", reset),
            web.post("/reset", reset),
            web.post("/login", login),
            web.get("/logout", logout),
            web.post("/logout", logout),
        ]
    )
    return app


async def index(request: web.Request) -> web.Response:
    """Serve the page, naming the node and the backend that serve it."""
    page = render_page(
        node=node_address(request),
        backend=request.app[BACKEND_KEY],
        client=f"{CLIENT_PREFIX}/session-ws.js",
    )
    return web.Response(text=page, content_type="text/html")


def node_address(request: web.Request) -> str:
    """The ``host:port`` this node listens on, as the request reached it."""
    transport = request.transport
    sockname = None if transport is None else transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple):  # a Unix socket, or a closed transport
        return request.host
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def live(request: web.Request) -> web.WebSocketResponse:
    """Serve the protocol to the page, and tell the session's tabs how many there are.

    Like :func:`~aiohttp_session_ws.session_ws_endpoint`, with a push of
    ``{"kind": "connections", "count": n}`` to the session once the
    websocket is registered and once it has closed; the new tab itself asks
    with the ``connections`` op, as pushes reach it only after its hello.
    A logged-in session gets the user property ``user`` (its user's name),
    which other sessions can read (``properties`` with their handle): the
    page names who holds a document's edit lock.
    """
    registry = get_registry(request)
    context = session_ws_protocol(request)
    async with context as ws:
        session_ws_id = context.session_ws_id
        await show_user(registry, session_ws_id, await logged_in_user(request))
        await push_count(registry, session_ws_id)
        await serve_protocol(request, ws)
    await push_count(registry, session_ws_id)
    return ws


USER_PROPERTY = "user"
"""The user property of a logged-in session: the user's name, for the others."""


async def show_user(
    registry: SessionWSRegistry, session_ws_id: Hashable, name: str | None
) -> None:
    """Set the session's ``user`` property, for other sessions to read."""
    if name is None:
        return
    # while Redis is down, the page names the holder by its handle alone
    with contextlib.suppress(BackendUnavailableError):
        await registry.set_session_properties(session_ws_id, {USER_PROPERTY: name})


async def push_count(registry: SessionWSRegistry, session_ws_id: Hashable) -> None:
    """Tell the session's protocol connections how many websockets it has open."""
    count = await count_connections(registry, session_ws_id)
    await registry.send_to_session(
        session_ws_id, {"kind": "connections", "count": count}
    )


def connections_op(registry: SessionWSRegistry) -> Op[Peer]:
    """The demo's op ``connections``: ``{"count": n}`` for the request's session.

    ``n`` counts the session's websockets on every node.
    """

    async def answer(connection: Peer, request: Request) -> dict[str, int]:
        return {"count": await count_connections(registry, connection.session_ws_id)}

    return Op("connections", answer)


async def push(request: web.Request) -> web.Response:
    """Send the form field ``text`` to every tab of the session, on every node."""
    form = await request.post()
    text = form.get("text")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text="Nothing to push: give the form field text.\n")
    if len(text) > MAX_PUSH_TEXT:
        raise web.HTTPBadRequest(
            text=f"Too long: at most {MAX_PUSH_TEXT} characters, not {len(text)}.\n"
        )
    session_ws_id = await get_session_ws_id(request)
    registry = get_registry(request)
    reached = await registry.send_to_session(
        session_ws_id, {"kind": "text", "text": text}
    )
    # the feed tells that the user pushed, not what: that stays in the session
    await record(
        registry, "push", {"user": await logged_in_user(request), "reached": reached}
    )
    plural = "" if reached == 1 else "s"
    return web.Response(text=f"Pushed to {reached} connection{plural}.\n")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Open a websocket of the session; send its id, then a tick every interval.

    The first frame is ``{"session": id, "connections": n}``, each later one
    ``{"tick": k, "connections": n}``, where ``n`` counts the session's open
    websockets on every node (on this node alone while Redis is down). What
    the client sends is ignored.
    """
    context = session_ws(request)
    async with context as ws:
        feed = asyncio.create_task(
            send_frames(
                ws,
                get_registry(request),
                context.session_ws_id,
                request.app[TICK_INTERVAL_KEY],
            )
        )
        try:
            async for _message in ws:
                pass  # reading is what notices the close
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
    return ws


async def send_frames(
    ws: web.WebSocketResponse,
    registry: SessionWSRegistry,
    session_ws_id: Hashable,
    interval: float,
) -> None:
    """Send the first frame, then a tick every ``interval`` s until ``ws`` closes."""
    try:
        count = await count_connections(registry, session_ws_id)
        await ws.send_json({"session": str(session_ws_id), "connections": count})
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            count = await count_connections(registry, session_ws_id)
            await ws.send_json({"tick": tick, "connections": count})
    except ConnectionResetError:
        return  # the socket closed while a frame was on its way


async def count_connections(
    registry: SessionWSRegistry, session_ws_id: Hashable
) -> int:
    """The session's websockets on every node; this node's while Redis is down."""
    try:
        return await registry.count_connections(session_ws_id)
    except BackendUnavailableError:
        return len(registry.get(session_ws_id, ()))


async def closing_text(request: web.Request, whose: str) -> str:
    """Say how many websockets of the request's session are about to close.

    The close itself runs after the response has gone out, so this counts
    beforehand; ``whose`` names the session in the sentence.
    """
    registry = get_registry(request)
    session_ws_id = await get_session_ws_id(request)
    count, where = 0, ""
    if session_ws_id is not None:  # the middleware gave every session an id
        try:
            count = await registry.count_connections(session_ws_id)
        except BackendUnavailableError:
            count = len(registry.get(session_ws_id, ()))
            where = (
                " on this node (Redis is down: the other nodes follow once it is back)"
            )
    if count == 0:
        return f"{whose.capitalize()} had no open websocket{where}."
    plural = "" if count == 1 else "s"
    return f"Closing {count} websocket{plural} of {whose}{where}."


async def reset(request: web.Request) -> web.Response:
    """Give the session a new ws id, and close the websockets of the old one."""
    text = await closing_text(request, "the old id")
    user = await logged_in_user(request)
    await record(get_registry(request), "reset", {"user": user})
    response = web.Response(text=f"New session ws id. {text}\n")
    await schedule_close_all_session_ws(request, response)  # reads the old id
    await new_session_ws_id(request)
    return response


async def login(request: web.Request) -> web.Response:
    """Log the session in as the form field ``user``, one of :data:`USERS`.

    The login gets a new session ws id, and the websockets opened before it
    close once the answer has gone out (see :doc:`/security`): those that
    reconnect carry the user's ``$Principal`` and ``$Roles``.
    """
    form = await request.post()
    name = form.get("user")
    if not isinstance(name, str) or name not in USERS:
        names = ", ".join(USERS)
        raise web.HTTPBadRequest(
            text=f"Unknown user: give the form field user, one of {names}.\n"
        )
    text = await closing_text(request, "the session before the login")
    roles = ", ".join(USERS[name])
    response = web.Response(text=f"Logged in as {name} (roles {roles}). {text}\n")
    await schedule_close_all_session_ws(request, response)  # reads the old id
    await new_session_ws_id(request)
    session = await aiohttp_session.get_session(request)
    session[USER_KEY] = name
    await record(get_registry(request), "login", {"user": name})
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session, and close its websockets; the next request starts anew."""
    text = await closing_text(request, "this session")
    user = await logged_in_user(request)
    await record(get_registry(request), "logout", {"user": user})
    response = web.Response(text=f"Logged out. {text}\n")
    await schedule_close_all_session_ws(request, response)  # reads the old id
    session = await aiohttp_session.get_session(request)
    session.invalidate()
    return response


# the activity feed: the demo's own actions as events


async def record(registry: SessionWSRegistry, what: str, data: dict[str, Any]) -> None:
    """Register the event ``demo/<what>`` with ``data`` as its JSON payload.

    The feed is a side show: when the event log cannot be reached (Redis is
    down), the action goes on without its event.
    """
    event = RegisterEvent(
        parse_event_type(f"demo/{what}"), payload=EventPayloadJson(data)
    )
    try:
        await registry.events.register([event])
    except Exception as exc:  # EventsUnavailableError, mostly
        logger.warning("Could not register the event demo/%s: %s", what, exc)


ACTIVITIES = ("lock", "unlock", "request")
"""What the page tells with the op ``activity``."""

REQUEST_KINDS = ("path", "session", "filter")
"""Where a messaging request went: to a path's handler, a session, a filter."""


def activity_op(registry: SessionWSRegistry) -> Op[Peer]:
    """The demo's op ``activity``: the page tells what its user did.

    ``{"what": "lock", "name": n}`` once it holds the edit lock ``n`` (the
    server checks that it does: ``demo/lock/granted`` with its fencing
    token), ``{"what": "unlock", "name": n}`` once it released it
    (``demo/lock/released``, when the session no longer holds it), and
    ``{"what": "request", "to": "path"|"session"|"filter", "path": p}``
    after it sent a messaging request (``demo/messaging/request``; not what
    it sent). The user is the connection's ``$Principal``, never the page's
    word; anonymous connections are refused (``forbidden``).
    """

    async def answer(connection: Peer, request: Request) -> dict[str, bool]:
        user = connection.connection_properties().get("$Principal")
        if not user:
            raise ProtocolError(ErrorCode.FORBIDDEN, "log in to be in the feed")
        args = request.args
        what = args["what"]
        if what not in ACTIVITIES:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"what is one of {ACTIVITIES}")
        if what == "request":
            to, path = args.get("to"), args.get("path")
            if to not in REQUEST_KINDS or not isinstance(path, str) or len(path) > 200:
                raise ProtocolError(
                    ErrorCode.BAD_FRAME, "a request activity has 'to' and 'path'"
                )
            await record(
                registry, "messaging/request", {"user": user, "to": to, "path": path}
            )
            return {"recorded": True}
        name = args.get("name")
        if not isinstance(name, str) or not name.startswith(LOCK_PREFIX):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"name is below {LOCK_PREFIX}")
        held = registry.locks.held_by(connection.session_ws_id, name)
        if what == "lock":
            if held is None:
                return {"recorded": False}  # not (or no longer) its lock
            data = {"user": user, "name": name, "sequence": held.sequence}
            await record(registry, "lock/granted", data)
        else:
            if held is not None:
                return {"recorded": False}  # it holds it still
            await record(registry, "lock/released", {"user": user, "name": name})
        return {"recorded": True}

    return Op(
        "activity",
        answer,
        {
            "what": Arg("str", required=True),
            "name": Arg("str"),
            "to": Arg("str"),
            "path": Arg("str"),
        },
    )
