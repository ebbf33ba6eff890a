"""Session locks of the browser client, session-ws.js, in a real headless Chromium.

Tabs of separate browser contexts are separate sessions: they take one lock
in turn, abort a wait (``AbortSignal``, op ``cancel``), lose a
connection-scoped lock with their connection and a session-scoped one with
their session, against a real aiohttp server (memory backend) whose code
takes and inspects locks too (``registry.locks``). Playwright drives
Debian's ``chromium`` (``executable_path``, no browser download); one browser
serves the module, so the async tests share the module's loop. Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiohttp_session
import pytest
import pytest_asyncio
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Error, Page
from yarl import URL

from aiohttp_session_ws import (
    Action,
    SessionWSRegistry,
    add_browser_client,
    serve_protocol,
    session_ws_middleware,
    session_ws_protocol,
    setup,
)
from aiohttp_session_ws.locks import LockInfo

from .chromium import launched

TIMEOUT = 5.0
"""Seconds: bounds every wait on the server's side."""
TIMEOUT_MS = 5_000
"""Milliseconds: bounds every wait of playwright."""

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEST_PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>session-ws.js locks test page</title>
<script type="module">
import * as client from "/session-ws/session-ws.js";
window.client = client;
window.lost = [];  // [name, reason] of each lock lost, from onLost
window.hold = (promise) => { promise.catch(() => {}); return promise; };
window.settled = (promise) => promise.then(
  (value) => ({value}),
  (e) => ({name: e.name, code: e.code ?? null, message: e.message}));
</script>
"""

LOCKS_PREFIX = "docs/"
"""Lock names the test policy allows: it refuses every other one."""


def allow_docs(request: web.Request, action: Action) -> bool:
    """The test policy: locks below ``docs/``, and nothing else."""
    return (action.lock or "").startswith(LOCKS_PREFIX)


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

    async def info(self, name: str) -> LockInfo:
        return await self.registry.locks.info(name)

    async def until_info(self, name: str, **fields: Any) -> LockInfo:
        """Wait (bounded) until the lock's info has those fields."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                info = await self.info(name)
                if all(getattr(info, k) == v for k, v in fields.items()):
                    return info
                await asyncio.sleep(0.01)


def make_app(server: Server) -> web.Application:
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
        return web.Response(text=TEST_PAGE, content_type="text/html")

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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    """The test app on a free port."""
    registry = SessionWSRegistry(authorize=allow_docs)
    running = Server(URL(), registry)
    test_server = TestServer(make_app(running), host="127.0.0.1")
    await test_server.start_server()
    running.url = test_server.make_url("/")
    try:
        yield running
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


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser, server: Server) -> AsyncIterator[list[Tab]]:
    """Two tabs of two sessions on the test app, not connected yet."""
    contexts = [await browser.new_context() for _ in range(2)]
    opened: list[Tab] = []
    try:
        for context in contexts:
            context.set_default_timeout(TIMEOUT_MS)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", report_to(errors))
            await page.goto(str(server.url))
            await page.wait_for_function("window.client !== undefined")
            opened.append(Tab(page, errors))
        yield opened
        for tab in opened:
            assert tab.errors == []
    finally:
        for context in contexts:
            await context.close()


TAKE = """async ([name, options]) => {
  const lock = await s.lock(name, options);
  (window.locks ??= {})[name] = lock;
  lock.onLost((reason, l) => lost.push([l.name, reason]));
  return {name: lock.name, sequence: lock.sequence, scope: lock.scope,
          owner: lock.owner, isOwned: lock.isOwned};
}"""
"""Take a lock as ``locks[name]``, noting its loss in ``lost``."""


async def test_two_sessions_take_a_lock_in_turn(
    tabs: list[Tab], server: Server
) -> None:
    first, second = tabs
    one = await first.connect()
    two = await second.connect(requestTimeout=300)  # a lock wait is not bounded
    held = await first.run(TAKE, ["docs/readme", {}])
    assert held["name"] == "docs/readme"
    assert (held["owner"], held["scope"], held["isOwned"]) == (one, 0, True)
    assert isinstance(held["sequence"], int)
    # the same name again: the same object
    assert await first.run(
        "async () => (await s.lock('docs/readme')) === locks['docs/readme']"
    )

    await second.run("() => { window.waiting = hold(s.lock('docs/readme')); }")
    info = await server.until_info("docs/readme", waiting=1)
    assert (info.owner, info.sequence) == (one, held["sequence"])
    seen = await second.run("() => s.lockInfo('docs/readme')")
    assert seen == {
        "name": "docs/readme",
        "owner": one,
        "sequence": held["sequence"],
        "scope": 0,
        "waiting": 1,
        "queue": seen["queue"],
    }
    assert seen["queue"] in ([], [two])  # when the backend tells
    await asyncio.sleep(0.5)  # over requestTimeout (300 ms): it still waits
    assert await second.run("() => s.state") == "connected"

    # a timeout of the call's own ends the wait
    timed_out = await second.run("() => settled(s.lock('docs/readme', {timeout: 150}))")
    assert timed_out["code"] == "timeout"

    # the holder unlocks: the waiter gets it, with a larger sequence
    assert await first.run("() => locks['docs/readme'].unlock()") is True
    assert await first.run("() => locks['docs/readme'].isOwned") is False
    assert await first.run("() => locks['docs/readme'].unlock()") is False
    got = await second.run(
        """async () => {
          const lock = await waiting;
          window.locks = {"docs/readme": lock};
          return [lock.owner, lock.sequence, lock.isOwned];
        }"""
    )
    assert got[0] == two
    assert got[1] > held["sequence"]
    assert got[2] is True
    assert (await server.info("docs/readme")).owner == two

    # refused by the policy, and a bad name
    error = await first.run("() => settled(s.lock('admin/x'))")
    assert error["code"] == "forbidden"
    error = await first.run("() => settled(s.lock('docs//x'))")
    assert error["code"] == "bad_frame"
    error = await first.run("() => settled(s.lock('docs/x', {scope: 2}))")
    assert error["name"] == "RangeError"
    assert await second.run("() => lost") == []


async def test_an_aborted_wait_leaves_the_queue(
    tabs: list[Tab], server: Server
) -> None:
    first, second = tabs
    await first.connect()
    await second.connect()
    await first.run(TAKE, ["docs/plan", {}])
    await second.run(
        """() => {
          window.controller = new AbortController();
          window.waiting = settled(s.lock("docs/plan", {signal: controller.signal}));
        }"""
    )
    assert (await server.until_info("docs/plan", waiting=1)).waiting == 1
    assert (await first.run("() => s.lockInfo('docs/plan')"))["waiting"] == 1
    await second.run("() => controller.abort()")
    assert (await second.run("() => waiting"))["name"] == "AbortError"
    # the cancel frame withdrew it: the queue shrinks
    await server.until_info("docs/plan", waiting=0)
    assert (await first.run("() => s.lockInfo('docs/plan')"))["waiting"] == 0
    assert await first.run("() => locks['docs/plan'].unlock()") is True
    assert (await server.info("docs/plan")).owner is None  # nobody got it
    # an aborted signal sends nothing
    aborted = await second.run(
        "() => settled(s.lock('docs/plan', {signal: AbortSignal.abort()}))"
    )
    assert aborted["name"] == "AbortError"
    assert (await server.info("docs/plan")).owner is None


async def test_a_grant_that_raced_the_abort_is_released(
    tabs: list[Tab], server: Server
) -> None:
    first, second = tabs
    one = await first.connect()
    await second.connect()
    # server code holds the lock for the first tab's session
    held = await server.registry.locks.lock(server.session_of(one), "docs/race")
    await second.run(
        """() => {
          window.controller = new AbortController();
          window.waiting = settled(s.lock("docs/race", {signal: controller.signal}));
          // busy while the grant arrives; then abort, before its frame is read
          window.busy = new Promise((resolve) => setTimeout(() => {
            const end = Date.now() + 1500;
            while (Date.now() < end) {}
            controller.abort();
            resolve();
          }, 100));
        }"""
    )
    await server.until_info("docs/race", waiting=1)
    await asyncio.sleep(0.3)  # the tab is busy now
    assert await held.unlock() is True  # granted to the second tab
    assert (await server.info("docs/race")).owner == second.handle
    await second.run("() => busy")
    assert (await second.run("() => waiting"))["name"] == "AbortError"
    # the result came anyway: the client unlocked it at once
    await server.until_info("docs/race", owner=None)


async def test_a_connection_scoped_lock_goes_with_its_connection(
    tabs: list[Tab], server: Server
) -> None:
    first, second = tabs
    one = await first.connect(reconnect=True, reconnectDelay=20, reconnectMaxDelay=50)
    two = await second.connect()
    connection = 1  # SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
    assert await first.run("() => client.SessionLockScope") == {
        "UNLOCK_ON_SESSION_LOSS": 0,
        "UNLOCK_ON_CONNECTION_LOSS": 1,
    }
    edit = await first.run(TAKE, ["docs/notes", {"scope": connection}])
    assert edit["scope"] == connection
    kept = await first.run(TAKE, ["docs/kept", {}])
    await second.run(
        "() => { window.waiting = hold(s.lock('docs/notes', {scope: 1})); }"
    )
    await server.until_info("docs/notes", waiting=1)

    # the server closes the first tab's connection: the lock is lost at once,
    # and handed on to the second tab
    server.refuse = True  # it stays away for now
    [ws] = server.sockets[server.session_of(one)]
    await ws.close(code=WSCloseCode.GOING_AWAY)
    await first.until("lost.length === 1")
    assert await first.run("() => [lost, locks['docs/notes'].isOwned]") == [
        [["docs/notes", "connection lost"]],
        False,
    ]
    assert await first.run("() => locks['docs/notes'].lost") == "connection lost"
    got = await second.run(
        "async () => { const l = await waiting; return [l.owner, l.sequence]; }"
    )
    assert got[0] == two
    assert got[1] > edit["sequence"]
    # the session-scoped lock stays, the session being alive (grace period)
    assert await first.run("() => [s.state, locks['docs/kept'].isOwned]") == [
        "reconnecting",
        True,
    ]
    assert (await server.info("docs/kept")).owner == one

    # back: the client checks it with lock_info, and it is still held
    server.refuse = False
    await first.until("s.state === 'connected'")
    await asyncio.sleep(0.5)  # the check's round trips
    assert await first.run("() => locks['docs/kept'].isOwned") is True
    assert (await server.info("docs/kept")).sequence == kept["sequence"]

    # the session ends later: the new connection is told (the client took
    # the lock again on it, so the server knows to tell it)
    assert await server.registry.sessions.end(server.session_of(one))
    await first.until("lost.length === 2")
    reason = await first.run("() => locks['docs/kept'].lost")
    assert "session ended" in reason
    assert await first.run("() => lost[1][0]") == "docs/kept"


async def test_a_lock_lost_while_away_is_found_out_after_the_reconnection(
    tabs: list[Tab], server: Server
) -> None:
    first, _ = tabs
    one = await first.connect(reconnect=True, reconnectDelay=20, reconnectMaxDelay=50)
    await first.run(TAKE, ["docs/away", {}])
    await first.run(TAKE, ["docs/later", {}])
    session = server.session_of(one)
    server.refuse = True
    [ws] = server.sockets[session]
    await ws.close(code=WSCloseCode.GOING_AWAY)
    await first.until("s.state === 'reconnecting'")
    # server code lets go of one meanwhile (no lock_lost: an unlock);
    # the page unlocks the other, which waits for the connection
    lock = server.registry.locks.held_by(session, "docs/away")
    assert lock is not None
    assert await lock.unlock() is True
    await first.run("() => { window.unlocked = locks['docs/later'].unlock(); }")
    assert (await server.info("docs/later")).owner == one
    server.refuse = False
    await first.until("s.state === 'connected'")
    assert await first.run("() => unlocked") is True
    assert (await server.info("docs/later")).owner is None
    await first.until("lost.length === 1")
    assert await first.run("() => lost") == [["docs/away", "lost while disconnected"]]


async def test_a_tab_hears_that_its_session_ended(
    tabs: list[Tab], server: Server
) -> None:
    first, second = tabs
    one = await first.connect()
    await second.connect()
    held = await first.run(TAKE, ["docs/end", {}])
    await second.run("() => { window.waiting = hold(s.lock('docs/end')); }")
    await server.until_info("docs/end", waiting=1)
    # as new_session_ws_id does: the session ends, its connection stays open
    assert await server.registry.sessions.end(server.session_of(one))
    await first.until("lost.length === 1")
    assert await first.run("() => [lost[0][0], locks['docs/end'].isOwned]") == [
        "docs/end",
        False,
    ]
    assert "session ended" in await first.run("() => locks['docs/end'].lost")
    # a listener added afterwards hears it too
    assert "session ended" in await first.run(
        "() => new Promise((resolve) => locks['docs/end'].onLost(resolve))"
    )
    sequence = await second.run("async () => (await waiting).sequence")
    assert sequence > held["sequence"]


async def test_closing_the_session_loses_its_locks(
    tabs: list[Tab], server: Server
) -> None:
    first, _ = tabs
    await first.connect()
    await first.run(TAKE, ["docs/closed", {}])
    await first.run("() => s.close()")
    assert await first.run("() => [lost, locks['docs/closed'].isOwned]") == [
        [["docs/closed", "the session was closed"]],
        False,
    ]
    assert await first.run("() => locks['docs/closed'].unlock()") is False
