"""Session lifecycle, handles, properties and targeted publishes on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiohttp_session_ws import BackendUnavailableError, RedisBackend
from aiohttp_session_ws.backends.memory import public_handle

from .logwait import watch_log
from .redis_server import RedisServer
from .test_backends_sessions_memory import TIMEOUT, Node, everything, until

NODE_TTL = 0.4
GRACE = 0.3
REDIS_LOG = "aiohttp_session_ws.redis"


class Cluster:
    """Redis backends of one test's cluster; every one is stopped at the end."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.tag = f"{{{prefix}}}"
        self.changed = asyncio.Event()
        self.nodes: list[Node] = []
        self.admin = aioredis.Redis.from_url(url)

    async def node(
        self, name: str, grace: float = GRACE, *, start: bool = True, **options: Any
    ) -> Node:
        options.setdefault("node_ttl", NODE_TTL)
        backend = RedisBackend(self.url, prefix=self.prefix, **options)
        backend.grace_period = grace
        node = Node(name, backend, self.changed)
        self.nodes.append(node)
        if start:
            await backend.start()
        return node

    async def until(self, check: Callable[[], bool]) -> None:
        await until(self.changed, check)

    async def in_grace(self, session: str) -> bool:
        return await self.admin.zscore(f"{self.tag}:grace", session) is not None

    async def alive(self, session: str) -> bool:
        return bool(await self.admin.exists(f"{self.tag}:alive:{session}"))

    async def close(self) -> None:
        for node in self.nodes:
            await node.backend.stop()
        await self.admin.aclose()


@pytest.fixture
async def cluster(redis_server: RedisServer, prefix: str) -> AsyncIterator[Cluster]:
    made = Cluster(redis_server.url, prefix)
    yield made
    await made.close()


def redis_of(node: Node) -> RedisBackend:
    backend = node.backend
    assert isinstance(backend, RedisBackend)
    return backend


async def written(*nodes: Node) -> None:
    """Wait until the nodes' presence notes so far are in Redis."""
    for node in nodes:
        await node.backend.session_nodes("s:flush")


async def die(node: Node) -> None:
    """Stop the node's tasks without leaving, as a killed process would."""
    backend = redis_of(node)
    tasks, backend._tasks = backend._tasks, []
    backend._stopping.set()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


async def add(node: Node, session: str, connection: str) -> None:
    """Open a connection and wait until it is in Redis."""
    node.backend.add_connection(session, connection)
    await written(node)


async def remove(node: Node, session: str, connection: str) -> None:
    """Close a connection and wait until that is in Redis."""
    node.backend.remove_connection(session, connection)
    await written(node)


async def test_a_session_starts_waits_out_its_grace_and_ends(
    cluster: Cluster,
) -> None:
    a = await cluster.node("a")
    store = a.backend.session_store
    a.backend.add_connection("s:1", "c1")
    a.backend.add_connection("s:1", "c2")
    await written(a)
    assert a.started == ["s:1"]
    handle = store.handle_of("s:1")
    assert await store.session_of(handle) == "s:1"
    assert await store.set_properties("s:1", {"plan": "pro"})
    a.backend.remove_connection("s:1", "c1")
    await remove(a, "s:1", "c2")
    assert await cluster.in_grace("s:1")
    assert await store.properties("s:1") == {"plan": "pro"}  # alive meanwhile
    await cluster.until(lambda: a.ended == ["s:1"])
    assert await store.properties("s:1") is None
    assert await store.session_of(handle) is None
    assert not await cluster.admin.exists(f"{cluster.tag}:props:s:1")
    assert a.started == ["s:1"]


async def test_a_connection_within_the_grace_period_resumes(
    cluster: Cluster,
) -> None:
    a = await cluster.node("a")
    await add(a, "s:1", "c1")
    await remove(a, "s:1", "c1")
    assert await cluster.in_grace("s:1")
    await add(a, "s:1", "c2")  # a reload
    assert not await cluster.in_grace("s:1")
    assert a.started == ["s:1"]
    await remove(a, "s:1", "c2")
    await cluster.until(lambda: a.ended == ["s:1"])
    await add(a, "s:1", "c3")  # after its end: a new life
    assert a.started == ["s:1", "s:1"]


async def test_two_nodes_start_and_end_a_session_once(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    await add(a, "s:1", "c1")
    await add(b, "s:1", "c2")
    assert (a.started, b.started) == (["s:1"], [])
    assert b.backend.session_store.handle_of(
        "s:1"
    ) == a.backend.session_store.handle_of("s:1")
    await remove(a, "s:1", "c1")
    assert not await cluster.in_grace("s:1")  # b still holds it
    await remove(b, "s:1", "c2")
    await cluster.until(lambda: everything(cluster.nodes, "ended") == ["s:1"])
    assert everything(cluster.nodes, "started") == ["s:1"]


async def test_nodes_adding_new_sessions_at_once_start_each_once(
    cluster: Cluster,
) -> None:
    nodes = [await cluster.node(f"n{i}") for i in range(4)]
    sessions = [f"s:{n}" for n in range(30)]
    for i, node in enumerate(nodes):
        order = sessions[i:] + sessions[:i]  # each node writes in its own order
        for session in order:
            node.backend.add_connection(session, f"c-{node.name}")
    await asyncio.gather(*(written(node) for node in nodes))
    started = everything(nodes, "started")
    assert sorted(started) == sorted(sessions)


async def test_a_dead_node_ends_its_sessions_at_once(cluster: Cluster) -> None:
    a = await cluster.node("a", grace=60)
    b = await cluster.node("b", grace=60)
    await add(b, "s:alone", "c1")
    await add(a, "s:shared", "c2")
    await add(b, "s:shared", "c3")
    with watch_log(REDIS_LOG, "Node b stopped heartbeating") as reaped:
        await die(b)
        await reaped.wait(timeout=TIMEOUT)
    # no grace period: it died, and the node TTL stood for the grace
    await cluster.until(lambda: a.ended == ["s:alone"])
    assert await cluster.alive("s:shared")
    assert not await cluster.in_grace("s:alone")


async def test_a_graceful_stop_leaves_a_grace_period(cluster: Cluster) -> None:
    a, b = await cluster.node("a", grace=60), await cluster.node("b")
    await add(a, "s:1", "c1")
    assert await a.backend.session_store.set_properties("s:1", {"k": "v"})
    await a.backend.stop()  # a rolling restart
    assert await cluster.in_grace("s:1")
    assert await b.backend.session_store.properties("s:1") == {"k": "v"}
    restarted = await cluster.node("a2")
    await add(restarted, "s:1", "c2")  # the reload lands on the new node
    assert not await cluster.in_grace("s:1")
    assert everything(cluster.nodes, "started") == ["s:1"]
    assert everything(cluster.nodes, "ended") == []


async def test_a_grace_period_that_runs_out_ends_on_a_live_node(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    await add(a, "s:1", "c1")
    await a.backend.stop()
    await cluster.until(lambda: b.ended == ["s:1"])
    assert a.ended == []


async def test_no_grace_period_ends_at_once(cluster: Cluster) -> None:
    a = await cluster.node("a", grace=0)
    await add(a, "s:1", "c1")
    await remove(a, "s:1", "c1")
    assert a.ended == ["s:1"]


async def test_a_lease_that_lapsed_is_a_grace_not_an_end(cluster: Cluster) -> None:
    a = await cluster.node("a", grace=60)
    await add(a, "s:1", "c1")
    back = a.reconnects
    with watch_log(REDIS_LOG, "outlived its lease") as lapsed:
        await cluster.admin.zadd(f"{cluster.tag}:nodes", {"a": 0})  # stalled
        await lapsed.wait(timeout=TIMEOUT)
    await cluster.until(lambda: a.reconnects > back)  # rewritten: resumed
    assert await cluster.alive("s:1")
    assert not await cluster.in_grace("s:1")
    assert (a.started, a.ended) == (["s:1"], [])


async def test_end_drops_the_session_and_its_open_sockets_never_restart_it(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    store = a.backend.session_store
    a.backend.add_connection("s:1", "c1")
    await add(a, "s:1", "c2")
    handle = store.handle_of("s:1")
    assert await store.set_properties("s:1", {"k": "v"})
    assert await b.backend.session_store.end("s:1")
    assert not await store.end("s:1")
    assert await store.properties("s:1") is None
    assert await store.session_of(handle) is None
    assert not await store.set_properties("s:1", {"k": "v"})
    assert await cluster.admin.keys(f"{cluster.tag}:props:*") == []
    # its sockets stay open (the app changed the id): no start, no grace
    await remove(a, "s:1", "c1")
    await add(a, "s:1", "c3")
    back = a.reconnects
    await cluster.admin.client_kill_filter(_type="pubsub")  # a full rewrite
    await cluster.until(lambda: a.reconnects > back)
    a.backend.remove_connection("s:1", "c2")
    await remove(a, "s:1", "c3")
    assert not await cluster.in_grace("s:1")
    assert everything(cluster.nodes, "started") == ["s:1"]
    assert everything(cluster.nodes, "ended") == []


async def test_mark_session_closed_ends_and_tells_the_other_holders(
    cluster: Cluster,
) -> None:
    a, b, c = [await cluster.node(name) for name in "abc"]
    await add(a, "s:1", "c1")
    await add(b, "s:1", "c2")
    await add(c, "s:2", "c3")
    assert await b.backend.session_store.set_properties("s:1", {"k": "v"})
    closed = await a.backend.mark_session_closed("s:1", frame=b"close")
    assert closed.ended
    assert closed.published == ("b",)
    assert closed.nodes == {"a": 1, "b": 1}
    assert await b.next_frame() == b"close"
    assert await b.backend.session_store.properties("s:1") is None
    again = await a.backend.mark_session_closed("s:1")
    assert (again.ended, again.published) == (False, ())
    assert await a.backend.publish("c", b"marker")
    assert await c.next_frame() == b"marker"  # nothing came before it
    await remove(a, "s:1", "c1")
    assert not await cluster.in_grace("s:1")
    assert everything(cluster.nodes, "ended") == []


async def test_presence_older_than_a_close_starts_nothing(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    closed = await b.backend.mark_session_closed("s:1")
    # a's socket opened before the close, but its presence comes after it
    a.backend.add_connection("s:1", "c1")
    redis_of(a)._local["s:1"]["c1"] = closed.at - 1.0
    await written(a)
    [(session, at)] = a.closed  # told to close it
    assert session == "s:1"
    assert at == pytest.approx(closed.at, abs=1e-6)
    assert a.started == []
    a.backend.add_connection("s:1", "c2")  # opened after the close: not closed
    await remove(a, "s:1", "c1")
    await remove(a, "s:1", "c2")
    await add(a, "s:1", "c3")  # a new socket of a session with none
    assert a.started == ["s:1"]


async def test_properties_are_seen_by_every_node_at_once(cluster: Cluster) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    store_a, store_b = a.backend.session_store, b.backend.session_store
    assert not await store_a.set_properties("s:1", {"k": "v"})
    assert await store_a.properties("s:1") is None
    await add(a, "s:1", "c1")
    assert await store_b.properties("s:1") == {}
    assert await store_a.set_properties("s:1", {"k": "v", "x": "1", "gone": None})
    assert await store_b.properties("s:1") == {"k": "v", "x": "1"}
    assert await store_b.set_properties("s:1", {"k": None, "é": "ü"})
    assert await store_a.properties("s:1") == {"x": "1", "é": "ü"}


async def test_handles_are_shared_and_look_up_live_sessions(
    cluster: Cluster,
) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    handle = a.backend.session_store.handle_of("s:1")
    assert handle == b.backend.session_store.handle_of("s:1")
    assert len(handle) == 22
    key = await cluster.admin.get(f"{cluster.tag}:handle_key")
    assert isinstance(key, bytes)
    assert handle == public_handle(key, "s:1")
    assert await b.backend.session_store.session_of(handle) is None
    await add(a, "s:1", "c1")
    assert await b.backend.session_store.session_of(handle) == "s:1"
    assert await b.backend.session_store.session_of("no-such-handle") is None


async def test_a_pinned_handle_key_never_asks_redis(cluster: Cluster) -> None:
    pinned = await cluster.node("p", start=False, handle_key="cluster-secret")
    expected = public_handle(b"cluster-secret", "s:1")
    assert pinned.backend.session_store.handle_of("s:1") == expected
    as_bytes = await cluster.node("q", start=False, handle_key=b"cluster-secret")
    assert as_bytes.backend.session_store.handle_of("s:1") == expected
    await pinned.backend.start()
    assert not await cluster.admin.exists(f"{cluster.tag}:handle_key")


async def test_no_handle_before_redis_answered(prefix: str) -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0", prefix=prefix)
    with pytest.raises(BackendUnavailableError, match="handle key"):
        backend.session_store.handle_of("s:1")


async def test_redis_restarted_empty_gets_the_same_handle_key_back(
    own_redis_server: RedisServer, prefix: str
) -> None:
    cluster = Cluster(own_redis_server.url, prefix)
    try:
        a = await cluster.node("a", reconnect_max_delay=0.2)
        await add(a, "s:1", "c1")
        handle = a.backend.session_store.handle_of("s:1")
        back = a.reconnects
        own_redis_server.restart()  # every key is gone
        await cluster.until(lambda: a.reconnects > back)
        assert a.backend.session_store.handle_of("s:1") == handle
        assert await a.backend.session_store.session_of(handle) == "s:1"
        # the lifecycle was lost with the keys: the rewrite started it again
        assert a.started == ["s:1", "s:1"]
    finally:
        await cluster.close()


async def test_publish_to_session_reaches_only_the_other_holders(
    cluster: Cluster,
) -> None:
    a, b, c = [await cluster.node(name) for name in "abc"]
    await add(a, "s:1", "c1")
    await add(b, "s:1", "c2")
    assert await a.backend.publish_to_session("s:1", b"hi") == ["b"]
    assert await b.next_frame() == b"hi"
    assert await a.backend.publish_to_session("s:9", b"nobody") == []
    assert sorted(await a.backend.publish_to_all(b"all")) == ["b", "c"]
    assert await b.next_frame() == b"all"
    assert await c.next_frame() == b"all"  # c had no frame before this one
    assert await a.backend.publish("a", b"self")
    assert await a.next_frame() == b"self"  # a was never sent its own frames
    await die(b)  # b's lease runs out: a live holder no more
    await cluster.admin.zadd(f"{cluster.tag}:nodes", {"b": 0})
    assert await a.backend.publish_to_session("s:1", b"gone") == []


async def test_a_rewrite_drops_what_redis_held_but_the_node_does_not(
    cluster: Cluster,
) -> None:
    a = await cluster.node("a", grace=0)
    await add(a, "s:1", "c1")
    admin, tag = cluster.admin, cluster.tag
    # a session the node closed but Redis still lists (a write that was lost)
    await admin.hset(f"{tag}:node:a", "s:ghost", 1)
    await admin.hset(f"{tag}:session:s:ghost", "a", 1)
    await admin.set(f"{tag}:alive:s:ghost", "h")
    back = a.reconnects
    await admin.client_kill_filter(_type="pubsub")
    await cluster.until(lambda: a.reconnects > back)
    assert await a.backend.session_nodes("s:ghost") == {}
    assert await a.backend.session_nodes("s:1") == {"a": 1}
    assert not await admin.exists(f"{tag}:stale:a")
    assert a.ended == ["s:ghost"]  # its presence went: it ends (no grace here)
    assert a.started == ["s:1"]  # a rewrite restarts nothing


async def test_a_failing_lifecycle_hook_ends_no_loop(
    cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = await cluster.node("a", grace=0)

    def fail(sessions: list[str]) -> None:
        raise RuntimeError("hook bug")

    hooks = a.backend._hooks
    assert hooks is not None
    broken = dataclasses.replace(
        hooks, on_sessions_started=fail, on_sessions_ended=fail
    )
    monkeypatch.setattr(a.backend, "_hooks", broken)
    await add(a, "s:1", "c1")
    await remove(a, "s:1", "c1")
    failed = [r for r in caplog.records if "hook failed" in r.getMessage()]
    assert len(failed) == 2
    assert redis_of(a).loop_errors == {}
    assert a.backend.healthy
