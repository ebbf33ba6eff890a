"""Real aiohttp apps for the tests: cookie sessions, our middleware, a /ws route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import aiohttp
import aiohttp_session
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from aiohttp_session_ws import (
    DEFAULT_SESSION_KEY,
    REGISTRY_APP_KEY,
    SessionWSRegistry,
    schedule_close_all_session_ws,
    session_ws,
    session_ws_endpoint,
    session_ws_middleware,
    setup,
)

Client = TestClient[Any, Any]
TIMEOUT = 5.0


HANDLER_EXITS: web.AppKey[asyncio.Queue[str]] = web.AppKey("handler_exits")
"""Each /ws handler puts its session ws id here once it has left session_ws."""


async def echo_handler(request: web.Request) -> web.WebSocketResponse:
    """Echo text frames back until the socket closes; report the exit."""
    session_ctx = session_ws(request)
    async with session_ctx as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
    request.app[HANDLER_EXITS].put_nowait(str(session_ctx.session_ws_id))
    return ws


def build_app(
    registry: SessionWSRegistry | None = None,
    *,
    middleware: bool = True,
    routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    """An app with cookie sessions, our middleware, /ws, /live (the protocol)
    and the given routes."""
    storage = aiohttp_session.SimpleCookieStorage()
    middlewares = [aiohttp_session.session_middleware(storage)]
    if middleware:
        middlewares.append(session_ws_middleware)
    app = web.Application(middlewares=middlewares)
    setup(app, registry if registry is not None else SessionWSRegistry())
    app[HANDLER_EXITS] = asyncio.Queue()
    app.router.add_get("/ws", echo_handler)
    app.router.add_get("/live", session_ws_endpoint)
    app.router.add_routes(list(routes))
    return app


def app_of(client: Client) -> web.Application:
    """The app the client talks to."""
    app = client.app
    assert isinstance(app, web.Application)
    return app


def registry_of(client: Client) -> SessionWSRegistry:
    """The registry of the app the client talks to."""
    return app_of(client)[REGISTRY_APP_KEY]


def cookie_session(client: Client) -> dict[str, object]:
    """The session the client's cookie holds (SimpleCookieStorage is plain JSON)."""
    cookies = client.session.cookie_jar.filter_cookies(URL(str(client.make_url("/"))))
    morsel = cookies["AIOHTTP_SESSION"]
    data: dict[str, object] = json.loads(morsel.value).get("session", {})
    return data


def cookie_ws_id(client: Client) -> str:
    """The session ws id held in the client's session cookie."""
    value = cookie_session(client)[DEFAULT_SESSION_KEY]
    assert isinstance(value, str)
    return value


async def open_ws(client: Client, path: str = "/ws") -> aiohttp.ClientWebSocketResponse:
    """Open a websocket and prove it is registered by an echo round trip."""
    ws = await client.ws_connect(path)
    await ws.send_str("ping")
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.data == "ping"
    return ws


async def expect_close(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Wait (bounded) for the server's close frame on ``ws``; return its code."""
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    code: int = msg.data
    return code


async def handler_exits(client: Client, count: int) -> list[str]:
    """Wait (bounded) until ``count`` /ws handlers have left their block."""
    queue = app_of(client)[HANDLER_EXITS]
    return [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(count)]


def share_session(source: Client, *targets: Client) -> None:
    """Give the targets the source's session cookie: one browser on several nodes."""
    cookies = source.session.cookie_jar.filter_cookies(URL(str(source.make_url("/"))))
    for target in targets:
        target.session.cookie_jar.update_cookies(
            cookies, URL(str(target.make_url("/")))
        )


def session_cookie_header(client: Client) -> dict[str, str]:
    """The client's session cookie as a header, for a client of another kind."""
    cookies = client.session.cookie_jar.filter_cookies(URL(str(client.make_url("/"))))
    return {"Cookie": f"AIOHTTP_SESSION={cookies['AIOHTTP_SESSION'].coded_value}"}


async def logout(request: web.Request) -> web.Response:
    """Close the session's websockets once this response is sent."""
    response = web.Response(text="bye")
    await schedule_close_all_session_ws(request, response)
    return response


def reconnected(registry: SessionWSRegistry) -> asyncio.Event:
    """An event set each time the registry's backend recovers from an outage."""
    event = asyncio.Event()

    async def note() -> None:
        event.set()

    registry.on_reconnect.append(note)
    return event
