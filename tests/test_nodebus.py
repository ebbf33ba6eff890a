"""NodeBus: calls between nodes of an in-process cluster, and bad frames."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiohttp_session_ws import MemoryBackend, MemoryHub
from aiohttp_session_ws.nodebus import NodeBus
from aiohttp_session_ws.tasks import TaskOwner

from .test_backends_memory import frames_only

logger = logging.getLogger("tests.nodebus")
TIMEOUT = 5.0


class Node:
    """One node: a memory backend, its task owner and its bus."""

    def __init__(self, hub: MemoryHub, node_id: str) -> None:
        self.backend = MemoryBackend(hub)
        self.tasks = TaskOwner(logger)
        self.bus = NodeBus(node_id, self.backend, self.tasks)
        self.backend.attach(node_id, frames_only(self.bus.receive))

    async def stop(self) -> None:
        await self.tasks.aclose(TIMEOUT)
        await self.backend.stop()


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node, Node]]:
    hub = MemoryHub()
    trio = (Node(hub, "a"), Node(hub, "b"), Node(hub, "c"))
    for node in trio:
        await node.backend.start()
    yield trio
    for node in trio:
        await node.stop()


async def test_call_gathers_a_reply_from_each_node(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, c = nodes

    async def double(body: dict[str, Any]) -> int:
        return int(body["n"]) * 2

    async def triple(body: dict[str, Any]) -> int:
        return int(body["n"]) * 3

    b.bus.handle("scale", double)
    c.bus.handle("scale", triple)
    replies = await a.bus.call(["b", "c"], "scale", {"n": 7}, timeout=TIMEOUT)
    assert replies == {"b": 14, "c": 21}
    assert await a.bus.call([], "scale", {"n": 1}, timeout=TIMEOUT) == {}


async def test_a_failing_handler_answers_at_once(
    nodes: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = nodes

    async def broken(body: dict[str, Any]) -> int:
        raise RuntimeError("handler exploded")

    async def fine(body: dict[str, Any]) -> int:
        return 1

    b.bus.handle("work", broken)
    c.bus.handle("work", fine)
    with caplog.at_level(logging.ERROR):
        # a long timeout: the call must end on the failure frame, not on time
        replies = await asyncio.wait_for(
            a.bus.call(["b", "c"], "work", {}, timeout=60), TIMEOUT
        )
    assert replies == {"c": 1}
    assert "handler exploded" in caplog.text
    assert "Node b failed to answer" in caplog.text


async def test_nodes_nobody_listens_for_are_skipped_at_once(
    nodes: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = nodes
    with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws.nodebus"):
        call = a.bus.call(["gone"], "work", {}, timeout=60)
        replies = await asyncio.wait_for(call, TIMEOUT)
    assert replies == {}
    assert "Node gone is not listening; skipped 'work'" in caplog.text


async def test_a_publish_error_gives_up_on_that_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing(MemoryBackend):
        async def publish(self, node_id: str, frame: bytes) -> bool:
            raise ConnectionError("no route")

    backend = Refusing()
    bus = NodeBus("a", backend, TaskOwner(logger))
    backend.attach("a", frames_only(bus.receive))
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws.nodebus"):
        replies = await asyncio.wait_for(bus.call(["b"], "x", {}, timeout=60), TIMEOUT)
    assert replies == {}
    assert "Could not send 'x' to node b" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", json.dumps({"kind": "x"}).encode(), b"\xff\xfe"],
)
async def test_malformed_frames_are_dropped(
    nodes: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    a, _, _ = nodes
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws.nodebus"):
        await a.bus.receive(raw)
    assert "malformed node frame" in caplog.text


async def test_unknown_kinds_and_stray_replies_are_dropped(
    nodes: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = nodes
    frame = {"kind": "mystery", "from": "b", "call": 1, "body": None}
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws.nodebus"):
        await a.bus.receive(json.dumps(frame).encode())
        await a.bus.receive(json.dumps({**frame, "kind": "reply"}).encode())
    assert "unknown kind 'mystery'" in caplog.text
    assert len(a.tasks) == 0


async def test_late_and_duplicate_replies_are_ignored(
    nodes: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _ = nodes
    gate = asyncio.Event()

    async def slow(body: dict[str, Any]) -> str:
        await gate.wait()
        return "late"

    b.bus.handle("slow", slow)
    with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws.nodebus"):
        assert await a.bus.call(["b"], "slow", {}, timeout=0.05) == {}
    assert "1 node(s) did not answer 'slow' within 0.1 s: b" in caplog.text
    gate.set()  # b now replies to a call that has ended
    await b.tasks.aclose(TIMEOUT)
    reply = {"kind": "reply", "from": "c", "call": 99, "body": 1}
    await a.bus.receive(json.dumps(reply).encode())
    assert len(a.tasks) == 0  # nothing was started for either reply


async def test_calls_arriving_after_shutdown_are_dropped(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    answered: list[object] = []

    async def record(body: dict[str, Any]) -> None:
        answered.append(body)

    b.bus.handle("late", record)
    await b.tasks.aclose(TIMEOUT)
    assert await a.bus.call(["b"], "late", {}, timeout=0.05) == {}
    assert answered == []
