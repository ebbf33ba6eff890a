"""The harness of the browser-client tests: a test app with a page, and tabs.

A module gives its page and its policy; it gets a running app whose /live
serves the protocol (and can refuse upgrades for a while, to keep a tab
away), and tabs of fresh browser contexts: a session each. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp_session
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Error, Page
from yarl import URL

from aiohttp_session_ws import (
    SessionWSRegistry,
    add_browser_client,
    serve_protocol,
    session_ws_middleware,
    session_ws_protocol,
    setup,
)

TIMEOUT = 5.0
"""Seconds: bounds every wait on the server's side."""
TIMEOUT_MS = 5_000
"""Milliseconds: bounds every wait of playwright."""


@dataclass
class Server:
    """The test app, running."""

    url: URL
    registry: SessionWSRegistry
    sockets: dict[Hashable, list[web.WebSocketResponse]] = field(default_factory=dict)
    """The protocol websockets of each session ws id, in order."""
    refuse: bool = False
    """Whether /live refuses upgrades (503) for now: a tab stays away."""

    def session_of(self, handle: str) -> Hashable:
        """The session ws id of the session with that public handle."""
        [session] = {p.session_ws_id for p in self.registry.peers if p.handle == handle}
        return session


def page_app(server: Server, page_html: str) -> web.Application:
    """Cookie sessions, the protocol at /live (kept by session), the client, a page."""
    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage()),
            session_ws_middleware,
        ]
    )
    setup(app, server.registry)
    add_browser_client(app)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    async def live(request: web.Request) -> web.WebSocketResponse:
        if server.refuse:
            raise web.HTTPServiceUnavailable()
        context = session_ws_protocol(request)
        async with context as ws:
            server.sockets.setdefault(context.session_ws_id, []).append(ws)
            await serve_protocol(request, ws)
        return ws

    app.router.add_get("/", page)
    app.router.add_get("/live", live)
    return app


@asynccontextmanager
async def running(
    server_type: type[Server], registry: SessionWSRegistry, page_html: str
) -> AsyncIterator[Server]:
    """The test app of ``page_html`` on a free port."""
    server = server_type(URL(), registry)
    test_server = TestServer(page_app(server, page_html), host="127.0.0.1")
    await test_server.start_server()
    server.url = test_server.make_url("/")
    try:
        yield server
    finally:
        await test_server.close()


@dataclass
class Tab:
    """A page of a fresh browser context: a session of its own."""

    page: Page
    errors: list[str]
    handle: str = ""

    async def run(self, script: str, arg: Any = None) -> Any:
        """Evaluate a JavaScript function of the page, awaited (bounded)."""
        return await asyncio.wait_for(self.page.evaluate(script, arg), TIMEOUT)

    async def until(self, condition: str) -> None:
        """Wait (bounded) until a JavaScript expression of the page is true."""
        await self.page.wait_for_function(condition, timeout=TIMEOUT_MS)

    async def connect(self, **options: Any) -> str:
        """Connect as ``window.s``; return the session's handle."""
        self.handle = await self.run(
            """async (options) => {
              window.s = await client.connect("/live", options);
              return s.sessionId;
            }""",
            options,
        )
        return self.handle


def report_to(errors: list[str]) -> Callable[[Error], None]:
    """A ``pageerror`` listener that keeps the page's uncaught errors."""
    return lambda error: errors.append(str(error))


@asynccontextmanager
async def opened_tabs(
    browser: Browser, server: Server, tab_type: type[Tab], count: int = 2
) -> AsyncIterator[list[Any]]:
    """``count`` tabs of as many sessions on the test app, not connected yet.

    On the way out, no tab may have had an uncaught error.
    """
    contexts = [await browser.new_context() for _ in range(count)]
    opened: list[Tab] = []
    try:
        for context in contexts:
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", report_to(errors))
            await page.goto(str(server.url))
            await page.wait_for_function("window.client !== undefined")
            opened.append(tab_type(page, errors))
        yield opened
        for tab in opened:
            assert tab.errors == []
    finally:
        for context in contexts:
            await context.close()
