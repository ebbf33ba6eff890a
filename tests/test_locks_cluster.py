"""Session locks across a Redis cluster, and their faults, over the wire.

Node A runs in this process (a real aiohttp server with a Redis registry);
node B is its own OS process (``tests/cluster_node.py``, node TTL 1 s, a
policy that allows everything). Every tab is a raw protocol websocket
(``tests/wire.py``), of a session of its own unless it shares a login.

The holders write to a shared record in this process: a count of who is
inside and the grants in the order the holders saw them, so that an overlap,
a sequence that does not increase or a waiter served out of its turn shows.
Where the cluster may, by design, grant a lock before its old holder has heard
that it lost it (a stalled node, Redis restarted empty), the record is a
fenced resource instead: it refuses a write with a sequence below one it has
accepted. Faults: node B killed (SIGKILL) or stalled past its lease
(SIGSTOP/SIGCONT), Redis restarted empty. ``make soak`` runs the contention
and the cancel race many more times (``-m soak``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import RedisSessionWSRegistry
from aiohttp_session_ws.locks import LockInfo

from .apps import (
    Client,
    build_app,
    cookie_ws_id,
    logout,
    registry_of,
    session_cookie_header,
)
from .nodes import NODE_TTL, NodeProcess, StartNode, presence_written
from .redis_server import RedisServer
from .waiting import until
from .wire import WireTab, allow_all, open_tab

NAME = "jobs/shared"
LONG = 20.0
"""A bound far beyond what any wait here should take."""
PROMPT = 3.0
"""What "at once" means across nodes: about the node TTL (1 s), with room."""

Node = Client | NodeProcess


def registry(node: Client) -> RedisSessionWSRegistry:
    found = registry_of(node)
    assert isinstance(found, RedisSessionWSRegistry)
    return found


class Nodes:
    """The nodes, logins and tabs of one test; closes what it opened."""

    def __init__(self, aiohttp_client: AiohttpClient, start_node: StartNode) -> None:
        self._aiohttp_client = aiohttp_client
        self._start_node = start_node
        self.tabs: list[WireTab] = []
        self._browsers: list[aiohttp.ClientSession] = []

    async def a(self, url: str, prefix: str, **options: Any) -> Client:
        """Node A, in this process."""
        options.setdefault("node_ttl", NODE_TTL)
        options.setdefault("reconnect_max_delay", 0.5)
        options.setdefault("authorize", allow_all)
        found = RedisSessionWSRegistry(url, prefix=prefix, **options)
        return await self._aiohttp_client(
            build_app(found, routes=[web.get("/logout", logout)])
        )

    async def b(self, url: str, grace: float = 30.0) -> NodeProcess:
        """Node B, in its own OS process."""
        return await self._start_node(url, NODE_TTL, grace)

    async def login(self, a: Client) -> Client:
        """A browser of node A; its first tab makes the session its cookie keeps."""
        return await self._aiohttp_client(a.server)

    async def tab(self, node: Node, login: Client | None = None) -> WireTab:
        """A protocol tab on ``node``: of ``login``'s session, or of a new one."""
        if isinstance(node, NodeProcess):
            browser = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            self._browsers.append(browser)
            headers = session_cookie_header(login) if login is not None else {}
            tab = await open_tab(browser, node.url("/live"), headers=headers)
        else:
            browser_a = login if login is not None else await self.login(node)
            tab = await open_tab(browser_a, "/live")
        self.tabs.append(tab)
        return tab

    async def close(self) -> None:
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                await tab.close()
        for browser in self._browsers:
            await browser.close()


@pytest.fixture
async def nodes(
    aiohttp_client: AiohttpClient, start_node: StartNode
) -> AsyncIterator[Nodes]:
    found = Nodes(aiohttp_client, start_node)
    yield found
    await found.close()


# the shared record
@dataclass
class Grant:
    """One grant, as its holder saw it."""

    sequence: int
    owner: str
    at: float
    """When the holder heard of it (``time.monotonic()``)."""
    queue: tuple[str, ...] = ()
    """The waiters, first first, as ``lock_info`` told the holder meanwhile."""


class Record:
    """What the holders wrote while they held the lock; what went wrong."""

    def __init__(self) -> None:
        self.grants: list[Grant] = []
        self.inside: set[str] = set()
        self.violations: list[str] = []

    def enter(self, owner: str, sequence: int) -> Grant:
        if self.inside:
            self.violations.append(
                f"{owner} #{sequence} got in while {sorted(self.inside)} held it"
            )
        if self.grants and sequence <= self.grants[-1].sequence:
            self.violations.append(
                f"{owner} #{sequence} came after #{self.grants[-1].sequence}"
            )
        self.inside.add(owner)
        grant = Grant(sequence, owner, time.monotonic())
        self.grants.append(grant)
        return grant

    def leave(self, owner: str) -> None:
        self.inside.discard(owner)

    def out_of_turn(self) -> list[str]:
        """The grants that did not follow the queue a holder saw.

        While a session holds the lock, its queue only grows at its end (no
        waiter here cancels, and every node lives): the next grants must go
        to the sessions it showed, in that order.
        """
        found = []
        for i, grant in enumerate(self.grants):
            after = [g.owner for g in self.grants[i + 1 : i + 1 + len(grant.queue)]]
            if after != list(grant.queue):
                found.append(f"#{grant.sequence} saw {grant.queue}, then {after}")
        return found


class Fence:
    """A resource guarded by the lock: refuses a write below the highest sequence."""

    def __init__(self) -> None:
        self.highest = 0
        self.accepted: list[tuple[int, str]] = []

    def write(self, owner: str, sequence: int) -> bool:
        if sequence < self.highest:
            return False
        self.highest = sequence
        self.accepted.append((sequence, owner))
        return True

    def interleaved(self) -> bool:
        """Whether two holders' accepted writes interleave (or share a sequence)."""
        owners: dict[int, str] = {}
        for sequence, owner in self.accepted:
            if owners.setdefault(sequence, owner) != owner:
                return True
        sequences = [sequence for sequence, _ in self.accepted]
        return sequences != sorted(sequences)


Holding = Callable[[Grant], Awaitable[None]]


async def take_turn(
    tab: WireTab,
    record: Record,
    *,
    scope: int = 0,
    while_holding: Holding | None = None,
) -> Grant:
    """Take the lock, write to the record, look at the queue, unlock."""
    frame = await tab.call("lock", wait=LONG, name=NAME, scope=scope)
    assert frame["op"] == "result", frame
    assert frame["data"]["owner"] == tab.handle
    grant = record.enter(tab.handle, frame["data"]["sequence"])
    info = await tab.ok("lock_info", name=NAME)
    if (info["owner"], info["sequence"]) != (tab.handle, grant.sequence):
        record.violations.append(f"{tab.handle} #{grant.sequence} not held: {info}")
    grant.queue = tuple(info["queue"])
    if while_holding is not None:
        await while_holding(grant)
    record.leave(tab.handle)
    unlocked = await tab.ok("unlock", name=NAME, sequence=grant.sequence)
    assert unlocked == {"unlocked": True}, (grant, unlocked)
    return grant


async def lock_info(tab: WireTab) -> dict[str, Any]:
    found: dict[str, Any] = await tab.ok("lock_info", name=NAME)
    return found


async def queued(node: Client, count: int) -> LockInfo:
    """Wait (bounded) until ``count`` sessions wait for the lock; its info.

    It asks node A's server API: a tab asking that often would pass its
    rate limit.
    """
    found: list[LockInfo] = []

    async def enough() -> bool:
        found.append(await registry(node).locks.info(NAME))
        return found[-1].waiting >= count

    await until(enough)
    return found[-1]


async def settled_free(node: Client) -> None:
    """Wait (bounded) until nobody holds the lock and nobody waits."""

    async def free() -> bool:
        info = await registry(node).locks.info(NAME)
        return info.owner is None and info.waiting == 0

    await until(free, PROMPT)


async def cancel(tab: WireTab, request_id: int) -> None:
    await tab.ws.send_str(json.dumps({"op": "cancel", "request": request_id}))


# 1. mutual exclusion under contention
async def contend(
    nodes: Nodes, url: str, prefix: str, sessions: int, rounds: int, budget: float
) -> Record:
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    tabs = [await nodes.tab(a if n % 2 else b) for n in range(sessions)]
    assert len({tab.handle for tab in tabs}) == sessions
    record = Record()

    async def worker(tab: WireTab) -> None:
        for _ in range(rounds):
            await take_turn(tab, record)

    started = time.monotonic()
    async with asyncio.timeout(budget):
        await asyncio.gather(*(worker(tab) for tab in tabs))
    took = time.monotonic() - started
    print(f"{sessions * rounds} grants across two nodes in {took:.1f} s")
    assert await lock_info(tabs[0]) == {
        "name": NAME,
        "owner": None,
        "sequence": None,
        "scope": None,
        "waiting": 0,
        "queue": [],
    }
    stats = registry(a).locks.stats()
    assert stats == {"locks_held": 0, "lock_waits": 0}
    return record


def check_exclusion(record: Record, total: int) -> None:
    assert record.violations == []
    assert len(record.grants) == total
    sequences = [g.sequence for g in record.grants]
    assert sequences == sorted(set(sequences))
    assert record.out_of_turn() == []
    # the queue was seen non-empty often: the FIFO check had something to check
    assert sum(1 for g in record.grants if len(g.queue) >= 2) > total // 4


async def test_mutual_exclusion_under_contention_across_two_nodes(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    record = await contend(nodes, redis_server.url, prefix, 20, 25, budget=20)
    check_exclusion(record, 500)


@pytest.mark.soak
async def test_soak_mutual_exclusion_under_heavy_contention(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    record = await contend(nodes, redis_server.url, prefix, 50, 80, budget=180)
    check_exclusion(record, 4000)


# 2. the process node killed while one of its sessions holds the lock
@pytest.mark.parametrize("scope", [0, 1], ids=["session", "connection"])
async def test_a_killed_holder_s_lock_goes_to_the_next_waiter_within_the_node_ttl(
    nodes: Nodes, redis_server: RedisServer, prefix: str, scope: int
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    on_a = [await nodes.tab(a) for _ in range(4)]
    on_b = [await nodes.tab(b) for _ in range(4)]
    handles_a = {tab.handle for tab in on_a}
    record = Record()
    b_grants = 0
    killed: list[tuple[Grant, float]] = []

    async def kill_when_due(grant: Grant) -> None:
        nonlocal b_grants
        b_grants += 1
        if b_grants != 8:
            return

        async def a_waits() -> bool:
            return bool(handles_a & set((await registry(a).locks.info(NAME)).queue))

        await until(a_waits)
        b.process.send_signal(signal.SIGKILL)
        await b.process.wait()
        killed.append((grant, time.monotonic()))

    async def worker_b(tab: WireTab) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            for _ in range(30):
                await take_turn(tab, record, scope=scope, while_holding=kill_when_due)

    async def worker_a(tab: WireTab) -> None:
        for _ in range(15):
            await take_turn(tab, record, scope=scope)

    async with asyncio.timeout(LONG):
        await asyncio.gather(*map(worker_b, on_b), *map(worker_a, on_a))
    [(victim, killed_at)] = killed
    assert record.violations == []
    index = record.grants.index(victim)
    after = record.grants[index + 1]
    assert after.owner in handles_a
    assert after.sequence > victim.sequence
    assert after.at - killed_at < PROMPT, f"granted {after.at - killed_at:.1f} s later"
    assert all(g.owner in handles_a for g in record.grants[index + 1 :])
    assert sum(1 for g in record.grants if g.owner in handles_a) == 4 * 15
    await settled_free(a)
    assert registry(a).locks.stats() == {"locks_held": 0, "lock_waits": 0}


# 3. Redis restarted empty while a lock is held
@pytest.mark.parametrize("holder_on", ["a", "b"])
async def test_redis_restarted_empty_loses_the_lock_and_regrants_it_fenced(
    nodes: Nodes, own_redis_server: RedisServer, prefix: str, holder_on: str
) -> None:
    url = own_redis_server.url
    a = await nodes.a(url, prefix, command_timeout=1.0)
    b = await nodes.b(url)
    holder = await nodes.tab(a if holder_on == "a" else b)
    waiters = [await nodes.tab(a), await nodes.tab(b)]
    fence = Fence()
    held = await holder.ok("lock", name=NAME)
    assert fence.write(holder.handle, held["sequence"])
    asked = {tab: await tab.send("lock", name=NAME) for tab in waiters}
    await queued(a, 2)
    own_redis_server.restart()  # empty: the lock, its queue, its clock are gone
    # the holder is told, after its node's resync; it never unlocked
    lost = await asyncio.wait_for(holder.frames.get(), LONG)
    assert (lost["op"], lost["name"], lost["sequence"]) == (
        "lock_lost",
        NAME,
        held["sequence"],
    )
    assert "lost" in lost["reason"]
    # the waiters queued again: one holds it, the other waits behind it
    replies = {
        asyncio.ensure_future(tab.reply(request_id, LONG)): tab
        for tab, request_id in asked.items()
    }
    done, pending = await asyncio.wait(
        replies, timeout=LONG, return_when=asyncio.FIRST_COMPLETED
    )
    assert len(done) == 1, "both waiters hold the lock at once"
    (first_reply,) = done
    first = replies[first_reply]
    granted = first_reply.result()
    assert granted["op"] == "result", granted
    assert granted["data"]["sequence"] > held["sequence"]  # fenced across the restart
    assert fence.write(first.handle, granted["data"]["sequence"])
    assert not fence.write(holder.handle, held["sequence"])  # the stale holder
    # the other waiter queues again once its own node has resynced
    info = await queued(a, 1)
    assert info.owner == first.handle
    assert await holder.ok("unlock", name=NAME, sequence=held["sequence"]) == {
        "unlocked": False
    }
    assert await first.ok(
        "unlock", name=NAME, sequence=granted["data"]["sequence"]
    ) == {"unlocked": True}
    (second_reply,) = pending
    second = replies[second_reply]
    then = await asyncio.wait_for(second_reply, PROMPT)
    assert then["data"]["sequence"] > granted["data"]["sequence"]
    assert fence.write(second.handle, then["data"]["sequence"])
    assert not fence.interleaved()


# 4. the process node stalled past its lease while its session holds the lock
async def test_a_node_stalled_past_its_lease_loses_its_lock_and_hears_it_after(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    holder = await nodes.tab(b)
    waiter = await nodes.tab(a)
    fence = Fence()
    held = await holder.ok("lock", name=NAME, scope=1)
    assert held["scope"] == 1
    assert fence.write(holder.handle, held["sequence"])
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    b.process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # A reaps B once its lease ran out: the waiter gets the lock
        granted = await waiter.reply(request_id, LONG)
        took = time.monotonic() - stopped_at
        assert granted["op"] == "result", granted
        assert took < PROMPT, f"granted only {took:.1f} s after the stall"
        sequence = granted["data"]["sequence"]
        assert sequence > held["sequence"]
        assert fence.write(waiter.handle, sequence)
        # the stalled holder still believes it holds it: the fence refuses it
        assert holder.frames.empty()
        assert not fence.write(holder.handle, held["sequence"])
        info = await lock_info(waiter)
        assert (info["owner"], info["sequence"]) == (waiter.handle, sequence)
    finally:
        b.process.send_signal(signal.SIGCONT)
    # B finds itself reaped, resyncs, checks its locks: the holder is told
    lost = await asyncio.wait_for(holder.frames.get(), LONG)
    assert (lost["op"], lost["name"], lost["sequence"]) == (
        "lock_lost",
        NAME,
        held["sequence"],
    )
    assert not fence.write(holder.handle, held["sequence"])
    assert await holder.ok("unlock", name=NAME, sequence=held["sequence"]) == {
        "unlocked": False
    }
    info = await lock_info(holder)
    assert (info["owner"], info["sequence"]) == (waiter.handle, sequence)
    # the resumed node's session can queue again, and is served after
    again_id = await holder.send("lock", name=NAME)
    await queued(a, 1)
    assert await waiter.ok("unlock", name=NAME, sequence=sequence) == {"unlocked": True}
    again = await holder.reply(again_id, PROMPT)
    assert again["data"]["sequence"] > sequence
    assert fence.write(holder.handle, again["data"]["sequence"])
    assert not fence.interleaved()


# 5. both scopes across nodes
async def shared_session(
    nodes: Nodes, a: Client, b: NodeProcess
) -> tuple[Client, WireTab, WireTab]:
    """A session with a tab on each node: its login (on A) and the tabs."""
    login = await nodes.login(a)
    on_a = await nodes.tab(a, login)
    on_b = await nodes.tab(b, login)
    assert on_a.handle == on_b.handle
    return login, on_a, on_b


@pytest.mark.parametrize("logout_on", ["a", "b"])
async def test_a_session_scoped_lock_outlives_one_node_s_tab_and_ends_with_logout(
    nodes: Nodes,
    redis_server: RedisServer,
    prefix: str,
    browser: aiohttp.ClientSession,
    logout_on: str,
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    login, on_a, on_b = await shared_session(nodes, a, b)
    held = await on_b.ok("lock", name=NAME)  # taken on B, for the session
    waiter = await nodes.tab(a)
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    await on_b.close()  # the tab that took it; the session lives on A
    await presence_written(url, prefix, cookie_ws_id(login), b.node_id, present=False)
    info = await lock_info(waiter)
    assert (info["owner"], info["sequence"], info["waiting"]) == (
        on_a.handle,
        held["sequence"],
        1,
    )
    if logout_on == "a":
        response = await login.get("/logout")
    else:
        response = await browser.get(
            b.url("/logout"), headers=session_cookie_header(login)
        )
    assert response.status == 200
    response.release()
    granted = await waiter.reply(request_id, PROMPT)
    assert granted["op"] == "result", granted
    assert granted["data"]["sequence"] > held["sequence"]
    await asyncio.wait_for(on_a.closed.wait(), PROMPT)  # logged out everywhere


@pytest.mark.parametrize("last_on", ["a", "b"])
async def test_the_grace_period_ending_releases_a_session_scoped_lock(
    nodes: Nodes, redis_server: RedisServer, prefix: str, last_on: str
) -> None:
    url = redis_server.url
    grace = 1.0
    a = await nodes.a(url, prefix, grace_period=grace)
    b = await nodes.b(url, grace=grace)
    login, on_a, on_b = await shared_session(nodes, a, b)
    session_id = cookie_ws_id(login)
    held = await on_a.ok("lock", name=NAME)
    waiter = await nodes.tab(b)
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    first, last = (on_b, on_a) if last_on == "a" else (on_a, on_b)
    first_node, last_node = (
        (b.node_id, registry(a).node_id)
        if last_on == "a"
        else (registry(a).node_id, b.node_id)
    )
    await first.close()
    await presence_written(url, prefix, session_id, first_node, present=False)
    assert (await lock_info(waiter))["owner"] == on_a.handle
    closed_at = time.monotonic()
    await last.close()  # no connection left: the grace period starts
    await presence_written(url, prefix, session_id, last_node, present=False)
    info = await lock_info(waiter)
    assert (info["owner"], info["sequence"]) == (on_a.handle, held["sequence"])
    granted = await waiter.reply(request_id, grace + PROMPT)
    took = time.monotonic() - closed_at
    assert granted["op"] == "result", granted
    assert granted["data"]["sequence"] > held["sequence"]
    assert took >= grace - 0.05, f"released {took:.2f} s after the last close"


async def test_a_connection_scoped_lock_goes_with_its_connection_not_the_other_node_s(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    login, on_a, on_b = await shared_session(nodes, a, b)
    also_on_a = await nodes.tab(a, login)
    session_id = cookie_ws_id(login)
    held = await on_b.ok("lock", name=NAME, scope=1)
    waiter = await nodes.tab(a)
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    await on_a.close()  # a connection of the session on the other node
    await until(lambda: len(registry(a).connections(session_id)) == 1)
    info = await lock_info(waiter)
    assert (info["owner"], info["sequence"], info["scope"]) == (
        on_b.handle,
        held["sequence"],
        1,
    )
    await on_b.close()  # its own connection: the session lives on, on A
    granted = await waiter.reply(request_id, PROMPT)
    assert granted["op"] == "result", granted
    assert granted["data"]["sequence"] > held["sequence"]
    # the session is still alive: it can queue for the lock again
    again_id = await also_on_a.send("lock", name=NAME)
    await queued(a, 1)
    assert await waiter.ok(
        "unlock", name=NAME, sequence=granted["data"]["sequence"]
    ) == {"unlocked": True}
    again = await also_on_a.reply(again_id, PROMPT)
    assert again["data"]["sequence"] > granted["data"]["sequence"]


@pytest.mark.parametrize("how", ["unlocked", "weakened-then-closed"])
async def test_a_lock_the_session_gave_up_on_one_node_is_not_still_held_on_the_other(
    nodes: Nodes, redis_server: RedisServer, prefix: str, how: str
) -> None:
    """The session's tabs on A and B both took the lock (an equal lock on each
    node). It is released on B: by an unlock, or by closing B's connection
    after B's call weakened it to connection scope. Then the waiter holds it,
    so A must no longer hand the old grant to the session's tab."""
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    _, on_a, on_b = await shared_session(nodes, a, b)
    held = await on_a.ok("lock", name=NAME)
    scope = 1 if how != "unlocked" else 0
    again = await on_b.ok("lock", name=NAME, scope=scope)
    assert again["sequence"] == held["sequence"]
    waiter = await nodes.tab(b)
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    if how == "unlocked":
        assert await on_b.ok("unlock", name=NAME, sequence=held["sequence"]) == {
            "unlocked": True
        }
    else:
        assert (await lock_info(waiter))["scope"] == 1
        await on_b.close()
    granted = await waiter.reply(request_id, PROMPT)
    assert granted["op"] == "result", granted
    sequence = granted["data"]["sequence"]
    assert (await lock_info(waiter))["owner"] == waiter.handle
    # node A's tab of the session: asking again must wait behind the holder
    frame = await on_a.call("lock", name=NAME, timeout=0.5)
    assert frame["op"] == "error", (
        f"the session got #{frame.get('data', {}).get('sequence')} again while "
        f"{waiter.handle} holds #{sequence}"
    )
    assert frame["code"] == "timeout"


async def test_a_session_reconnected_to_the_other_node_can_unlock_its_lock(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    """A tab takes a session-scoped lock on A, loses its connection and comes
    back on B within the grace period (the Python client then sends the
    unlock it deferred): the unlock must release the session's lock, as an
    unlock from any tab of the session does on one node."""
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    login = await nodes.login(a)
    before = await nodes.tab(a, login)
    held = await before.ok("lock", name=NAME)
    waiter = await nodes.tab(a)
    request_id = await waiter.send("lock", name=NAME)
    await queued(a, 1)
    await before.close()
    after = await nodes.tab(b, login)  # the reconnection, on the other node
    assert after.handle == before.handle
    info = await lock_info(after)
    assert (info["owner"], info["sequence"]) == (after.handle, held["sequence"])
    unlocked = await after.ok("unlock", name=NAME, sequence=held["sequence"])
    assert unlocked == {"unlocked": True}, "the session's lock stays held"
    granted = await waiter.reply(request_id, PROMPT)
    assert granted["data"]["sequence"] > held["sequence"]


# 6. a cancel or a timeout racing a release on the other node
async def race_round(
    node_a: Client,
    waiter: WireTab,
    holder: WireTab,
    following: WireTab | None,
    how: str,
    outcomes: dict[str, int],
) -> None:
    held = await holder.ok("lock", name=NAME)
    timeout = 0.1
    args: dict[str, Any] = {"timeout": timeout} if how == "timeout" else {}
    request_id = await waiter.send("lock", name=NAME, **args)
    await queued(node_a, 1)
    follow_id = None
    if following is not None:
        follow_id = await following.send("lock", name=NAME)
        await queued(node_a, 2)

    async def give_up() -> None:
        if how == "cancel":
            # a jitter around the release, to land on either side of it: the
            # race has no event to await
            await asyncio.sleep(random.uniform(0, 0.004))
            await cancel(waiter, request_id)

    async def release() -> None:
        if how == "timeout":
            await asyncio.sleep(random.uniform(0.6, 1.4) * timeout)  # see above
        else:
            await asyncio.sleep(random.uniform(0, 0.004))  # see above
        assert await holder.ok("unlock", name=NAME, sequence=held["sequence"]) == {
            "unlocked": True
        }

    await asyncio.gather(give_up(), release())
    frame = await waiter.reply(request_id, PROMPT)
    if frame["op"] == "result":
        outcomes["granted"] += 1
        assert frame["data"]["sequence"] > held["sequence"]
        assert await waiter.ok(
            "unlock", name=NAME, sequence=frame["data"]["sequence"]
        ) == {"unlocked": True}
    else:
        assert frame["code"] == ("cancelled" if how == "cancel" else "timeout"), frame
        outcomes[frame["code"]] += 1
    if following is not None:
        assert follow_id is not None
        then = await following.reply(follow_id, PROMPT)
        assert then["op"] == "result", then
        assert await following.ok(
            "unlock", name=NAME, sequence=then["data"]["sequence"]
        ) == {"unlocked": True}
    await settled_free(node_a)  # never leaked: free, nobody waiting


async def race(
    nodes: Nodes,
    url: str,
    prefix: str,
    waiter_on: str,
    how: str,
    rounds: int,
) -> dict[str, int]:
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    here, there = (a, b) if waiter_on == "a" else (b, a)
    # the rounds take turns among a few sessions of each part, so that no tab
    # passes its rate limit (50 frames/s)
    pool = max(1, rounds // 40)
    waiters = [await nodes.tab(here) for _ in range(pool)]
    holders = [await nodes.tab(there) for _ in range(pool)]
    followers = [await nodes.tab(there) for _ in range(pool)]
    outcomes = {"granted": 0, "cancelled": 0, "timeout": 0}
    for n in range(rounds):
        turn = n % pool
        following = followers[turn] if n % 2 else None
        await race_round(a, waiters[turn], holders[turn], following, how, outcomes)
    print(f"{how} on {waiter_on} racing a release: {outcomes}")
    assert registry(a).locks.stats() == {"locks_held": 0, "lock_waits": 0}
    for waiter in waiters:
        assert await waiter.ok("ping") == {}
    return outcomes


@pytest.mark.parametrize("waiter_on", ["a", "b"])
@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_wait_given_up_as_the_other_node_releases_never_leaks_the_lock(
    nodes: Nodes, redis_server: RedisServer, prefix: str, waiter_on: str, how: str
) -> None:
    rounds = 40 if how == "cancel" else 16
    outcomes = await race(nodes, redis_server.url, prefix, waiter_on, how, rounds)
    assert sum(outcomes.values()) == rounds


@pytest.mark.soak
@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_soak_waits_given_up_as_a_release_lands_never_leak(
    nodes: Nodes, redis_server: RedisServer, prefix: str, how: str
) -> None:
    rounds = 400 if how == "cancel" else 100
    outcomes = await race(nodes, redis_server.url, prefix, "a", how, rounds)
    assert sum(outcomes.values()) == rounds
    assert outcomes["granted"] > 0  # the race was hit both ways
    assert outcomes["granted"] < rounds
