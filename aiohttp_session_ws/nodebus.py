"""Calls between nodes: a request to some nodes, and the replies they send back."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from .backends.base import Backend, BackendUnavailableError
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws.nodebus")

JSONDict = dict[str, Any]
CallHandler = Callable[[JSONDict], Awaitable[Any]]
"""Answers a call from another node; its result (JSON-able) is the reply."""
Publisher = Callable[[bytes], Awaitable[Collection[str]]]
"""Sends a call's frame; returns the nodes it reached."""


_FAILED = object()


class NodeGoneError(ConnectionError):
    """The node a call waited on left the cluster, or could not be reached."""


_ONE_WAY = 0
"""The call id of a frame that wants no reply (:meth:`NodeBus.tell`)."""


class _PendingCall:
    def __init__(self, nodes: Iterable[str]) -> None:
        self.waiting = set(nodes)
        self.replies: dict[str, Any] = {}
        self.early: dict[str, Any] = {}  # replies that beat publish()'s return
        self.done = asyncio.get_running_loop().create_future()

    def expect(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            if node not in self.early:
                self.waiting.add(node)
            elif (body := self.early.pop(node)) is not _FAILED:
                self.replies[node] = body

    def fail(self, node_id: str) -> None:
        if node_id in self.waiting:
            self.give_up(node_id)
        elif node_id not in self.replies:
            self.early[node_id] = _FAILED

    def answer(self, node_id: str, body: Any) -> None:
        if node_id in self.waiting:
            self.replies[node_id] = body
            self.give_up(node_id)
        elif node_id not in self.replies:
            self.early[node_id] = body

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
        self._inline: set[str] = set()
        self.on_frames_lost: list[Callable[[], None]] = []
        """Called when this node's inbox lost its link (services fail the
        work that waits for frames from other nodes)."""
        self.on_nodes_left: list[Callable[[set[str]], None]] = []
        """Called with the nodes that left the cluster (services fail their
        work waiting on them)."""
        self._calls: dict[int, _PendingCall] = {}
        # one-node calls: [the node (None until a publisher named it), waiter]
        self._single: dict[int, list[Any]] = {}
        self._call_ids = itertools.count(1)

    def handle(self, kind: str, handler: CallHandler, *, inline: bool = False) -> None:
        """Answer calls of ``kind`` from other nodes with ``handler``.

        ``inline``: run the handler as the frame arrives, before the next
        frame is taken (for a handler that never waits, such as a push's
        writes; only the reply is sent in a task). Otherwise it runs in a task.
        """
        self._handlers[kind] = handler
        if inline:
            self._inline.add(kind)
        else:
            self._inline.discard(kind)

    async def call(
        self, nodes: Collection[str], kind: str, body: JSONDict, *, timeout: float
    ) -> dict[str, Any]:
        """Send a call to ``nodes`` and return ``{node id: reply}`` for each answer.

        The frame goes to every node at once (concurrently). Nodes that do not
        answer within ``timeout`` seconds, or that could not be reached, are
        logged and left out of the result.
        """
        if not nodes:
            return {}

        async def publish(frame: bytes) -> Collection[str]:
            sent = await asyncio.gather(
                *(self._publish_to(node, kind, frame) for node in nodes)
            )
            return [node for node, ok in zip(nodes, sent, strict=True) if ok]

        return await self.call_published(publish, kind, body, timeout=timeout)

    async def call_published(
        self,
        publish: Publisher,
        kind: str,
        body: JSONDict,
        *,
        timeout: float,
    ) -> dict[str, Any]:
        """Make a call that ``publish`` sends; wait for the nodes it names.

        ``publish`` gets the encoded frame and returns the nodes it reached:
        a backend can look the nodes up and publish in one round trip. What
        it raises is raised.
        """
        call_id = next(self._call_ids)
        frame = _encode(kind, self.node_id, call_id, body)
        self._calls[call_id] = pending = _PendingCall(())
        try:
            nodes = await publish(frame)
            pending.expect(node for node in nodes if node not in pending.replies)
            if not pending.waiting:
                return pending.replies
            try:
                await asyncio.wait_for(asyncio.shield(pending.done), timeout)
            except TimeoutError:
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

    async def call_one(
        self,
        target: str | Callable[[bytes], Awaitable[str]],
        kind: str,
        body: JSONDict,
        *,
        timeout: float,
    ) -> Any:
        """Call one node (``target``, or the node a publisher names) for its reply.

        A publisher gets the encoded frame, publishes it and returns the node
        it reached; what it raises is raised.

        :raises NodeGoneError: the node is not listening, could not be
            reached, failed to answer, or left the cluster meanwhile
            (:meth:`nodes_left`): the caller learns it at once.
        :raises TimeoutError: no reply within ``timeout`` seconds.
        :raises BackendUnavailableError: the backend could not publish, or
            this node's inbox lost its link meanwhile (:meth:`frames_lost`).
        """
        call_id = next(self._call_ids)
        frame = _encode(kind, self.node_id, call_id, body)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = [target if isinstance(target, str) else None, waiter]
        self._single[call_id] = entry
        try:
            async with asyncio.timeout(timeout):
                if isinstance(target, str):
                    if not await self._backend.publish(target, frame):
                        raise NodeGoneError(f"node {target} is not listening")
                else:
                    entry[0] = await target(frame)
                return await waiter
        finally:
            del self._single[call_id]

    async def tell(self, node_id: str, kind: str, body: JSONDict) -> bool:
        """Send a frame that wants no reply; False if the node is not listening.

        :raises BackendUnavailableError: the backend cannot be reached.
        """
        return await self._backend.publish(
            node_id, _encode(kind, self.node_id, _ONE_WAY, body)
        )

    def frames_lost(self) -> None:
        """Fail the one-node calls waiting: this node's inbox lost its link.

        Their replies may be lost; a caller learns it at once instead of at
        its timeout (:meth:`call_one` raises BackendUnavailableError).
        """
        for _, waiter in self._single.values():
            if not waiter.done():
                waiter.set_exception(
                    BackendUnavailableError(
                        "this node lost its inbox: the reply may be lost"
                    )
                )
        for callback in self.on_frames_lost:
            try:
                callback()
            except Exception:
                logger.exception("A frames-lost callback failed")

    def nodes_left(self, nodes: Iterable[str]) -> None:
        """Nodes left the cluster (died, or stopped): fail the calls waiting on them."""
        gone = set(nodes)
        for node_id, waiter in self._single.values():
            if node_id in gone and not waiter.done():
                waiter.set_exception(NodeGoneError(f"node {node_id} left the cluster"))
        for pending in self._calls.values():
            for node_id in gone & pending.waiting:
                pending.give_up(node_id)
        for callback in self.on_nodes_left:
            try:
                callback(gone)
            except Exception:
                logger.exception("A nodes-left callback failed")

    async def _publish_to(self, node_id: str, kind: str, frame: bytes) -> bool:
        try:
            listening = await self._backend.publish(node_id, frame)
        except Exception:
            logger.exception("Could not send %r to node %s", kind, node_id)
            return False
        if not listening:
            logger.warning("Node %s is not listening; skipped %r", node_id, kind)
        return listening

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
            single = self._single.get(call_id)
            if single is not None:
                node_id, waiter = single
                if node_id in (sender, None) and not waiter.done():
                    if kind == "reply":
                        waiter.set_result(body)
                    else:
                        waiter.set_exception(
                            NodeGoneError(f"node {sender} failed to answer")
                        )
                return
            pending = self._calls.get(call_id)
            if pending is None:
                return
            if kind == "reply":
                pending.answer(sender, body)
            else:
                logger.error("Node %s failed to answer a call", sender)
                pending.fail(sender)
            return
        handler = self._handlers.get(kind)
        if self._tasks.closed:
            logger.debug("Dropped a %r call from node %s: shutting down", kind, sender)
            return
        if handler is None:
            logger.error("Dropped a node frame of unknown kind %.40r", kind)
            return
        if call_id == _ONE_WAY:
            if kind in self._inline:
                await self._take(handler, kind, sender, body)
                return
            self._tasks.spawn(
                self._take(handler, kind, sender, body), name=f"nodebus-{kind}"
            )
            return
        if kind in self._inline:
            frame = await self._run(handler, kind, sender, call_id, body)
            self._tasks.spawn(
                self._reply(sender, kind, frame), name=f"nodebus-reply-{call_id}"
            )
            return
        self._tasks.spawn(
            self._answer(handler, kind, sender, call_id, body),
            name=f"nodebus-{kind}-{call_id}",
        )

    async def _take(
        self, handler: CallHandler, kind: str, sender: str, body: Any
    ) -> None:
        try:
            await handler({**body, "from": sender} if isinstance(body, dict) else body)
        except Exception:
            logger.exception("Taking %r from node %s failed", kind, sender)

    async def _answer(
        self, handler: CallHandler, kind: str, sender: str, call_id: int, body: Any
    ) -> None:
        frame = await self._run(handler, kind, sender, call_id, body)
        await self._reply(sender, kind, frame)

    async def _reply(self, sender: str, kind: str, frame: bytes) -> None:
        try:
            await self._backend.publish(sender, frame)
        except BackendUnavailableError as exc:
            # the caller fails or times out; its node hears of the outage too
            logger.warning("Could not answer %r from node %s: %s", kind, sender, exc)

    async def _run(
        self, handler: CallHandler, kind: str, sender: str, call_id: int, body: Any
    ) -> bytes:
        """The reply frame of a call: the handler's result, or a failure."""
        try:
            return _encode("reply", self.node_id, call_id, await handler(body))
        except Exception:
            logger.exception("Answering %r from node %s failed", kind, sender)
            return _encode("failed", self.node_id, call_id, None)


def _encode(kind: str, sender: str, call_id: int, body: Any) -> bytes:
    frame = {"kind": kind, "from": sender, "call": call_id, "body": body}
    return json.dumps(frame, separators=(",", ":")).encode()
