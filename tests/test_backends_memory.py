"""The memory backend: presence in a hub, frames through per-node queues."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aiohttp_session_ws import MemoryBackend, MemoryHub
from aiohttp_session_ws.backends import FrameHandler, NodeHooks

TIMEOUT = 5.0


def frames_only(on_frame: FrameHandler) -> NodeHooks:
    """Hooks that take frames and ignore the rest."""
    return NodeHooks(on_frame, lambda session, at: None, lambda: None)


def attached(
    hub: MemoryHub, node_id: str
) -> tuple[MemoryBackend, asyncio.Queue[bytes]]:
    """A backend of ``hub`` whose incoming frames land in a queue."""
    backend = MemoryBackend(hub)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_frame(frame: bytes) -> None:
        if frame == b"explode":
            raise ValueError("handler bug")
        received.put_nowait(frame)

    backend.attach(node_id, frames_only(on_frame))
    return backend, received


async def test_presence_is_shared_through_the_hub() -> None:
    hub = MemoryHub()
    a, _ = attached(hub, "a")
    b, _ = attached(hub, "b")
    a.add_connection("s1", "c1")
    a.add_connection("s1", "c2")
    b.add_connection("s1", "c3")
    b.add_connection("s2", "c4")
    assert await b.session_nodes("s1") == {"a": 2, "b": 1}
    assert await a.sessions() == {"s1", "s2"}
    a.remove_connection("s1", "c1")
    a.remove_connection("s1", "c2")
    a.remove_connection("s1", "c2")  # twice is harmless
    a.remove_connection("nobody", "c9")
    assert await a.session_nodes("s1") == {"b": 1}
    b.remove_connection("s2", "c4")
    assert await a.sessions() == {"s1"}
    assert await a.session_nodes("s2") == {}


async def test_frames_reach_running_nodes_only() -> None:
    hub = MemoryHub()
    a, _ = attached(hub, "a")
    b, inbox_b = attached(hub, "b")
    await a.start()
    await b.start()
    await b.start()  # starting twice is once
    await a.publish("b", b"hello")
    assert await asyncio.wait_for(inbox_b.get(), TIMEOUT) == b"hello"
    await b.stop()
    assert await a.publish("b", b"lost") is False
    assert inbox_b.empty()
    await a.stop()


async def test_a_failing_handler_does_not_stop_the_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = MemoryHub()
    a, inbox = attached(hub, "a")
    await a.start()
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws.memory"):
        await a.publish("a", b"explode")
        await a.publish("a", b"after")
        assert await asyncio.wait_for(inbox.get(), TIMEOUT) == b"after"
    assert "handler bug" in caplog.text
    await a.stop()


async def test_stop_withdraws_presence_and_is_idempotent() -> None:
    hub = MemoryHub()
    a, _ = attached(hub, "a")
    b, _ = attached(hub, "b")
    await a.start()
    a.add_connection("s1", "c1")
    b.add_connection("s1", "c2")
    await a.stop()
    await a.stop()
    assert await b.session_nodes("s1") == {"b": 1}
    assert "a" not in hub.inboxes


async def test_each_backend_has_its_own_hub_by_default() -> None:
    a, _ = attached(MemoryHub(), "a")
    lone = MemoryBackend()
    lone.attach("lone", frames_only(a.deliver))
    a.add_connection("s1", "c1")
    assert await lone.sessions() == frozenset()


async def test_mark_session_closed_answers_with_the_nodes() -> None:
    hub = MemoryHub()
    a, _ = attached(hub, "a")
    b, _ = attached(hub, "b")
    b.add_connection("s1", "c1")
    closed = await a.mark_session_closed("s1", ago=2.0)
    assert closed.nodes == {"b": 1}
    assert closed.at <= a.now() - 2.0
