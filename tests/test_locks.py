"""Session locks on one node (memory backend): grants, queues, scopes, the ops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import Action, ProtocolLimits, SessionWSRegistry
from aiohttp_session_ws.locks import (
    LockTimeoutError,
    SessionLock,
    SessionLockScope,
    SessionNotAliveError,
)

from .apps import Client, build_app, logout, registry_of
from .waiting import until
from .wire import TIMEOUT, WireTab, allow_all, open_tab

Tabs = Callable[..., Awaitable[WireTab]]
CONNECTION = SessionLockScope.UNLOCK_ON_CONNECTION_LOSS


@pytest.fixture
async def node(aiohttp_client: AiohttpClient) -> Client:
    registry = SessionWSRegistry(
        authorize=allow_all,
        grace_period=0.3,
        limits=ProtocolLimits(request_timeout=0.5),
    )
    return await aiohttp_client(
        build_app(registry, routes=[web.get("/logout", logout)])
    )


@pytest.fixture
def tab(aiohttp_client: AiohttpClient, node: Client) -> Tabs:
    async def open_one(login: Client | None = None) -> WireTab:
        browser = login if login is not None else await aiohttp_client(node.server)
        return await open_tab(browser, "/live")

    return open_one


def session_of(node: Client, tab: WireTab) -> Any:
    (peer,) = [
        p for p in registry_of(node).peers if p.connection_id == tab.hello["connection"]
    ]
    return peer.session_ws_id


async def test_a_lock_is_granted_repeated_and_released(node: Client, tab: Tabs) -> None:
    locks = registry_of(node).locks
    one = await tab()
    session = session_of(node, one)
    lock = await locks.lock(session, "docs/1")
    assert (lock.name, lock.owner, lock.scope) == (
        "docs/1",
        one.handle,
        SessionLockScope.UNLOCK_ON_SESSION_LOSS,
    )
    assert lock.is_owned
    assert await locks.lock(session, "docs/1") is lock  # equal: the same one
    info = await locks.info("docs/1")
    assert (info.owner, info.sequence, info.waiting) == (one.handle, lock.sequence, 0)
    assert await lock.unlock() is True
    assert (lock.name, lock.is_owned) == ("docs/1", False)
    assert await lock.unlock() is False
    assert (await locks.info("docs/1")).owner is None
    async with await locks.lock(session, "docs/1") as again:
        assert again.sequence > lock.sequence
    assert not again.is_owned


async def test_waiters_are_served_first_come_first_served(
    node: Client, tab: Tabs
) -> None:
    locks = registry_of(node).locks
    sessions = [session_of(node, await tab()) for _ in range(4)]
    first = await locks.lock(sessions[0], "job")
    order: list[int] = []

    async def wait(n: int) -> SessionLock:
        lock = await locks.lock(sessions[n], "job")
        order.append(n)
        return lock

    waiting = []
    for n in (2, 1, 3):  # queued in this order
        waiting.append(asyncio.ensure_future(wait(n)))
        await _queued(locks, "job", len(waiting))
    sequences = [first.sequence]
    await first.unlock()
    for task in waiting:
        lock = await asyncio.wait_for(task, TIMEOUT)
        sequences.append(lock.sequence)
        await lock.unlock()
    assert order == [2, 1, 3]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4


async def _queued(locks: Any, name: str, count: int) -> None:
    """Wait (bounded) until ``count`` sessions wait for the lock."""

    async def queued() -> bool:
        return bool((await locks.info(name)).waiting >= count)

    await until(queued)


async def test_a_cancelled_or_timed_out_wait_leaves_the_queue(
    node: Client, tab: Tabs
) -> None:
    locks = registry_of(node).locks
    holder, quitter, patient = [session_of(node, await tab()) for _ in range(3)]
    held = await locks.lock(holder, "q")
    cancelled = asyncio.ensure_future(locks.lock(quitter, "q"))
    await _queued(locks, "q", 1)
    waiting = asyncio.ensure_future(locks.lock(patient, "q"))
    await _queued(locks, "q", 2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    async def one_waits() -> bool:
        return bool((await locks.info("q")).waiting == 1)

    await until(one_waits)
    with pytest.raises(LockTimeoutError):
        await locks.lock(quitter, "q", timeout=0.05)
    await held.unlock()
    got = await asyncio.wait_for(waiting, TIMEOUT)
    assert got.owner == registry_of(node).public_handle(patient)
    assert registry_of(node).stats().lock_waits == 0


async def test_a_grant_that_races_a_cancel_is_released(node: Client, tab: Tabs) -> None:
    locks = registry_of(node).locks
    holder, racer = [session_of(node, await tab()) for _ in range(2)]
    held = await locks.lock(holder, "race")
    waiting = asyncio.ensure_future(locks.lock(racer, "race"))
    await _queued(locks, "race", 1)
    # the release hands it to the racer while its call is being cancelled
    await held.unlock()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def free() -> bool:
        return (await locks.info("race")).owner is None

    await until(free)
    assert registry_of(node).stats().locks_held == 0


async def test_a_connection_scoped_lock_goes_with_its_connection(
    node: Client, tab: Tabs
) -> None:
    registry = registry_of(node)
    locks = registry.locks
    one, other = await tab(), await tab()
    session = session_of(node, one)
    lock = await locks.lock(
        session, "edit", CONNECTION, connection=one.hello["connection"]
    )
    lost: list[str] = []
    lock.on_lost(lambda lock: lost.append(lock.name))
    waiting = asyncio.ensure_future(locks.lock(session_of(node, other), "edit"))
    await _queued(locks, "edit", 1)
    await one.close()
    assert await asyncio.wait_for(lock.wait_lost(), TIMEOUT) == "its connection closed"
    assert lost == ["edit"]
    assert (await asyncio.wait_for(waiting, TIMEOUT)).owner == other.handle
    with pytest.raises(ValueError, match="needs the connection"):
        await locks.lock(session, "edit", CONNECTION)


async def test_a_session_scoped_lock_outlives_a_tab_and_goes_with_the_session(
    aiohttp_client: AiohttpClient, node: Client, tab: Tabs
) -> None:
    registry = registry_of(node)
    locks = registry.locks
    login = await aiohttp_client(node.server)
    first = await tab(login)
    session = session_of(node, first)
    lock = await locks.lock(session, "doc")
    second = await tab(login)
    await first.close()  # another tab of the session stays
    assert lock.is_owned
    assert (await locks.info("doc")).owner == first.handle
    # the session asks again with the weaker scope: it is weakened
    weaker = await locks.lock(
        session, "doc", CONNECTION, connection=second.hello["connection"]
    )
    assert weaker is lock
    assert lock.scope is CONNECTION
    await weaker.unlock()
    # logout ends the session: its session-scoped lock is lost
    held = await locks.lock(session, "doc2")
    assert (await login.get("/logout")).status == 200
    assert "session ended" in await asyncio.wait_for(held.wait_lost(), TIMEOUT)
    assert (await locks.info("doc2")).owner is None


async def test_the_grace_period_ends_a_session_and_its_locks(
    node: Client, tab: Tabs
) -> None:
    locks = registry_of(node).locks
    one = await tab()
    lock = await locks.lock(session_of(node, one), "g")
    await one.close()
    # the grace period (0.3 s) runs out: the session ends, its lock goes
    assert "session ended" in await asyncio.wait_for(lock.wait_lost(), TIMEOUT)


async def test_a_session_that_is_not_alive_is_refused(node: Client) -> None:
    with pytest.raises(SessionNotAliveError):
        await registry_of(node).locks.lock("nobody", "x")
    with pytest.raises(ValueError, match="message path"):
        await registry_of(node).locks.lock("nobody", "a//b")


async def test_mutual_exclusion_under_contention(node: Client, tab: Tabs) -> None:
    locks = registry_of(node).locks
    sessions = [session_of(node, await tab()) for _ in range(20)]
    record: list[tuple[int, str]] = []
    inside = 0

    async def worker(session: Any, rounds: int) -> None:
        nonlocal inside
        for _ in range(rounds):
            async with await locks.lock(session, "shared") as lock:
                inside += 1
                assert inside == 1
                assert not record or record[-1][0] < lock.sequence
                record.append((lock.sequence, lock.owner))
                await asyncio.sleep(0)
                inside -= 1

    async with asyncio.timeout(20):
        await asyncio.gather(*(worker(s, 10) for s in sessions))
    assert len(record) == 200
    assert [s for s, _ in record] == sorted({s for s, _ in record})


# the ops
async def test_the_lock_ops(node: Client, tab: Tabs) -> None:
    one, two = await tab(), await tab()
    held = await one.ok("lock", name="page/7")
    assert (held["name"], held["owner"], held["scope"]) == ("page/7", one.handle, 0)
    assert await one.ok("lock", name="page/7") == held  # repeated: equal
    request_id = await two.send("lock", name="page/7", scope=1)
    info = await _info_when(one, "page/7", waiting=1)
    assert (info["owner"], info["sequence"]) == (one.handle, held["sequence"])
    assert info["queue"] in ([], [two.handle])
    # a lock wait is not bounded by request_timeout (0.5 s here)
    await asyncio.sleep(0.6)
    assert two.closed.is_set() is False
    wrong = await one.ok("unlock", name="page/7", sequence=held["sequence"] + 1)
    assert wrong == {"unlocked": False}
    assert await one.ok("unlock", name="page/7", sequence=held["sequence"]) == {
        "unlocked": True
    }
    granted = await two.reply(request_id)
    assert granted["data"]["owner"] == two.handle
    assert granted["data"]["scope"] == 1
    assert granted["data"]["sequence"] > held["sequence"]


async def _info_when(tab: WireTab, name: str, waiting: int) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def seen() -> bool:
        found.update(await tab.ok("lock_info", name=name))
        return bool(found["waiting"] == waiting)

    await until(seen)
    return found


async def test_a_cancelled_lock_request_is_answered_and_leaves_the_queue(
    node: Client, tab: Tabs
) -> None:
    one, two = await tab(), await tab()
    await one.ok("lock", name="c")
    request_id = await two.send("lock", name="c")
    await _info_when(one, "c", waiting=1)
    await two.ws.send_str(json.dumps({"op": "cancel", "request": request_id}))
    error = await two.reply(request_id)
    assert (error["code"], error["id"]) == ("cancelled", request_id)
    await _info_when(one, "c", waiting=0)
    # cancelling what is not in progress does nothing
    await two.ws.send_str(json.dumps({"op": "cancel", "request": 12345}))
    assert await two.ok("ping") == {}


async def test_a_tab_is_told_when_its_lock_is_lost(node: Client, tab: Tabs) -> None:
    one = await tab()
    held = await one.ok("lock", name="tell", scope=0)
    registry = registry_of(node)
    # the session ends (as new_session_ws_id does): its lock goes, and the
    # tab, still open, is told
    assert await registry.sessions.end(session_of(node, one))
    frame = await asyncio.wait_for(one.frames.get(), TIMEOUT)
    assert (frame["name"], frame["sequence"]) == ("tell", held["sequence"])
    assert "session ended" in frame["reason"]
    assert registry.locks.held_by(session_of(node, one), "tell") is None


async def test_lock_ops_pass_the_policy(aiohttp_client: AiohttpClient) -> None:
    asked: list[Action] = []

    def policy(request: web.Request, action: Action) -> bool:
        asked.append(action)
        return action.lock is not None and action.lock.startswith("docs/")

    node = await aiohttp_client(build_app(SessionWSRegistry(authorize=policy)))
    one = await open_tab(node, "/live")
    assert (await one.call("lock", name="admin/x"))["code"] == "forbidden"
    assert (await one.call("lock_info", name="admin/x"))["code"] == "forbidden"
    assert (await one.ok("lock", name="docs/x"))["owner"] == one.handle
    assert (asked[-1].op, asked[-1].permission, asked[-1].lock) == (
        "lock",
        "session_ws.acquire_lock",
        "docs/x",
    )
    denied = await aiohttp_client(build_app(SessionWSRegistry()))
    other = await open_tab(denied, "/live")
    assert (await other.call("lock", name="docs/x"))["code"] == "forbidden"


async def test_bad_lock_requests_get_clear_errors(node: Client, tab: Tabs) -> None:
    one = await tab()
    cases: list[dict[str, Any]] = [
        {"name": "a//b"},
        {"name": "ok", "scope": 7},
        {"name": "ok", "timeout": -1},
    ]
    for args in cases:
        assert (await one.call("lock", **args))["code"] == "bad_frame", args
    error = await one.call("lock", name="t", timeout=0.01)
    assert error["op"] == "result"  # free: granted at once
    other = await tab()
    error = await other.call("lock", name="t", timeout=0.05)
    assert error["code"] == "timeout"
    assert await other.ok("ping") == {}
