"""The browser client, session-ws.js, in a real headless Chromium; and its route.

A small app serves a test page that imports the module from
:func:`~aiohttp_session_ws.browser.add_browser_client`'s route; playwright
drives Debian's ``chromium`` (``executable_path``, no browser download). One
browser serves the whole module, so the async tests share the module's loop.
The reconnect schedule is checked under node with a stand-in WebSocket.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp_session
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page
from yarl import URL

from aiohttp_session_ws import (
    SUBPROTOCOL,
    ProtocolLimits,
    SessionWSRegistry,
    get_session_ws_id,
    serve_protocol,
    session_ws,
    session_ws_middleware,
    setup,
)
from aiohttp_session_ws.browser import (
    BROWSER_CLIENT_FILES,
    CACHE_CONTROL,
    add_browser_client,
)
from aiohttp_session_ws.peers import Peer
from aiohttp_session_ws.protocol import Op, Request

from .chromium import launched

TIMEOUT = 5.0
"""Seconds: bounds every wait on the server's side."""
TIMEOUT_MS = 5_000
"""Milliseconds: bounds every wait of playwright."""
STATIC = importlib.resources.files("aiohttp_session_ws") / "static"
JS_FILE = Path(str(STATIC / "session-ws.js"))

module_loop = pytest.mark.asyncio(loop_scope="module")
"""The async tests run in the module's loop, where the one browser lives."""

TEST_PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>session-ws.js test page</title>
<script type="module">
import * as client from "/session-ws/session-ws.js";
window.client = client;
// a promise a test awaits later: its rejection is not "unhandled" meanwhile
window.hold = (promise) => { promise.catch(() => {}); return promise; };
</script>
"""


@dataclass
class Slow:
    """The test op ``slow``: it answers only once released."""

    started: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def answer(self, connection: Peer, request: Request) -> str:
        self.started.put_nowait(request.id)
        await self.release.wait()
        return "done"


@dataclass
class Server:
    """The test app, running."""

    url: URL
    registry: SessionWSRegistry
    slow: Slow
    upgrades: list[web.Request]
    """The upgrade requests of /live, in order (a test can cut one's TCP)."""
    ended: asyncio.Queue[web.Request]
    """Those whose handler returned, the websocket unregistered."""


def make_app(
    registry: SessionWSRegistry,
    slow: Slow,
    upgrades: list[web.Request],
    ended: asyncio.Queue[web.Request],
) -> web.Application:
    """Cookie sessions, the protocol at /live, the client, the test page, /sid."""
    storage = aiohttp_session.SimpleCookieStorage()
    app = web.Application(
        middlewares=[aiohttp_session.session_middleware(storage), session_ws_middleware]
    )
    registry.ops.add(Op("slow", slow.answer))
    setup(app, registry)
    add_browser_client(app)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=TEST_PAGE, content_type="text/html")

    async def live(request: web.Request) -> web.WebSocketResponse:
        context = session_ws(
            request,
            protocols=[SUBPROTOCOL],
            max_msg_size=registry.limits.max_message_size,
            compress=False,
        )
        try:
            async with context as ws:
                upgrades.append(request)
                await serve_protocol(request, ws)
        finally:
            ended.put_nowait(request)
        return ws

    async def sid(request: web.Request) -> web.Response:
        return web.json_response(await get_session_ws_id(request))

    app.router.add_get("/", page)
    app.router.add_get("/live", live)
    app.router.add_get("/sid", sid)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


async def start_server(
    limits: ProtocolLimits | None = None,
) -> tuple[TestServer, Server]:
    registry = SessionWSRegistry(limits=limits)
    slow, ended = Slow(), asyncio.Queue[web.Request]()
    upgrades: list[web.Request] = []
    app = make_app(registry, slow, upgrades, ended)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    url = test_server.make_url("/")
    return test_server, Server(url, registry, slow, upgrades, ended)


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    """The test app on a free port."""
    test_server, running = await start_server()
    yield running
    running.slow.release.set()
    await test_server.close()


@dataclass
class Tab:
    """A page of a fresh browser context (a session of its own)."""

    page: Page
    errors: list[str]
    """Uncaught errors of the page."""

    async def run(self, script: str, arg: Any = None) -> Any:
        """Evaluate a JavaScript function of the page, awaited."""
        return await self.page.evaluate(script, arg)

    async def until(self, condition: str) -> None:
        """Wait (bounded) until a JavaScript expression of the page is true."""
        await self.page.wait_for_function(condition, timeout=TIMEOUT_MS)

    async def session_ws_id(self) -> Hashable:
        """The session ws id of the page's session (the test page shows no such)."""
        sid: Hashable = await self.run("async () => (await fetch('/sid')).json()")
        return sid


async def open_tab(browser: Browser, server: Server) -> AsyncIterator[Tab]:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(str(server.url))
        await page.wait_for_function("window.client !== undefined")
        yield Tab(page, errors)
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, server: Server) -> AsyncIterator[Tab]:
    """The test page in a fresh context: a new session."""
    async for opened in open_tab(browser, server):
        yield opened
        assert opened.errors == []


CONNECT = """async (options) => {
  window.states = [];
  window.pushed = [];
  window.s = await client.connect("/live", options ?? {});
  s.addStateListener((old, state) => states.push([old, state]));
  s.onPush((data) => pushed.push(data));
  return {
    sessionId: s.sessionId, connectionId: s.connectionId, state: s.state,
    limits: s.limits, url: s.url, missed: s.missed, closeCode: s.closeCode,
    closed: s.closed,
  };
}"""
"""Connect the page to /live as ``window.s``; record its states and pushes."""

CAUGHT = """async (promise) => {
  try {
    return {resolved: await promise};
  } catch (e) {
    return {
      name: e.name, code: e.code ?? null, closeCode: e.closeCode ?? null,
      message: e.message, retryable: e.retryable ?? null,
      protocolError: e instanceof client.ProtocolError,
      lost: e instanceof client.ConnectionLostError,
      connectError: e instanceof client.ConnectError,
      timeout: e instanceof client.RequestTimeoutError,
    };
  }
}"""
"""What a promise of the page gave: its value, or the error's fields."""


async def caught(tab: Tab, expression: str) -> dict[str, Any]:
    """Evaluate ``expression`` (a promise) in the page; see :data:`CAUGHT`."""
    result: dict[str, Any] = await tab.run(
        f"async () => ({CAUGHT})((async () => {expression})())"
    )
    return result


def only_session(registry: SessionWSRegistry) -> Hashable:
    """The one session with open websockets on ``registry``."""
    [session_ws_id] = list(registry)
    return session_ws_id


DONE = {"done": True, "value": None}
"""An iterator's end, as playwright gives it (``undefined`` is ``None``)."""


# the route


@module_loop
async def test_the_module_and_its_types_are_served_from_the_package(
    server: Server,
) -> None:
    async with aiohttp.ClientSession() as http:
        for name, media_type in BROWSER_CLIENT_FILES.items():
            url = server.url / "session-ws" / name
            async with http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == f"{media_type}; charset=utf-8"
                assert resp.headers["Cache-Control"] == CACHE_CONTROL
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert await resp.read() == (STATIC / name).read_bytes()
                etag = resp.headers["ETag"]
            async with http.get(url, headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304
                assert await resp.read() == b""
            async with http.head(url) as resp:
                assert resp.status == 200
        url = server.url / "session-ws" / "session-ws.js"
        async with http.get(url) as resp:
            assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert resp.headers["X-TypeScript-Types"] == "/session-ws/session-ws.d.ts"
        async with http.get(server.url / "session-ws" / "other.js") as resp:
            assert resp.status == 404


@module_loop
async def test_the_prefix_is_the_apps_choice() -> None:
    app = web.Application()
    add_browser_client(app, "/static/v2")
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(test_server.make_url("/static/v2/session-ws.d.ts")) as resp,
        ):
            assert resp.status == 200
            assert "export declare function connect" in await resp.text()
    finally:
        await test_server.close()


@pytest.mark.parametrize(
    "prefix", ["", "session-ws", "/session-ws/", "/", "//x", "/a{b}", "/a?b", "/a b"]
)
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        add_browser_client(web.Application(), prefix)


def test_the_files_are_in_the_installed_package() -> None:
    for name in BROWSER_CLIENT_FILES:
        assert (STATIC / name).is_file(), name
    assert "export async function connect" in JS_FILE.read_text()


def test_the_types_declare_every_export() -> None:
    js = re.findall(
        r"^export (?:const|class|async function|function) (\w+)",
        JS_FILE.read_text(),
        re.MULTILINE,
    )
    dts = re.findall(
        r"^export declare (?:const|class|function) (\w+)",
        (STATIC / "session-ws.d.ts").read_text(),
        re.MULTILINE,
    )
    assert sorted(js) == sorted(dts)
    assert {"connect", "Session", "SessionState", "ProtocolError"} <= set(js)
    assert {"ConnectionLostError", "ConnectError", "RequestTimeoutError"} <= set(js)


# connecting


@module_loop
async def test_hello_fields_and_no_secret(tab: Tab, server: Server) -> None:
    hello = await tab.run(CONNECT)
    session_ws_id = await tab.session_ws_id()
    assert isinstance(session_ws_id, str)
    assert hello["state"] == "connected"
    assert hello["sessionId"] == server.registry.public_handle(session_ws_id)
    assert hello["sessionId"] != session_ws_id
    assert session_ws_id not in json.dumps(hello)
    [ws] = server.registry[session_ws_id]
    record = server.registry.connection(ws)
    assert record is not None
    assert hello["connectionId"] == record.connection_id
    assert ws.ws_protocol == SUBPROTOCOL
    assert hello["limits"] == server.registry.limits.for_client()
    assert hello["url"] == str(server.url.with_scheme("ws") / "live")
    assert (hello["missed"], hello["closeCode"], hello["closed"]) == (0, None, False)
    assert await tab.run("() => Object.values(client.SessionState)") == [
        "connecting",
        "connected",
        "reconnecting",
        "closed",
    ]


@module_loop
async def test_a_url_resolves_against_the_page(tab: Tab, server: Server) -> None:
    error = await caught(tab, 'client.connect("https://127.0.0.1:1/live")')
    assert error["connectError"]
    assert "wss://127.0.0.1:1/live" in error["message"]
    error = await caught(tab, 'client.connect("ftp://127.0.0.1/live")')
    assert (error["name"], error["connectError"]) == ("SyntaxError", False)
    hello = await tab.run(CONNECT.replace('"/live"', "location.origin + '/live#x'"))
    assert hello["url"] == str(server.url.with_scheme("ws") / "live")


@module_loop
async def test_a_failed_first_connection_rejects(tab: Tab) -> None:
    error = await caught(tab, 'client.connect("/missing", {reconnect: true})')
    assert error["connectError"]
    assert (error["closeCode"], error["retryable"]) == (1006, True)


@module_loop
async def test_options_are_checked(tab: Tab) -> None:
    error = await caught(tab, 'client.connect("/live", {requestTimeout: 0})')
    assert (error["name"], error["message"]) == (
        "RangeError",
        "requestTimeout must be a positive number, not 0",
    )
    error = await caught(tab, 'client.connect("/live", {reconect: true})')
    assert error["name"] == "TypeError"
    assert "reconect" in error["message"]
    error = await caught(tab, 'client.connect("/live", {maxReconnectAttempts: 1.5})')
    assert error["name"] == "RangeError"


# requests


@module_loop
async def test_ping_and_properties(tab: Tab) -> None:
    hello = await tab.run(CONNECT)
    rtt = await tab.run("() => s.pingServer()")
    assert isinstance(rtt, (int, float))
    assert 0 <= rtt < TIMEOUT_MS
    assert await tab.run("() => s.request('ping')") == {}
    properties = await tab.run("() => s.properties()")
    assert properties["$SessionId"] == hello["sessionId"]
    assert properties["$ConnectionId"] == hello["connectionId"]
    assert properties["$Transport"] == "websocket"
    assert all(isinstance(value, str) for value in properties.values())
    own = await tab.run("() => s.properties({sessionId: s.sessionId})")
    assert own["$SessionId"] == hello["sessionId"]
    error = await caught(tab, "s.properties({sessionId: 'someone-else'})")
    assert (error["protocolError"], error["code"]) == (True, "forbidden")


@module_loop
async def test_an_unknown_op_rejects_with_its_code(tab: Tab) -> None:
    await tab.run(CONNECT)
    error = await caught(tab, "s.request('no-such-op')")
    assert error["protocolError"]
    assert (error["name"], error["code"]) == ("ProtocolError", "unknown_op")
    assert error["message"].startswith("unknown_op: ")
    error = await caught(tab, "s.request('ping', {extra: 1})")
    assert (error["protocolError"], error["code"]) == (True, "bad_frame")
    assert await tab.run("() => s.state") == "connected"  # errors close nothing


@module_loop
async def test_what_cannot_be_sent_rejects_before_sending(
    tab: Tab, server: Server
) -> None:
    await tab.run(CONNECT)
    error = await caught(tab, "s.request('ping', {op: 'x'})")
    assert error["name"] == "TypeError"
    error = await caught(tab, "s.request(42)")
    assert error["name"] == "TypeError"
    error = await caught(tab, "s.request('ping', {n: 10n})")  # a BigInt
    assert error["name"] == "TypeError"
    size = server.registry.limits.max_frame_size
    error = await caught(tab, f"s.request('ping', {{x: 'é'.repeat({size // 2})}})")
    assert (error["protocolError"], error["code"]) == (True, "too_large")
    assert server.registry.stats().errors.get("too_large", 0) == 0  # not sent
    assert await tab.run("() => s.request('ping')") == {}


@module_loop
async def test_no_answer_in_time_is_a_request_timeout(tab: Tab) -> None:
    await tab.run(CONNECT, {"requestTimeout": 1000})  # it bounds the hello too
    error = await caught(tab, "s.request('slow')")
    assert (error["timeout"], error["protocolError"]) == (True, True)
    assert (error["name"], error["code"]) == ("RequestTimeoutError", "timeout")
    assert await tab.run("() => s.state") == "connected"


# pushes


@module_loop
async def test_a_push_reaches_listeners_and_the_iterator(
    tab: Tab, server: Server
) -> None:
    await tab.run(CONNECT)
    await tab.run(
        """() => {
          window.iterator = s.pushes();
          window.first = iterator.next();
          window.second = iterator.next();
          window.other = [];
          window.removeOther = s.onPush((data) => other.push(data));
        }"""
    )
    session_ws_id = await tab.session_ws_id()
    assert await server.registry.send_to_session(session_ws_id, {"n": 1}) == 1
    await tab.until("pushed.length === 1")
    assert await tab.run("() => first") == {"done": False, "value": {"n": 1}}
    await tab.run("() => removeOther()")
    assert await server.registry.broadcast(["all", 2]) == 1
    assert await tab.run("() => second") == {"done": False, "value": ["all", 2]}
    assert await tab.run("() => [pushed, other]") == [
        [{"n": 1}, ["all", 2]],
        [{"n": 1}],
    ]

    # what the iterator holds is read after the close, then it ends
    await server.registry.send_to_session(session_ws_id, "held")
    await tab.until("pushed.length === 3")
    await tab.run("() => s.close()")
    assert await tab.run("() => iterator.next()") == {"done": False, "value": "held"}
    assert await tab.run("() => iterator.next()") == DONE
    assert await tab.run("() => s.pushes().next()") == DONE


@module_loop
async def test_for_await_and_a_bounded_buffer(tab: Tab, server: Server) -> None:
    await tab.run(CONNECT)
    await tab.run("() => { window.small = s.pushes({maxBuffer: 2}); }")
    session_ws_id = await tab.session_ws_id()
    for n in range(4):
        await server.registry.send_to_session(session_ws_id, n)
    await tab.until("pushed.length === 4")
    got = await tab.run(
        """async () => {
          const seen = [];
          for await (const data of small) {
            seen.push(data);
            if (seen.length === 2) break;  // return(): the iterator ends
          }
          return [seen, small.dropped, await small.next()];
        }"""
    )
    assert got == [[2, 3], 2, DONE]


@module_loop
async def test_a_failing_listener_is_reported_and_the_others_still_run(
    browser: Browser, server: Server
) -> None:
    async for tab in open_tab(browser, server):
        await tab.run(CONNECT)
        await tab.run(
            """() => {
              s.onPush(() => { throw new Error("listener broke"); });
              window.after = [];
              s.onPush((data) => after.push(data));
            }"""
        )
        session_ws_id = await tab.session_ws_id()
        async with tab.page.expect_event("pageerror") as reported:
            await server.registry.send_to_session(session_ws_id, "x")
        assert "listener broke" in str(await reported.value)  # an uncaught error
        await tab.until("after.length === 1")
        assert await tab.run("() => s.state") == "connected"


# drops, closes and reconnection


@module_loop
async def test_pending_requests_reject_at_once_when_the_socket_drops(
    tab: Tab, server: Server
) -> None:
    await tab.run(CONNECT, {"requestTimeout": 30_000})
    await tab.run(
        "() => { window.waiting = [hold(s.request('slow')), hold(s.request('slow'))]; }"
    )
    for _ in range(2):
        await asyncio.wait_for(server.slow.started.get(), TIMEOUT)
    transport = server.upgrades[-1].transport
    assert transport is not None
    transport.abort()  # the TCP connection drops: no close frame
    for index in range(2):
        error = await caught(tab, f"waiting[{index}]")
        assert (error["lost"], error["closeCode"]) == (True, 1006)
    assert await tab.run("() => [s.state, s.closeCode, states]") == [
        "closed",
        1006,
        [["connected", "closed"]],
    ]
    error = await caught(tab, "s.request('ping')")
    assert (error["lost"], error["closeCode"]) == (True, 1006)


@module_loop
async def test_it_reconnects_after_the_server_closes_with_1001(
    tab: Tab, server: Server
) -> None:
    options = {"reconnect": True, "reconnectDelay": 10, "reconnectMaxDelay": 50}
    hello = await tab.run(CONNECT, options)
    await tab.run("() => { window.iterator = s.pushes(); }")
    await tab.run("() => { window.waiting = hold(s.request('slow')); }")
    await asyncio.wait_for(server.slow.started.get(), TIMEOUT)

    assert await server.registry.close_all() == 1  # 1001: going away
    error = await caught(tab, "waiting")
    assert (error["lost"], error["closeCode"]) == (True, 1001)
    await tab.until("states.length === 2")
    again = await tab.run(
        "() => [states, s.state, s.closeCode, s.sessionId, s.connectionId]"
    )
    assert again[:4] == [
        [["connected", "reconnecting"], ["reconnecting", "connected"]],
        "connected",
        1001,
        hello["sessionId"],
    ]
    assert again[4] != hello["connectionId"]
    assert await tab.run("() => s.pingServer()") >= 0
    # the iterator goes on across the reconnection
    await server.registry.send_to_session(await tab.session_ws_id(), "after")
    assert await tab.run("() => iterator.next()") == {"done": False, "value": "after"}


@module_loop
async def test_no_reconnect_after_1000(tab: Tab, server: Server) -> None:
    await tab.run(CONNECT, {"reconnect": True, "reconnectDelay": 10})
    await tab.run("() => { window.iterator = s.pushes(); }")
    await server.registry.close_all_session(await tab.session_ws_id())  # logout
    await tab.until("s.state === 'closed'")
    assert await tab.run("() => [states, s.closeCode, s.closed]") == [
        [["connected", "closed"]],
        1000,
        True,
    ]
    assert await tab.run("() => iterator.next()") == DONE
    error = await caught(tab, "s.request('ping')")
    assert (error["lost"], error["closeCode"]) == (True, 1000)
    assert len(server.upgrades) == 1  # and no attempt since


@module_loop
async def test_no_reconnect_after_1008(browser: Browser) -> None:
    strict = ProtocolLimits(rate=0.001, burst=1, rate_close_after=2)
    test_server, server = await start_server(strict)
    try:
        async for tab in open_tab(browser, server):
            await tab.run(CONNECT, {"reconnect": True, "reconnectDelay": 10})
            await tab.run(
                "() => { window.waiting = [1, 2, 3].map(() => s.request('ping'))"
                ".map(hold); }"
            )
            await tab.until("s.state === 'closed'")
            assert await tab.run("() => [states, s.closeCode]") == [
                [["connected", "closed"]],
                1008,
            ]
            # the first may be answered before the close; the second is
            # refused with "limit"; the third's refusal closes with 1008
            first, second, third = [
                await caught(tab, f"waiting[{i}]") for i in range(3)
            ]
            assert first == {"resolved": {}} or first["closeCode"] == 1008
            assert (second["protocolError"], second["code"]) == (True, "limit")
            assert (third["lost"], third["closeCode"]) == (True, 1008)
            assert len(server.upgrades) == 1
    finally:
        await test_server.close()


@module_loop
async def test_close_ends_the_session_for_good(tab: Tab, server: Server) -> None:
    await tab.run(CONNECT, {"reconnect": True})
    await tab.run("() => { window.waiting = hold(s.request('slow')); }")
    await asyncio.wait_for(server.slow.started.get(), TIMEOUT)
    await tab.run("() => s.close()")
    error = await caught(tab, "waiting")
    assert (error["lost"], error["closeCode"]) == (True, 1000)
    assert await tab.run("() => [states, s.state, s.closed, s.closeCode]") == [
        [["connected", "closed"]],
        "closed",
        True,
        1000,
    ]
    await tab.run("() => s.close()")  # again: nothing
    [upgrade] = server.upgrades
    assert await asyncio.wait_for(server.ended.get(), TIMEOUT) is upgrade
    assert list(server.registry) == []  # unregistered


# the reconnect schedule, under node


NODE_HARNESS = """\
const client = await import(process.argv.at(-1));

// Stand-ins: the first socket says hello, later ones fail at once; the
// reconnect timers are recorded and run at once, the request timers never.
const sockets = [];
const sent = [];
globalThis.WebSocket = class extends EventTarget {
  static CLOSED = 3;
  constructor(url, protocol) {
    super();
    Object.assign(this, {url, protocol, readyState: 0});
    const first = sockets.push(this) === 1;
    queueMicrotask(() => {
      if (!first) return this.close(1006);
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
      const hello = {op: "hello", version: 1, connection: "c1", session: "h",
                     limits: {max_frame_size: 100}};
      this.dispatchEvent(new MessageEvent("message", {data: JSON.stringify(hello)}));
    });
  }
  send(text) { sent.push(text); }
  close(code = 1005) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    const event = new Event("close");
    Object.assign(event, {code, reason: "", wasClean: false});
    queueMicrotask(() => this.dispatchEvent(event));
  }
};
globalThis.location = {href: "https://demo.example/page"};
Math.random = () => 0.5;
const delays = [];
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms) => {
  if (ms === 99999) return 0;  // a request or hello timeout
  delays.push(ms);
  return realSetTimeout(fn, 0);
};
console.warn = () => {};

const states = [];
const session = await client.connect("/live", {
  reconnect: true, requestTimeout: 99999, reconnectDelay: 100,
  reconnectMaxDelay: 1000, maxReconnectAttempts: 6,
  onState: (old, state) => states.push(state),
});
// UTF-8 bytes count, not characters: 62 characters, 102 bytes
const tooLarge = await session.request("x", {y: "\\u00e9".repeat(40)})
  .catch((e) => e.code);
const fits = session.request("x", {y: "\\u00e9".repeat(30)}).catch((e) => e.name);
const closed = new Promise((resolve) =>
  session.addStateListener((old, state) => state === "closed" && resolve()));
sockets[0].close(1006);  // the connection drops
await closed;
console.log(JSON.stringify({
  url: session.url, states, delays, tooLarge, sent, lost: await fits,
  attempts: sockets.length - 1,
}));
"""
"""Runs session-ws.js under node with a stand-in WebSocket and timers."""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_reconnects_back_off_exponentially_with_full_jitter_up_to_a_cap() -> None:
    done = subprocess.run(
        ["node", "--input-type=module", "-", JS_FILE.as_uri()],
        input=NODE_HARNESS,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen["url"] == "wss://demo.example/live"
    assert seen["states"] == ["connected", "reconnecting", "closed"]
    # half of each ceiling (Math.random is 0.5): 100 ms doubling, up to 1000
    assert seen["delays"] == [50, 100, 200, 400, 500, 500]
    assert seen["attempts"] == 6  # maxReconnectAttempts, then closed
    assert seen["tooLarge"] == "too_large"
    [frame] = seen["sent"]
    assert json.loads(frame) == {"op": "x", "id": 2, "y": "é" * 30}
    assert seen["lost"] == "ConnectionLostError"
