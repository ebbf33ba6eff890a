"""The event store's contract, on memory hubs and on a real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pytest
import redis.asyncio as aioredis

from aiohttp_session_ws import (
    BackendUnavailableError,
    MemoryBackend,
    MemoryHub,
    RedisBackend,
)
from aiohttp_session_ws.backends import Backend, NodeHooks
from aiohttp_session_ws.backends.base import EventRetention
from aiohttp_session_ws.backends.redis.events import RedisEventStore
from aiohttp_session_ws.events.model import (
    Event,
    EventId,
    EventPayloadBinary,
    EventPayloadJson,
    RegisterEvent,
)

from .redis_server import RedisServer

TIMEOUT = 5.0
REDIS_LOG = "aiohttp_session_ws.redis"
T = TypeVar("T")


class Node:
    """A backend whose on_events hook queues what it is told."""

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self.backend = backend
        self.told: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
        self.calls = 0
        backend.attach(
            name,
            NodeHooks(
                on_frame=self._frame,
                on_session_closed=lambda session, at: None,
                on_reconnect=lambda: None,
                on_events=self._events,
            ),
        )

    @property
    def store(self) -> Any:
        return self.backend.event_store

    async def _frame(self, frame: bytes) -> None:
        pass

    def _events(self, epoch: str, events: list[Event]) -> None:
        self.calls += 1
        for event in events:
            self.told.put_nowait((epoch, event))

    async def next(self, count: int) -> list[tuple[str, Event]]:
        """The next ``count`` events handed to this node (bounded wait)."""
        return [await asyncio.wait_for(self.told.get(), TIMEOUT) for _ in range(count)]


class Nodes(Protocol):
    """The nodes of one test's cluster (a memory hub, or a Redis)."""

    async def node(self, name: str) -> Node: ...


class Hub:
    def __init__(self) -> None:
        self.hub = MemoryHub()
        self.nodes: list[Node] = []

    async def node(self, name: str) -> Node:
        node = Node(name, MemoryBackend(self.hub))
        await node.backend.start()
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        for node in self.nodes:
            await node.backend.stop()


class Cluster:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.tag = f"{{{prefix}}}"
        self.nodes: list[Node] = []
        self.admin = aioredis.Redis.from_url(url)

    async def node(self, name: str, **options: Any) -> Node:
        options.setdefault("node_ttl", 2.0)
        options.setdefault("reconnect_max_delay", 0.5)
        node = Node(name, RedisBackend(self.url, prefix=self.prefix, **options))
        self.nodes.append(node)
        await node.backend.start()
        return node

    async def close(self) -> None:
        for node in self.nodes:
            await node.backend.stop()
        await self.admin.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cluster(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[Hub | Cluster]:
    made: Hub | Cluster
    if request.param == "memory":
        made = Hub()
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


def ev(text: str, data: Any = None, source: float | None = None) -> RegisterEvent:
    return RegisterEvent(
        tuple(text.split("/")), source, None if data is None else EventPayloadJson(data)
    )


async def nothing_more(writer: Node, *nodes: Node) -> None:
    """Nothing else was handed to the nodes: a new event comes next to each."""
    [marker] = await writer.store.register([ev("marker")])
    epoch = (await writer.store.read(None, 0)).epoch
    for node in nodes:
        assert await node.next(1) == [(epoch, marker)]


async def bounded(attempt: Callable[[], Awaitable[T]], until: Callable[[T], bool]) -> T:
    """Repeat ``attempt`` (on Redis outages too) until ``until`` holds; bounded."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            value = await attempt()
        except BackendUnavailableError:
            pass
        else:
            if until(value):
                return value
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.02)


async def test_a_batch_gets_consecutive_ids_and_one_timestamp(
    cluster: Nodes,
) -> None:
    a = await cluster.node("a")
    before = time.time()
    batch = [
        ev("x/1", {"n": 1}, 1.25),
        RegisterEvent(("y",), None, EventPayloadBinary("image/png", b"\x00\xff")),
        ev("x/2"),
    ]
    added = await a.store.register(batch)
    assert [event.type for event in added] == [("x", "1"), ("y",), ("x", "2")]
    first = added[0].id
    assert [event.id for event in added] == [
        EventId(first.ms, first.seq + n) for n in range(3)
    ]
    assert len({event.timestamp for event in added}) == 1
    assert before - 1 <= added[0].timestamp <= time.time() + 1
    assert abs(first.ms / 1000 - added[0].timestamp) < 1
    assert [e.source_timestamp for e in added] == [1.25, None, None]
    assert [e.payload for e in added] == [e.payload for e in batch]
    more = await a.store.register([ev("z")])
    assert more[0].id > added[-1].id
    assert await a.store.register([]) == []
    read = await a.store.read(None, 100)
    assert read.events == [*added, *more]  # stored exactly as returned
    assert read.last == more[0].id
    assert read.trimmed is None


async def test_every_node_hands_on_each_event_once_in_order(cluster: Nodes) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    one = await a.store.register([ev("a/1"), ev("a/2")])
    two = await b.store.register([ev("b/1", [1, 2])])
    three = await a.store.register([ev("a/3")])
    epoch = (await a.store.read(None, 0)).epoch
    for node in (a, b):
        assert await node.next(4) == [(epoch, e) for e in one + two + three]
    await nothing_more(a, a, b)


async def test_events_before_a_node_started_are_history(cluster: Nodes) -> None:
    a = await cluster.node("a")
    await a.store.register([ev("old")])
    late = await cluster.node("late")
    [new] = await a.store.register([ev("new")])
    assert [event for _, event in await late.next(1)] == [new]
    await nothing_more(a, late)


async def test_read_pages_with_after_and_limit(cluster: Nodes) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    added = []
    for n in range(7):
        added += await (a if n % 2 else b).store.register([ev(f"e/{n}")])
    page = await a.store.read(None, 3)
    assert page.events == added[:3]
    assert page.last == added[-1].id
    page = await b.store.read(page.events[-1].id, 3)
    assert page.events == added[3:6]
    page = await a.store.read(page.events[-1].id, 3)
    assert page.events == added[6:]
    assert (await a.store.read(added[-1].id, 3)).events == []
    # an id between two events: the ones after it
    between = EventId(added[2].id.ms, added[2].id.seq)
    assert (await a.store.read(between, 2)).events == added[3:5]


async def test_retention_by_count_trims_the_oldest(cluster: Nodes) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    a.store.retention = EventRetention(max_count=5, max_age=None)

    async def told(events: list[Event]) -> None:
        for node in (a, b):
            assert [e for _, e in await node.next(len(events))] == events

    first = await a.store.register([ev("k/1"), ev("k/2"), ev("k/3")])
    assert (await b.store.read(None, 10)).trimmed is None
    await told(first)
    second = await a.store.register([ev("k/4"), ev("k/5"), ev("k/6"), ev("k/7")])
    read = await b.store.read(None, 10)
    assert read.events == (first + second)[2:]
    assert read.trimmed == first[1].id
    assert read.last == second[-1].id
    await told(second)
    # a page from before what was trimmed starts at the oldest kept
    assert (await b.store.read(first[0].id, 2)).events == (first + second)[2:4]
    # a batch larger than the log keeps its last events
    third = await a.store.register([ev(f"m/{n}") for n in range(7)])
    read = await b.store.read(None, 10)
    assert read.events == third[2:]
    assert read.trimmed == third[1].id
    # a follower of a Redis log reads it: what the register trimmed at once
    # it never sees (the memory hub tells its nodes before it trims)
    await told(third if isinstance(a.backend, MemoryBackend) else third[2:])
    await nothing_more(a, a, b)


async def test_retention_by_age_trims_on_register(cluster: Nodes) -> None:
    a = await cluster.node("a")
    a.store.retention = EventRetention(max_count=100, max_age=0.2)
    old = await a.store.register([ev("old/1"), ev("old/2")])
    kept = await a.store.read(None, 10)
    assert kept.events == old
    # let them grow older than max_age (time must pass: not a synchronisation)
    await asyncio.sleep(0.3)
    assert (await a.store.read(None, 10)).events == old  # only register trims
    new = await a.store.register([ev("new")])
    read = await a.store.read(None, 10)
    assert read.events == new
    assert read.trimmed == old[-1].id
    assert read.last == new[0].id


async def test_the_latest_of_each_type_outlives_trimming(cluster: Nodes) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    a.store.retention = EventRetention(max_count=2, max_age=None)
    assert await a.store.latest() == {}
    first = await a.store.register([ev("t/a", 1), ev("t/b", {"x": [1]}, 3.5)])
    second = await a.store.register([ev("t/a", 2), ev("t/c"), ev("t/c", "last")])
    assert (await a.store.read(None, 10)).events == second[1:]
    assert await b.store.latest() == {
        ("t", "a"): second[0],
        ("t", "b"): first[1],
        ("t", "c"): second[2],
    }


async def test_the_epoch_is_the_same_for_every_call_and_node(cluster: Nodes) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    epoch = (await a.store.read(None, 1)).epoch
    assert epoch
    await b.store.register([ev("e")])
    assert (await b.store.read(None, 1)).epoch == epoch
    assert (await a.store.read(None, 0)).epoch == epoch
    assert [told for told, _ in await a.next(1)] == [epoch]


# Redis only
def follower_name(node: Node) -> str:
    store = node.store
    assert isinstance(store, RedisEventStore)
    return f"{store.connection_name}:{node.name}"


async def follower_id(cluster: Cluster, node: Node) -> int | None:
    """The Redis client id of the node's follower connection (None: none now)."""
    for client in await cluster.admin.client_list():
        if client["name"] == follower_name(node):
            return int(client["id"])
    return None


async def test_a_killed_follower_connection_catches_up_without_gap_or_repeat(
    redis_cluster: Cluster,
) -> None:
    a = await redis_cluster.node("a", reconnect_delay=0.5)
    b = await redis_cluster.node("b")
    before = await b.store.register([ev("before")])
    assert [e for _, e in await a.next(1)] == before
    killed = await bounded(lambda: follower_id(redis_cluster, a), bool)
    assert killed is not None
    await redis_cluster.admin.client_kill_filter(_id=str(killed))
    meanwhile = []
    for n in range(20):  # a waits at least 0.25 s before it reconnects
        meanwhile += await b.store.register([ev(f"m/{n}"), ev(f"m/{n}/2")])
    assert await follower_id(redis_cluster, a) is None  # not back yet
    epoch = (await b.store.read(None, 0)).epoch
    assert await a.next(40) == [(epoch, e) for e in meanwhile]
    back = await follower_id(redis_cluster, a)
    assert back not in (None, killed)
    assert await b.next(41) == [(epoch, e) for e in before + meanwhile]
    await nothing_more(b, a, b)


async def test_a_flushed_log_gets_a_new_epoch_and_is_followed(
    redis_cluster: Cluster,
) -> None:
    a, b = await redis_cluster.node("a"), await redis_cluster.node("b")
    old = await b.store.register([ev("old/1"), ev("old/2")])
    old_epoch = (await a.store.read(None, 0)).epoch
    for node in (a, b):
        assert await node.next(2) == [(old_epoch, e) for e in old]
    await redis_cluster.admin.flushall()
    # the new log's ids come after the old ones (the same clock, a later ms)
    await bounded(
        redis_cluster.admin.time,
        lambda now: now[0] * 1000 + now[1] // 1000 > old[-1].id.ms,
    )
    new = await bounded(lambda: b.store.register([ev("new/1"), ev("new/2")]), bool)
    read = await a.store.read(None, 10)
    assert read.epoch != old_epoch
    assert read.events == new
    assert read.trimmed is None
    for node in (a, b):
        assert await node.next(2) == [(read.epoch, e) for e in new]
    await nothing_more(b, a, b)


async def test_a_log_flushed_in_the_same_millisecond_is_found_by_the_next_look(
    redis_cluster: Cluster,
) -> None:
    a = await redis_cluster.node("a")
    a.store.follow_block = 0.2  # it looks again after a quiet block
    b = await redis_cluster.node("b")
    # the old log's ids run ahead of the clock (as after the clock went back)
    ahead = int(time.time() * 1000) + 60_000
    await redis_cluster.admin.set(f"{redis_cluster.tag}:events:last", f"{ahead}-0")
    old = await b.store.register([ev("old")])
    assert old[0].id == EventId(ahead, 1)
    assert [e for _, e in await a.next(1)] == old
    await redis_cluster.admin.flushall()
    # the new log's first id is before the old log's last one: XREAD after
    # that id misses it, the next look finds the new epoch
    [new] = await b.store.register([ev("new")])
    assert new.id < old[0].id
    epoch = (await b.store.read(None, 0)).epoch
    assert (await a.next(1)) == [(epoch, new)]
    await nothing_more(b, a)


async def test_a_restarted_empty_redis_is_a_new_log(
    own_redis_server: RedisServer, prefix: str
) -> None:
    cluster = Cluster(own_redis_server.url, prefix)
    try:
        a = await cluster.node("a")
        b = await cluster.node("b")
        old = await b.store.register([ev("old")])
        old_epoch = (await b.store.read(None, 0)).epoch
        assert await a.next(1) == [(old_epoch, old[0])]
        own_redis_server.restart()
        new = await bounded(lambda: b.store.register([ev("new/1"), ev("new/2")]), bool)
        epoch = (await b.store.read(None, 0)).epoch
        assert epoch != old_epoch
        assert await a.next(2) == [(epoch, e) for e in new]
        await nothing_more(b, a)
    finally:
        await cluster.close()


async def test_malformed_stored_data_is_skipped_and_logged_by_size(
    redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, REDIS_LOG)
    a = await redis_cluster.node("a")
    tag = redis_cluster.tag
    [good] = await a.store.register([ev("good")])
    assert [e for _, e in await a.next(1)] == [good]
    secret = "s3cr3t-value"
    admin = redis_cluster.admin
    await admin.xadd(f"{tag}:events", {"t": "bad", "p": secret})  # no ts
    await admin.xadd(f"{tag}:events", {"t": "a//b", "ts": "1", "st": "", "p": "1"})
    await admin.hset(f"{tag}:events:latest", "bad", secret)
    # the register goes on after the entries added by another hand
    [after] = await a.store.register([ev("after")])
    assert [e for _, e in await a.next(1)] == [after]
    assert (await a.store.read(None, 10)).events == [good, after]
    assert await a.store.latest() == {("good",): good, ("after",): after}
    assert secret not in caplog.text
    assert caplog.text.count("Skipped a malformed event") == 5  # 2 + 2 + 1
    await nothing_more(a, a)


async def test_a_retried_register_call_adds_nothing(redis_cluster: Cluster) -> None:
    a = await redis_cluster.node("a")
    store = a.store
    assert isinstance(store, RedisEventStore)
    backend = a.backend
    assert isinstance(backend, RedisBackend)
    args: list[Any] = ["epoch-x", "token-1", 10_000, 100, "", "r/1", "", "null"]
    one = await backend._run(store._register, *args)
    two = await backend._run(store._register, *args)
    assert one == two
    assert [e.type for e in (await store.read(None, 10)).events] == [("r", "1")]
