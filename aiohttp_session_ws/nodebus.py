"""Calls between nodes: a request to some nodes, and the replies they send back."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .backends.base import Backend
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws.nodebus")

JSONDict = dict[str, Any]
CallHandler = Callable[[JSONDict], Awaitable[Any]]
"""Answers a call from another node; its result (JSON-able) is the reply."""


class _PendingCall:
    def __init__(self, nodes: Collection[str]) -> None:
        self.waiting = set(nodes)
        self.replies: dict[str, Any] = {}
        self.done = asyncio.get_running_loop().create_future()

    def answer(self, node_id: str, body: Any) -> None:
        if node_id in self.waiting:
            self.replies[node_id] = body
            self.give_up(node_id)

    def give_up(self, node_id: str) -> None:
        self.waiting.discard(node_id)
        if not self.waiting and not self.done.done():
            self.done.set_result(None)


class NodeBus:
    """Request-reply between the nodes of a cluster, over the backend's node channel.

    A service names the kinds of call it answers with :meth:`handle`; a call to
    a set of nodes waits for each reply until a timeout, and returns the replies
    that came. Frames are JSON: ``{"kind", "from", "call", "body"}``.
    """

    def __init__(self, node_id: str, backend: Backend, tasks: TaskOwner) -> None:
        self.node_id = node_id
        self._backend = backend
        self._tasks = tasks
        self._handlers: dict[str, CallHandler] = {}
        self._calls: dict[int, _PendingCall] = {}
        self._call_ids = itertools.count(1)

    def handle(self, kind: str, handler: CallHandler) -> None:
        """Answer calls of ``kind`` from other nodes with ``handler``."""
        self._handlers[kind] = handler

    async def call(
        self, nodes: Collection[str], kind: str, body: JSONDict, *, timeout: float
    ) -> dict[str, Any]:
        """Send a call to ``nodes`` and return ``{node id: reply}`` for each answer.

        Nodes that do not answer within ``timeout`` seconds, or that could not be
        reached, are logged and left out of the result.
        """
        if not nodes:
            return {}
        call_id = next(self._call_ids)
        pending = _PendingCall(nodes)
        self._calls[call_id] = pending
        frame = _encode(kind, self.node_id, call_id, body)
        try:
            for node_id in nodes:
                try:
                    listening = await self._backend.publish(node_id, frame)
                except Exception:
                    logger.exception("Could not send %r to node %s", kind, node_id)
                    pending.give_up(node_id)
                    continue
                if not listening:
                    logger.warning(
                        "Node %s is not listening; skipped %r", node_id, kind
                    )
                    pending.give_up(node_id)
            try:
                await asyncio.wait_for(asyncio.shield(pending.done), timeout)
            except asyncio.TimeoutError:
                logger.warning(
                    "%d node(s) did not answer %r within %.1f s: %s",
                    len(pending.waiting),
                    kind,
                    timeout,
                    ", ".join(sorted(pending.waiting)),
                )
            return pending.replies
        finally:
            del self._calls[call_id]

    async def receive(self, raw: bytes) -> None:
        """Take a frame from the backend: answer a call, or complete one of ours."""
        try:
            frame = json.loads(raw)
            kind, sender, call_id = frame["kind"], frame["from"], frame["call"]
            body = frame.get("body")
            if not (
                isinstance(kind, str)
                and isinstance(sender, str)
                and isinstance(call_id, int)
            ):
                raise TypeError("kind and from must be strings, call an int")
        except (ValueError, KeyError, TypeError) as exc:
            # its content may hold a session ws id: log only its shape
            logger.error(
                "Dropped a malformed node frame of %d bytes (%s)",
                len(raw),
                type(exc).__name__,
            )
            return
        if kind in ("reply", "failed"):
            pending = self._calls.get(call_id)
            if pending is None:
                return
            if kind == "reply":
                pending.answer(sender, body)
            else:
                logger.error("Node %s failed to answer a call", sender)
                pending.give_up(sender)
            return
        handler = self._handlers.get(kind)
        if self._tasks.closed:
            logger.debug("Dropped a %r call from node %s: shutting down", kind, sender)
            return
        if handler is None:
            logger.error("Dropped a node frame of unknown kind %.40r", kind)
            return
        self._tasks.spawn(
            self._answer(handler, kind, sender, call_id, body),
            name=f"nodebus-{kind}-{call_id}",
        )

    async def _answer(
        self, handler: CallHandler, kind: str, sender: str, call_id: int, body: Any
    ) -> None:
        try:
            frame = _encode("reply", self.node_id, call_id, await handler(body))
        except Exception:
            logger.exception("Answering %r from node %s failed", kind, sender)
            frame = _encode("failed", self.node_id, call_id, None)
        await self._backend.publish(sender, frame)


def _encode(kind: str, sender: str, call_id: int, body: Any) -> bytes:
    frame = {"kind": kind, "from": sender, "call": call_id, "body": body}
    return json.dumps(frame, separators=(",", ":")).encode()
