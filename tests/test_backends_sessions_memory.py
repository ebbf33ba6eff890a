"""Session lifecycle, handles, properties and targeted publishes on memory hubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from aiohttp_session_ws import MemoryBackend, MemoryHub
from aiohttp_session_ws.backends import Backend, NodeHooks
from aiohttp_session_ws.backends.memory import public_handle

TIMEOUT = 5.0
GRACE = 0.1


class Node:
    """A backend attached to hooks that record what they are told."""

    def __init__(self, name: str, backend: Backend, changed: asyncio.Event) -> None:
        self.name = name
        self.backend = backend
        self.started: list[str] = []
        self.ended: list[str] = []
        self.closed: list[tuple[str, float]] = []
        self.reconnects = 0
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._changed = changed
        backend.attach(
            name,
            NodeHooks(
                on_frame=self._frame,
                on_session_closed=self._closed,
                on_reconnect=self._reconnected,
                on_sessions_started=self._started,
                on_sessions_ended=self._ended,
            ),
        )

    async def _frame(self, frame: bytes) -> None:
        self.frames.put_nowait(frame)
        self._changed.set()

    def _closed(self, session: str, at: float) -> None:
        self.closed.append((session, at))
        self._changed.set()

    def _reconnected(self) -> None:
        self.reconnects += 1
        self._changed.set()

    def _started(self, sessions: list[str]) -> None:
        self.started += sessions
        self._changed.set()

    def _ended(self, sessions: list[str]) -> None:
        self.ended += sessions
        self._changed.set()

    async def next_frame(self) -> bytes:
        """The next frame published to this node (bounded wait)."""
        return await asyncio.wait_for(self.frames.get(), TIMEOUT)


async def until(changed: asyncio.Event, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds, looking again at each hook call."""

    async def wait() -> None:
        while not check():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(wait(), TIMEOUT)


def everything(nodes: list[Node], what: str) -> list[str]:
    """What every node was told, in one list (starts or ends)."""
    return [session for node in nodes for session in getattr(node, what)]


class Hub:
    """Memory nodes of one hub, started; all stopped at the end of the test."""

    def __init__(self) -> None:
        self.hub = MemoryHub()
        self.changed = asyncio.Event()
        self.nodes: list[Node] = []

    async def node(self, name: str, grace: float = GRACE) -> Node:
        backend = MemoryBackend(self.hub)
        backend.grace_period = grace
        node = Node(name, backend, self.changed)
        await backend.start()
        self.nodes.append(node)
        return node

    async def until(self, check: Callable[[], bool]) -> None:
        await until(self.changed, check)


@pytest.fixture
async def cluster() -> AsyncIterator[Hub]:
    hub = Hub()
    yield hub
    for node in hub.nodes:
        await node.backend.stop()


async def test_a_session_starts_waits_out_its_grace_and_ends(cluster: Hub) -> None:
    a = await cluster.node("a")
    store = a.backend.session_store
    a.backend.add_connection("s:1", "c1")
    a.backend.add_connection("s:1", "c2")  # not a second start
    assert a.started == ["s:1"]
    assert await store.set_properties("s:1", {"plan": "pro"})
    a.backend.remove_connection("s:1", "c1")
    a.backend.remove_connection("s:1", "c2")
    assert a.ended == []  # in its grace period: still alive
    assert await store.properties("s:1") == {"plan": "pro"}
    await cluster.until(lambda: a.ended == ["s:1"])
    assert await store.properties("s:1") is None
    assert await store.session_of(store.handle_of("s:1")) is None
    assert a.started == ["s:1"]


async def test_a_connection_within_the_grace_period_resumes(cluster: Hub) -> None:
    a = await cluster.node("a")
    a.backend.add_connection("s:1", "c1")
    a.backend.remove_connection("s:1", "c1")
    a.backend.add_connection("s:1", "c2")  # a reload
    assert cluster.hub.grace == {}
    assert a.started == ["s:1"]
    a.backend.remove_connection("s:1", "c2")
    await cluster.until(lambda: a.ended == ["s:1"])
    a.backend.add_connection("s:1", "c3")  # after its end: a new life
    assert a.started == ["s:1", "s:1"]


async def test_two_nodes_start_and_end_a_session_once(cluster: Hub) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    assert (a.started, b.started) == (["s:1"], [])
    a.backend.remove_connection("s:1", "c1")
    assert cluster.hub.grace == {}  # b still holds it
    b.backend.remove_connection("s:1", "c2")
    await cluster.until(lambda: everything(cluster.nodes, "ended") == ["s:1"])
    assert b.ended == ["s:1"]  # b's close began the grace period


async def test_a_stopped_node_leaves_its_sessions_a_grace_period(cluster: Hub) -> None:
    a, b = await cluster.node("a", grace=TIMEOUT), await cluster.node("b")
    a.backend.add_connection("s:1", "c1")
    await a.backend.stop()  # a rolling restart
    assert "s:1" in cluster.hub.grace
    assert await b.backend.session_store.properties("s:1") == {}
    a2 = await cluster.node("a2")
    a2.backend.add_connection("s:1", "c2")  # the restarted node's reload
    assert everything(cluster.nodes, "started") == ["s:1"]
    assert cluster.hub.grace == {}


async def test_a_grace_that_runs_out_after_its_node_stopped_is_told_elsewhere(
    cluster: Hub,
) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    a.backend.add_connection("s:1", "c1")
    await a.backend.stop()
    await cluster.until(lambda: b.ended == ["s:1"])
    assert a.ended == []


async def test_no_grace_period_ends_at_once(cluster: Hub) -> None:
    a = await cluster.node("a", grace=0)
    a.backend.add_connection("s:1", "c1")
    a.backend.remove_connection("s:1", "c1")
    assert a.ended == ["s:1"]


async def test_end_drops_the_session_and_is_not_reported(cluster: Hub) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    store = a.backend.session_store
    a.backend.add_connection("s:1", "c1")
    a.backend.add_connection("s:1", "c2")
    handle = store.handle_of("s:1")
    assert await store.set_properties("s:1", {"k": "v"})
    assert await b.backend.session_store.end("s:1")
    assert not await store.end("s:1")
    assert await store.properties("s:1") is None
    assert await store.session_of(handle) is None
    assert not await store.set_properties("s:1", {"k": "v"})
    # its sockets stay open (the app changed the id): no restart, no grace
    a.backend.remove_connection("s:1", "c1")
    a.backend.add_connection("s:1", "c3")
    a.backend.remove_connection("s:1", "c2")
    a.backend.remove_connection("s:1", "c3")
    assert cluster.hub.grace == {}
    assert everything(cluster.nodes, "started") == ["s:1"]
    assert everything(cluster.nodes, "ended") == []


async def test_mark_session_closed_ends_and_tells_the_other_holders(
    cluster: Hub,
) -> None:
    a, b, c = [await cluster.node(name) for name in "abc"]
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    c.backend.add_connection("s:2", "c3")
    assert await b.backend.session_store.set_properties("s:1", {"k": "v"})
    closed = await a.backend.mark_session_closed("s:1", frame=b"close")
    assert closed.ended
    assert closed.published == ("b",)
    assert closed.nodes == {"a": 1, "b": 1}
    assert await b.next_frame() == b"close"
    assert await b.backend.session_store.properties("s:1") is None
    again = await a.backend.mark_session_closed("s:1")
    assert not again.ended
    assert again.published == ()
    assert c.frames.empty()
    assert a.frames.empty()


async def test_properties_set_and_remove(cluster: Hub) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    assert not await a.backend.session_store.set_properties("s:1", {"k": "v"})
    assert await a.backend.session_store.properties("s:1") is None
    a.backend.add_connection("s:1", "c1")
    store = a.backend.session_store
    assert await store.properties("s:1") == {}
    assert await store.set_properties("s:1", {"k": "v", "x": "1"})
    assert await b.backend.session_store.properties("s:1") == {"k": "v", "x": "1"}
    assert await b.backend.session_store.set_properties("s:1", {"k": None})
    assert await store.properties("s:1") == {"x": "1"}


async def test_handles_are_shared_by_a_hub_and_look_up_live_sessions(
    cluster: Hub,
) -> None:
    a, b = await cluster.node("a"), await cluster.node("b")
    handle = a.backend.session_store.handle_of("s:1")
    assert handle == b.backend.session_store.handle_of("s:1")
    assert len(handle) == 22
    assert handle == public_handle(cluster.hub.handle_key, "s:1")
    assert handle != a.backend.session_store.handle_of("s:2")
    assert MemoryBackend().session_store.handle_of("s:1") != handle  # another hub
    assert await b.backend.session_store.session_of(handle) is None
    a.backend.add_connection("s:1", "c1")
    assert await b.backend.session_store.session_of(handle) == "s:1"
    assert await b.backend.session_store.session_of("no-such-handle") is None


async def test_publish_to_session_reaches_only_the_other_holders(
    cluster: Hub,
) -> None:
    a, b, c = [await cluster.node(name) for name in "abc"]
    a.backend.add_connection("s:1", "c1")
    b.backend.add_connection("s:1", "c2")
    assert await a.backend.publish_to_session("s:1", b"hi") == ["b"]
    assert await b.next_frame() == b"hi"
    assert await a.backend.publish_to_session("s:9", b"nobody") == []
    assert sorted(await a.backend.publish_to_all(b"all")) == ["b", "c"]
    assert await b.next_frame() == b"all"
    assert await c.next_frame() == b"all"  # c had no frame before this one
    assert a.frames.empty()
    await b.backend.stop()
    assert await a.backend.publish_to_session("s:1", b"gone") == []


async def test_a_failing_lifecycle_hook_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(sessions: list[str]) -> None:
        raise RuntimeError("hook bug")

    backend = MemoryBackend()
    backend.grace_period = 0
    backend.attach(
        "a",
        NodeHooks(
            on_frame=backend.deliver,
            on_session_closed=lambda session, at: None,
            on_reconnect=lambda: None,
            on_sessions_started=broken,
            on_sessions_ended=broken,
        ),
    )
    backend.add_connection("s:1", "c1")
    backend.remove_connection("s:1", "c1")
    failed = [r for r in caplog.records if "hook failed" in r.getMessage()]
    assert len(failed) == 2
    assert backend.hub.alive == {}
