"""The demo application: a page, its websocket, and the /reset and /logout routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable

import aiohttp_session
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from yarl import URL

from aiohttp_session_ws import (
    BackendUnavailableError,
    SessionWSRegistry,
    get_registry,
    get_session_ws_id,
    new_session_ws_id,
    schedule_close_all_session_ws,
    session_ws,
    session_ws_middleware,
    setup_session_ws,
)

from .page import render_page

COOKIE_NAME = "AIOHTTP_SESSION_WS_DEMO"
"""The name of the session cookie."""

TICK_INTERVAL_KEY: web.AppKey[float] = web.AppKey("demo_tick_interval", float)
"""Seconds between two ticks on a websocket."""

BACKEND_KEY: web.AppKey[str] = web.AppKey("demo_backend", str)
"""What the page says about the backend: memory, or which Redis."""


def make_registry(redis_url: str | None = None) -> SessionWSRegistry:
    """Build the app's registry: in memory, or a node of a Redis cluster."""
    if redis_url is None:
        return SessionWSRegistry()
    from aiohttp_session_ws import RedisSessionWSRegistry

    return RedisSessionWSRegistry(redis_url)


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
    setup_session_ws(app, make_registry(redis_url))
    app[TICK_INTERVAL_KEY] = tick_interval
    app[BACKEND_KEY] = describe_backend(redis_url)
    app.add_routes(
        [
            web.get("/", index),
            web.get("/ws", websocket),
            web.get("/reset", reset),
            web.post("/reset", reset),
            web.get("/logout", logout),
            web.post("/logout", logout),
        ]
    )
    return app


async def index(request: web.Request) -> web.Response:
    """Serve the page, naming the node and the backend that serve it."""
    page = render_page(node=node_address(request), backend=request.app[BACKEND_KEY])
    return web.Response(text=page, content_type="text/html")


def node_address(request: web.Request) -> str:
    """The ``host:port`` this node listens on, as the request reached it."""
    transport = request.transport
    sockname = None if transport is None else transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple):  # a Unix socket, or a closed transport
        return request.host
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    response = web.Response(text=f"New session ws id. {text}\n")
    await schedule_close_all_session_ws(request, response)  # reads the old id
    await new_session_ws_id(request)
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session, and close its websockets; the next request starts anew."""
    text = await closing_text(request, "this session")
    response = web.Response(text=f"Logged out. {text}\n")
    await schedule_close_all_session_ws(request, response)  # reads the old id
    session = await aiohttp_session.get_session(request)
    session.invalidate()
    return response
