"""The lock store's contract, on memory hubs and on a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest
import redis.asyncio as aioredis

from aiohttp_session_ws import MemoryBackend
from aiohttp_session_ws.backends.base import (
    LOCK_GRANTED,
    LOCK_LOST,
    SCOPE_CONNECTION,
    SCOPE_SESSION,
    LockGrant,
    LockState,
    node_frame,
)

from .logwait import watch_log
from .redis_server import RedisServer
from .test_backends_sessions_memory import TIMEOUT, Hub, Node, everything
from .test_backends_sessions_redis import REDIS_LOG, Cluster, die

GRACE = 60.0
"""Long enough that no grace period runs out during a test (unless 0)."""


class Nodes(Protocol):
    """The nodes of one test's cluster (a memory hub, or a Redis)."""

    nodes: list[Node]

    async def node(self, name: str, grace: float = ...) -> Node: ...

    async def until(self, check: Callable[[], bool]) -> None: ...


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Nodes]:
    if request.param == "memory":
        hub = Hub()
        yield hub
        for node in hub.nodes:
            await node.backend.stop()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = Cluster(server.url, prefix)
        yield made
        await made.close()


@pytest.fixture
async def redis_cluster(
    redis_server: RedisServer, prefix: str
) -> AsyncIterator[Cluster]:
    made = Cluster(redis_server.url, prefix)
    yield made
    await made.close()


async def two(cluster: Nodes, grace: float = GRACE) -> tuple[Node, Node]:
    return await cluster.node("a", grace), await cluster.node("b", grace)


async def written(*nodes: Node) -> None:
    """Wait until the nodes' presence notes so far are in the store."""
    for node in nodes:
        await node.backend.session_nodes("s:flush")


async def acquire(
    node: Node,
    name: str,
    session: str,
    scope: int = SCOPE_SESSION,
    connection: str | None = None,
    floor: int = 0,
) -> LockGrant | None:
    return await node.backend.lock_store.acquire(
        name, session, scope, connection, floor
    )


async def take(node: Node, name: str, session: str, **options: Any) -> LockGrant:
    """Acquire a lock that must be granted at once."""
    grant = await acquire(node, name, session, **options)
    assert grant is not None
    return grant


async def state(node: Node, name: str) -> LockState:
    return await node.backend.lock_store.state(name)


async def frame(node: Node) -> tuple[str, dict[str, Any]]:
    """The kind and body of the next frame published to the node (bounded)."""
    data = json.loads(await node.next_frame())
    assert (data["from"], data["call"]) == ("", 0)
    return data["kind"], data["body"]


async def granted_frame(node: Node) -> LockGrant:
    """The next frame to the node is a LOCK_GRANTED: its grant."""
    raw = await node.next_frame()
    data = json.loads(raw)
    assert data["kind"] == LOCK_GRANTED
    body = data["body"]
    grant = LockGrant(
        body["name"],
        body["sequence"],
        body["session"],
        body["scope"],
        body["connection"] or None,
    )
    assert data == json.loads(node_frame(LOCK_GRANTED, _body(grant)))  # its format
    return grant


def _body(grant: LockGrant) -> dict[str, object]:
    return {
        "name": grant.name,
        "sequence": grant.sequence,
        "session": grant.session,
        "scope": grant.scope,
        "connection": grant.connection or "",
    }


def lost(grant: LockGrant) -> tuple[str, dict[str, Any]]:
    """The LOCK_LOST frame of a grant, as :func:`frame` reads it."""
    body = {"name": grant.name, "sequence": grant.sequence, "session": grant.session}
    return LOCK_LOST, body


async def nothing_more(node: Node, via: Node) -> None:
    """No frame came to ``node`` before a marker published now (order kept)."""
    assert await via.backend.publish(node.name, b"marker")
    assert await node.next_frame() == b"marker"


# grants and scopes
async def test_a_free_lock_is_granted_and_asking_again_returns_it(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")  # acquire sees it at once
    grant = await take(a, "L", "s:1")
    assert grant.sequence > 0
    assert (grant.name, grant.session, grant.scope, grant.connection) == (
        "L",
        "s:1",
        SCOPE_SESSION,
        None,
    )
    assert await acquire(a, "L", "s:1") == grant
    assert await acquire(b, "L", "s:1") == grant  # from another node too
    assert await state(b, "L") == LockState("L", grant, 0)
    await nothing_more(a, b)
    await nothing_more(b, a)


async def test_the_weaker_scope_wins(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    grant = await take(a, "L", "s:1")
    weaker = await take(a, "L", "s:1", scope=SCOPE_CONNECTION, connection="c1")
    assert weaker == LockGrant("L", grant.sequence, "s:1", SCOPE_CONNECTION, "c1")
    # asked again with session scope: it stays connection-scoped
    assert await acquire(a, "L", "s:1") == weaker
    assert await acquire(a, "L", "s:1", SCOPE_CONNECTION, "c9") == weaker
    # a queued entry keeps its place, and the weaker scope
    assert await acquire(b, "L", "s:2", SCOPE_CONNECTION, "c2") is None
    assert await acquire(b, "L", "s:2") is None
    assert (await state(a, "L")).waiting == 1
    assert await a.backend.lock_store.release("L", "s:1", grant.sequence)
    handed = await granted_frame(b)
    assert (handed.session, handed.scope, handed.connection) == (
        "s:2",
        SCOPE_CONNECTION,
        "c2",
    )
    # a session-scoped entry takes the new values (here: connection scope)
    a.backend.add_connection("s:3", "c3")
    assert await acquire(a, "L", "s:3") is None
    assert await acquire(a, "L", "s:3", SCOPE_CONNECTION, "c3") is None
    assert await b.backend.lock_store.release("L", "s:2", handed.sequence)
    third = await granted_frame(a)
    assert (third.session, third.scope, third.connection) == (
        "s:3",
        SCOPE_CONNECTION,
        "c3",
    )


async def test_waiters_are_served_first_come_first_served_across_nodes(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster)
    for node, session in [(a, "s:0"), (b, "s:1"), (a, "s:2"), (b, "s:3")]:
        node.backend.add_connection(session, f"c-{session}")
    holder = await take(a, "L", "s:0")
    assert await acquire(b, "L", "s:1") is None
    assert await acquire(a, "L", "s:2", SCOPE_CONNECTION, "c-s:2") is None
    assert await acquire(b, "L", "s:3") is None
    assert await acquire(b, "L", "s:1") is None  # it keeps its place
    assert await state(a, "L") == LockState("L", holder, 3, ("s:1", "s:2", "s:3"))
    sequences = [holder.sequence]
    order = [(b, "s:1"), (a, "s:2"), (b, "s:3")]
    holder_node = a
    for i, (node, session) in enumerate(order):
        # released by the node that asked: no other node to tell of a loss
        store = holder_node.backend.lock_store
        assert await store.release("L", holder.session, holder.sequence)
        holder, holder_node = await granted_frame(node), node
        assert holder.session == session
        rest = tuple(later for _, later in order[i + 1 :])
        assert await state(b, "L") == LockState("L", holder, len(rest), rest)
        sequences.append(holder.sequence)
        # exactly one frame, to the waiter's node only
        await nothing_more(a, b)
        await nothing_more(b, a)
    assert holder.scope == SCOPE_SESSION
    assert sequences == sorted(set(sequences))
    assert await b.backend.lock_store.release("L", "s:3", holder.sequence)
    assert await state(a, "L") == LockState("L", None, 0)
    await nothing_more(a, b)
    await nothing_more(b, a)


async def test_a_session_waiting_on_two_nodes_has_two_entries(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:0", "c0")
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    holder = await take(a, "L", "s:0")
    assert await acquire(b, "L", "s:1") is None
    assert await acquire(a, "L", "s:1") is None
    assert await state(a, "L") == LockState("L", holder, 2, ("s:1", "s:1"))
    assert await a.backend.lock_store.release("L", "s:0", holder.sequence)
    first = await granted_frame(b)  # b's entry came first
    assert first.session == "s:1"
    await nothing_more(a, b)
    # a's entry waits on: the session's call there is served when b's lets go
    assert await state(a, "L") == LockState("L", first, 1, ("s:1",))
    assert await a.backend.lock_store.cancel("L", "s:1") == first
    assert (await state(a, "L")).waiting == 0


# cancel and release
async def test_cancel_withdraws_a_queued_entry(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    holder = await take(a, "L", "s:1")
    assert await acquire(b, "L", "s:2") is None
    assert await a.backend.lock_store.cancel("L", "s:2") is None  # a has no entry
    assert (await state(a, "L")).waiting == 1
    assert await b.backend.lock_store.cancel("L", "s:2") is None
    assert await state(a, "L") == LockState("L", holder, 0)
    assert await b.backend.lock_store.cancel("L", "s:2") is None  # again: nothing
    assert await b.backend.lock_store.cancel("free", "s:2") is None
    assert await a.backend.lock_store.release("L", "s:1", holder.sequence)
    assert await state(a, "L") == LockState("L", None, 0)
    await nothing_more(b, a)  # nobody was granted it


async def test_cancel_after_the_grant_returns_it(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    holder = await take(a, "L", "s:1")
    assert await acquire(b, "L", "s:2", SCOPE_CONNECTION, "c2") is None
    assert await a.backend.lock_store.release("L", "s:1", holder.sequence)
    # the grant was made before the cancel; its frame may still be on its way
    grant = await b.backend.lock_store.cancel("L", "s:2")
    assert grant is not None
    assert (grant.session, grant.scope, grant.connection) == (
        "s:2",
        SCOPE_CONNECTION,
        "c2",
    )
    assert await granted_frame(b) == grant
    assert await state(a, "L") == LockState("L", grant, 0)  # the caller's to release
    assert await b.backend.lock_store.release("L", "s:2", grant.sequence)


async def test_release_needs_the_holder_and_its_sequence(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    holder = await take(a, "L", "s:1")
    assert await acquire(b, "L", "s:2") is None
    store = b.backend.lock_store
    assert not await store.release("L", "s:1", holder.sequence - 1)
    assert not await store.release("L", "s:1", holder.sequence + 1)
    assert not await store.release("L", "s:2", holder.sequence)  # not its lock
    assert not await store.release("free", "s:1", holder.sequence)
    assert await state(a, "L") == LockState("L", holder, 1, ("s:2",))
    await nothing_more(b, a)
    assert await store.release("L", "s:1", holder.sequence)  # from any node
    assert not await store.release("L", "s:1", holder.sequence)  # once
    assert (await granted_frame(b)).session == "s:2"


# sequences
async def test_sequences_grow_for_every_grant(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    last: dict[str, int] = {}
    issued = 0
    for i in range(40):
        node, session = (a, "s:1") if i % 2 else (b, "s:2")
        name = f"L{i % 3}"
        grant = await take(node, name, session)
        assert grant.sequence > last.get(name, 0)
        assert grant.sequence > issued  # the store's clock: over every name
        last[name] = issued = grant.sequence
        assert await node.backend.lock_store.release(name, session, grant.sequence)
        assert await state(node, name) == LockState(name, None, 0)  # forgotten
    # the floor, the largest sequence the caller has seen
    floor = issued + 10**9
    grant = await take(a, "L0", "s:1", floor=floor)
    assert grant.sequence == floor + 1
    assert await a.backend.lock_store.release("L0", "s:1", grant.sequence)
    # forgotten, yet the next grant of any name goes on from there
    assert (await take(b, "other", "s:2")).sequence > floor + 1
    if isinstance(a.backend, MemoryBackend):
        assert "L0" not in a.backend.hub.locks.locks


async def test_sequences_go_on_upwards_after_redis_restarted_empty(
    own_redis_server: RedisServer, prefix: str
) -> None:
    cluster = Cluster(own_redis_server.url, prefix)
    try:
        a = await cluster.node("a", grace=GRACE, reconnect_max_delay=0.2)
        a.backend.add_connection("s:1", "c1")
        old = [(await take(a, f"L{i}", "s:1")).sequence for i in range(5)]
        assert old == sorted(set(old))
        back = a.reconnects
        admin = aioredis.Redis.from_url(own_redis_server.url)
        try:
            await admin.flushall()
        finally:
            await admin.aclose()
        await cluster.until(lambda: a.reconnects > back)  # rewritten: alive again
        again = await take(a, "L0", "s:1")
        assert again.sequence > max(old)  # at least Redis TIME in µs
        ahead = await take(a, "L1", "s:1", floor=again.sequence + 10**9)
        assert ahead.sequence == again.sequence + 10**9 + 1
    finally:
        await cluster.close()


# what the store releases on its own
async def test_a_session_that_ends_loses_its_locks_and_entries(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    b.backend.add_connection("s:2", "c3")
    a.backend.add_connection("s:3", "c4")
    mine = await take(a, "L1", "s:1")
    assert await acquire(b, "L1", "s:1") == mine  # b asked too: it is told
    theirs = await take(a, "L2", "s:3")
    assert await acquire(a, "L2", "s:1") is None
    assert await acquire(b, "L2", "s:1") is None
    assert await acquire(b, "L1", "s:2") is None
    assert (await state(a, "L1")).queue == ("s:2",)
    assert (await state(a, "L2")).queue == ("s:1", "s:1")
    assert await b.backend.session_store.end("s:1")
    assert await frame(a) == lost(mine)
    assert await frame(b) == lost(mine)
    handed = await granted_frame(b)
    assert (handed.name, handed.session) == ("L1", "s:2")
    assert handed.sequence > mine.sequence
    assert await state(a, "L1") == LockState("L1", handed, 0)
    assert await state(a, "L2") == LockState("L2", theirs, 0)  # its entries went
    await nothing_more(a, b)
    await nothing_more(b, a)
    with pytest.raises(LookupError):
        await acquire(a, "L3", "s:1")


async def test_a_grace_period_that_runs_out_releases_the_locks(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster, grace=0)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    mine = await take(a, "L", "s:1", scope=SCOPE_CONNECTION, connection="c1")
    assert await acquire(b, "L", "s:2") is None
    a.backend.remove_connection("s:1", "c1")  # its last: it ends (no grace)
    await written(a)
    assert await frame(a) == lost(mine)
    handed = await granted_frame(b)
    assert (handed.session, handed.scope) == ("s:2", SCOPE_SESSION)
    await nothing_more(b, a)
    assert await state(b, "L") == LockState("L", handed, 0)


async def test_a_grace_period_that_runs_out_later_releases_the_locks(
    cluster: Nodes,
) -> None:
    a, b = await two(cluster, grace=0.2)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    mine = await take(a, "L", "s:1")
    assert await acquire(b, "L", "s:2") is None
    a.backend.remove_connection("s:1", "c1")
    await written(a)
    assert (await state(b, "L")).holder == mine  # alive for its grace period
    assert await frame(a) == lost(mine)  # it ran out (a timer, or a heartbeat)
    assert (await granted_frame(b)).session == "s:2"
    await cluster.until(lambda: everything(cluster.nodes, "ended") == ["s:1"])


async def _node_with_locks(cluster: Nodes) -> tuple[Node, Node, LockGrant]:
    """Node b holds what a node's leaving must drop, and what it must keep.

    s:1 (on both nodes) holds L1 connection-scoped on b, which a asked for
    too and s:3 on a waits for; s:2 (on b) holds L2 session-scoped; b's
    entries wait for L3 and L4; s:1 holds L5 connection-scoped on a.
    """
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    b.backend.add_connection("s:2", "c3")
    a.backend.add_connection("s:3", "c4")
    await take(a, "L1", "s:1")  # session-scoped from a...
    l1 = await take(b, "L1", "s:1", scope=SCOPE_CONNECTION, connection="c2")
    assert l1.scope == SCOPE_CONNECTION  # ...weakened on b
    assert await acquire(a, "L1", "s:3") is None
    await take(b, "L2", "s:2")
    await take(a, "L3", "s:3")
    assert await acquire(b, "L3", "s:2") is None
    assert await acquire(b, "L3", "s:1") is None
    await take(a, "L4", "s:3")
    assert await acquire(b, "L4", "s:1", SCOPE_CONNECTION, "c2") is None
    await take(a, "L5", "s:1", scope=SCOPE_CONNECTION, connection="c1")
    return a, b, l1


async def _after_b_left(a: Node, b: Node, l1: LockGrant) -> None:
    assert await frame(a) == lost(l1)
    handed = await granted_frame(a)
    assert (handed.name, handed.session) == ("L1", "s:3")
    await nothing_more(a, a)
    assert await state(a, "L1") == LockState("L1", handed, 0)
    assert (await state(a, "L2")).holder is not None  # session-scoped: kept
    assert (await state(a, "L3")).waiting == 0  # b's entries went
    assert (await state(a, "L4")).waiting == 0
    held = (await state(a, "L5")).holder
    assert held is not None  # a's connection-scoped lock stays
    assert held.session == "s:1"


async def test_a_node_that_stops_drops_its_connection_locks_and_entries(
    cluster: Nodes,
) -> None:
    a, b, l1 = await _node_with_locks(cluster)
    await b.backend.stop()
    await _after_b_left(a, b, l1)


async def test_a_reaped_node_drops_its_connection_locks_and_entries(
    redis_cluster: Cluster,
) -> None:
    a, b, l1 = await _node_with_locks(redis_cluster)
    with watch_log(REDIS_LOG, "Node b stopped heartbeating") as reaped:
        await die(b)
        await reaped.wait(timeout=TIMEOUT)
    assert await frame(a) == lost(l1)
    handed = await granted_frame(a)
    assert (handed.name, handed.session) == ("L1", "s:3")
    # s:2 was held by b alone: reaped, it ended at once, and its lock went
    assert await state(a, "L2") == LockState("L2", None, 0)
    assert (await state(a, "L3")).waiting == 0
    assert (await state(a, "L4")).waiting == 0
    assert (await state(a, "L5")).holder is not None
    await nothing_more(a, a)


async def test_entries_of_a_dead_node_are_skipped_on_hand_on(
    redis_cluster: Cluster,
) -> None:
    # long leases: no heartbeat reaps b (dropping its entries) meanwhile
    a = await redis_cluster.node("a", grace=GRACE, node_ttl=30)
    b = await redis_cluster.node("b", grace=GRACE, node_ttl=30)
    a.backend.add_connection("s:1", "c1")
    a.backend.add_connection("s:2", "c2")  # alive while b is dead
    b.backend.add_connection("s:2", "c3")
    a.backend.add_connection("s:3", "c4")
    holder = await take(a, "L", "s:1")
    assert await acquire(b, "L", "s:2") is None
    assert await acquire(a, "L", "s:3") is None
    await die(b)  # its lease runs out, and nobody reaped it yet
    await redis_cluster.admin.zadd(f"{redis_cluster.tag}:nodes", {"b": 0})
    assert await a.backend.lock_store.release("L", "s:1", holder.sequence)
    handed = await granted_frame(a)
    assert handed.session == "s:3"
    assert await state(a, "L") == LockState("L", handed, 0)  # b's entry went
    tag = redis_cluster.tag
    assert not await redis_cluster.admin.exists(f"{tag}:node_lockrefs:b")


async def test_the_indexes_go_with_the_locks(redis_cluster: Cluster) -> None:
    a, b, _ = await _node_with_locks(redis_cluster)
    admin, tag = redis_cluster.admin, redis_cluster.tag
    assert await admin.hgetall(f"{tag}:node_lockrefs:b") == {
        b"L1": b"1",
        b"L3": b"2",
        b"L4": b"1",
    }
    assert await admin.hgetall(f"{tag}:lockrefs:s:1") == {
        b"L1": b"1",
        b"L3": b"1",
        b"L4": b"1",
        b"L5": b"1",
    }
    await b.backend.stop()
    assert not await admin.exists(f"{tag}:node_lockrefs:b")
    assert await admin.hgetall(f"{tag}:lockrefs:s:1") == {b"L5": b"1"}
    for session in ["s:1", "s:2", "s:3"]:
        await a.backend.session_store.end(session)
    left = sorted(await admin.keys(f"{tag}:lock*") + await admin.keys(f"{tag}:node_l*"))
    assert left == [f"{tag}:lock_clock".encode()]


# liveness and reads
async def test_acquire_needs_a_live_session(cluster: Nodes) -> None:
    a, _ = await two(cluster)
    with pytest.raises(LookupError):
        await acquire(a, "L", "s:never")
    a.backend.add_connection("s:1", "c1")
    await take(a, "L", "s:1")
    a.backend.remove_connection("s:1", "c1")  # in its grace period: alive
    assert await acquire(a, "L", "s:1") is not None
    assert await a.backend.session_store.end("s:1")
    with pytest.raises(LookupError):
        await acquire(a, "L", "s:1")
    assert await state(a, "L") == LockState("L", None, 0)


async def test_state_and_held(cluster: Nodes) -> None:
    a, b = await two(cluster)
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:2", "c2")
    assert await state(a, "L") == LockState("L", None, 0)
    one = await take(a, "L", "s:1", scope=SCOPE_CONNECTION, connection="c1")
    two_ = await take(b, "M", "s:2")
    assert await acquire(b, "L", "s:2") is None
    assert await state(b, "L") == LockState("L", one, 1, ("s:2",))
    store = b.backend.lock_store
    assert await store.held([]) == []
    assert await store.held(
        [("L", one.sequence), ("M", two_.sequence), ("L", two_.sequence), ("N", 1)]
    ) == [True, True, False, False]
    assert await a.backend.lock_store.release("L", "s:1", one.sequence)
    handed = await granted_frame(b)
    assert await store.held([("L", one.sequence), ("L", handed.sequence)]) == [
        False,
        True,
    ]


async def test_names_and_ids_travel_whole(cluster: Nodes) -> None:
    a, b = await two(cluster)
    name = 'réunion {x}\t"/\\ 42'
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:ü\t2", "c/2")
    holder = await take(a, name, "s:1")
    assert await acquire(b, name, "s:ü\t2", SCOPE_CONNECTION, "c/2") is None
    assert await a.backend.lock_store.release(name, "s:1", holder.sequence)
    handed = await granted_frame(b)
    assert (handed.name, handed.session, handed.connection) == (name, "s:ü\t2", "c/2")
    assert await b.backend.lock_store.held([(name, handed.sequence)]) == [True]
    assert await b.backend.session_store.end("s:ü\t2")
    assert await frame(b) == lost(handed)


async def test_a_bad_scope_is_refused(redis_cluster: Cluster) -> None:
    a = await redis_cluster.node("a", grace=GRACE)
    a.backend.add_connection("s:1", "c1")
    with pytest.raises(ValueError, match="scope"):
        await acquire(a, "L", "s:1", scope=7)


async def test_a_release_on_another_node_tells_the_node_that_asked(
    cluster: Nodes,
) -> None:
    """Another tab of the session, on another node, let go of the lock: the
    node whose caller holds an equal lock hears that it is lost."""
    a, b = await two(cluster)
    a.backend.add_connection("s:0", "c-a")
    b.backend.add_connection("s:0", "c-b")
    held = await take(a, "L", "s:0")
    again = await acquire(b, "L", "s:0")
    assert again == held
    assert await b.backend.lock_store.release("L", "s:0", held.sequence)
    frame = json.loads(await a.next_frame())
    assert frame["kind"] == "lock_lost"
    assert (frame["body"]["name"], frame["body"]["sequence"]) == ("L", held.sequence)
    await nothing_more(b, a)
