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
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSCloseCode, web
from playwright.async_api import Browser

from aiohttp_session_ws import (
    Action,
    SessionWSRegistry,
)
from aiohttp_session_ws.locks import LockInfo

from . import browser_pages as pages
from .chromium import launched
from .waiting import until

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


class Server(pages.Server):
    """The test app, running; it inspects locks too."""

    async def info(self, name: str) -> LockInfo:
        return await self.registry.locks.info(name)

    async def until_info(self, name: str, **fields: Any) -> LockInfo:
        """Wait (bounded) until the lock's info has those fields."""
        found: list[LockInfo] = []

        async def seen() -> bool:
            found[:] = [await self.info(name)]
            return all(getattr(found[0], k) == v for k, v in fields.items())

        await until(seen)
        return found[0]


Tab = pages.Tab


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    """The test app on a free port."""
    registry = SessionWSRegistry(authorize=allow_docs)
    async with pages.running(Server, registry, TEST_PAGE) as running:
        assert isinstance(running, Server)
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser, server: Server) -> AsyncIterator[list[Tab]]:
    """Two tabs of two sessions on the test app, not connected yet."""
    async with pages.opened_tabs(browser, server, Tab) as opened:
        yield opened


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
