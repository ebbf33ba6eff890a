"""The embedded default backend: dicts and asyncio queues, one process."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..events.model import Event
from .base import (
    AddressedRoute,
    Backend,
    HandlerStore,
    PropertyValues,
    SessionClosed,
    SessionStore,
)
from .memory_events import MemoryEventLog, MemoryEventStore
from .memory_locks import MemoryLockStore, MemoryLockTable

logger = logging.getLogger("aiohttp_session_ws.memory")

HANDLE_BYTES = 16
"""Bytes of the keyed hash kept in a public handle (22 characters of base64url)."""


def public_handle(key: bytes, session_id: str) -> str:
    """The public handle of ``session_id``: HMAC-SHA256 under ``key``, base64url.

    Every backend derives handles this way, from a key shared by the cluster.
    """
    message = session_id.encode("utf-8", "surrogatepass")
    digest = hmac.new(key, message, hashlib.sha256).digest()[:HANDLE_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class MemoryHub:
    """The shared state of the memory backends that form one in-process cluster.

    Every :class:`MemoryBackend` has a hub; backends created with the same hub
    see each other's presence and can publish frames to each other, exactly as
    nodes sharing a Redis do. That lets one process host several nodes, which is
    how the cluster code paths are exercised without a server. The hub also
    keeps the sessions' lifecycle: which are alive, which wait out their grace
    period (a timer on the event loop), their handles and properties.
    """

    def __init__(self) -> None:
        self.inboxes: dict[str, asyncio.Queue[bytes]] = {}
        """Running node id -> the queue of frames published to it."""
        self.presence: dict[str, dict[str, set[str]]] = {}
        """Session id -> node id -> ids of that node's connections of the session."""
        self.nodes: dict[str, MemoryBackend] = {}
        """Running node id -> its backend (whose hooks hear of grace expiries)."""
        self.handle_key = os.urandom(32)
        """The key of the public handles of this hub's sessions."""
        self.alive: dict[str, str] = {}
        """Live session id -> its public handle."""
        self.handles: dict[str, str] = {}
        """Public handle -> its live session id."""
        self.properties: dict[str, dict[str, str]] = {}
        """Live session id -> its user properties."""
        self.grace: dict[str, tuple[asyncio.TimerHandle, str]] = {}
        """Session id in its grace period -> its timer, and the node that began it."""
        self.paths: dict[str, collections.Counter[str]] = {}
        """Node id -> its request handlers per path."""
        self.addressed: dict[str, dict[str, frozenset[str]]] = {}
        self.locks = MemoryLockTable(self.alive.__contains__, self._publish)
        self.events = MemoryEventLog(self._event_followers)
        """The event log of the hub's nodes."""
        """The session locks of the hub's nodes."""
        """Session id -> node id -> the paths its connections there handle
        when a request is addressed to the session."""

    def came(self, session_id: str) -> bool:
        """A session's first connection came: resume its grace, or start it.

        Returns True if it started.
        """
        waiting = self.grace.pop(session_id, None)
        if waiting is not None:
            waiting[0].cancel()
            return False
        if session_id in self.alive:
            return False
        handle = public_handle(self.handle_key, session_id)
        self.alive[session_id] = handle
        self.handles[handle] = session_id
        return True

    def gone(self, session_id: str, backend: MemoryBackend) -> bool:
        """A session's last connection went: a live one begins its grace period.

        With no grace period (or no event loop to time it) it ends at once:
        returns True then.
        """
        if session_id not in self.alive:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or backend.grace_period <= 0:
            return self.end(session_id)
        timer = loop.call_later(backend.grace_period, self._expire, session_id)
        self.grace[session_id] = (timer, backend.node_id)
        return False

    def end(self, session_id: str) -> bool:
        """End the session (its handle, properties and grace go); True if alive."""
        waiting = self.grace.pop(session_id, None)
        if waiting is not None:
            waiting[0].cancel()
        handle = self.alive.pop(session_id, None)
        if handle is None:
            return False
        self.handles.pop(handle, None)
        self.properties.pop(session_id, None)
        self.locks.session_ended(session_id)
        return True

    def _event_followers(self) -> list[Callable[[str, list[Event]], None]]:
        return [
            backend._hooks.on_events
            for backend in self.nodes.values()
            if backend._hooks is not None
        ]

    def _publish(self, node_id: str, frame: bytes) -> bool:
        inbox = self.inboxes.get(node_id)
        if inbox is None:
            return False
        inbox.put_nowait(frame)
        return True

    def _expire(self, session_id: str) -> None:
        """The grace period ran out: end the session, and say so.

        The node that began the grace hears of it, or any running node if
        that one stopped.
        """
        waiting = self.grace.get(session_id)
        if waiting is None or not self.end(session_id):
            return
        teller = self.nodes.get(waiting[1]) or next(iter(self.nodes.values()), None)
        if teller is not None:
            teller.report_ended([session_id])


class MemorySessionStore(SessionStore):
    """The live sessions of a :class:`MemoryHub`: handles and properties."""

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub

    def handle_of(self, session_id: str) -> str:
        """The keyed hash of the session id, under the hub's key."""
        return public_handle(self.hub.handle_key, session_id)

    async def session_of(self, handle: str) -> str | None:
        """Look the handle up among the live sessions."""
        return self.hub.handles.get(handle)

    async def set_properties(self, session_id: str, values: PropertyValues) -> bool:
        """Set or remove properties of a live session; False if it is not alive."""
        if session_id not in self.hub.alive:
            return False
        properties = self.hub.properties.setdefault(session_id, {})
        for key, value in values.items():
            if value is None:
                properties.pop(key, None)
            else:
                properties[key] = value
        return True

    async def properties(self, session_id: str) -> dict[str, str] | None:
        """A copy of a live session's properties, or ``None``."""
        if session_id not in self.hub.alive:
            return None
        return dict(self.hub.properties.get(session_id, {}))

    async def end(self, session_id: str) -> bool:
        """End the session now; True if it was alive."""
        return self.hub.end(session_id)


class MemoryHandlerStore(HandlerStore):
    """The request handlers of a :class:`MemoryHub`'s nodes."""

    def __init__(self, hub: MemoryHub, backend: MemoryBackend) -> None:
        self.hub = hub
        self._backend = backend

    def add_path(self, path: str) -> None:
        """Count one more handler of ``path`` on this node."""
        self.hub.paths.setdefault(self._backend.node_id, collections.Counter())[
            path
        ] += 1

    def remove_path(self, path: str) -> None:
        """Count one handler less of ``path`` on this node."""
        counts = self.hub.paths.get(self._backend.node_id)
        if counts is not None and counts[path] > 0:
            counts[path] -= 1
            if not counts[path]:
                del counts[path]

    def set_addressed(self, session_id: str, paths: frozenset[str]) -> None:
        """Record the session's addressed paths on this node."""
        nodes = self.hub.addressed.setdefault(session_id, {})
        if paths:
            nodes[self._backend.node_id] = paths
        else:
            nodes.pop(self._backend.node_id, None)
            if not nodes:
                del self.hub.addressed[session_id]

    def route(self, prefixes: Sequence[str]) -> tuple[str, frozenset[str]] | None:
        """Look the paths up in the hub."""
        for path in prefixes:
            nodes = frozenset(
                node for node, counts in self.hub.paths.items() if counts.get(path)
            )
            if nodes:
                return path, nodes
        return None

    async def publish_addressed(
        self, handle: str, prefixes: Sequence[str], frame: bytes, pick: float
    ) -> AddressedRoute:
        """Choose the node in the hub, and queue ``frame`` for it."""
        session_id = self.hub.handles.get(handle)
        if session_id is None:
            return AddressedRoute("no_session")
        here = self._backend.node_id
        nodes = self.hub.addressed.get(session_id, {})
        for path in prefixes:
            found = sorted(
                n for n, paths in nodes.items() if path in paths and n != here
            )
            if found:
                node = found[int(pick * len(found))]
                if await self._backend.publish(node, frame):
                    return AddressedRoute("sent", node)
                return AddressedRoute("unreachable", node)
        return AddressedRoute("no_handler")


class MemoryBackend(Backend):
    """Keeps presence in a :class:`MemoryHub` and delivers frames through queues.

    :meth:`stop` is a graceful leave: the sessions only this node held wait
    out their grace period, as in a rolling restart.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self.session_store: MemorySessionStore = MemorySessionStore(self.hub)
        self.handler_store: MemoryHandlerStore = MemoryHandlerStore(self.hub, self)
        self.lock_store: MemoryLockStore = MemoryLockStore(
            self.hub.locks, lambda: self.node_id
        )
        self.event_store: MemoryEventStore = MemoryEventStore(self.hub.events)
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open this node's inbox in the hub and start delivering from it."""
        if self._listener is not None:
            return
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.hub.inboxes[self.node_id] = inbox
        self.hub.nodes[self.node_id] = self
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(inbox), name=f"memory-listener-{self.node_id}"
        )

    async def _listen(self, inbox: asyncio.Queue[bytes]) -> None:
        while True:
            frame = await inbox.get()
            try:
                await self.deliver(frame)
            except Exception:
                logger.exception("Frame handler failed on node %s", self.node_id)

    async def stop(self) -> None:
        """Close the inbox and withdraw every connection of this node."""
        if self._node_id is not None:
            self.hub.inboxes.pop(self._node_id, None)
            if self.hub.nodes.get(self._node_id) is self:
                del self.hub.nodes[self._node_id]
            for session_id in list(self.hub.presence):
                self._drop(session_id, self._node_id)
            self.hub.paths.pop(self._node_id, None)
            self.hub.locks.node_dropped(self._node_id)
            for session_id in list(self.hub.addressed):
                self.handler_store.set_addressed(session_id, frozenset())
            for other in list(self.hub.nodes.values()):
                other._node_left(self._node_id)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])

    async def publish(self, node_id: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``node_id``; False if that node is not running."""
        inbox = self.hub.inboxes.get(node_id)
        if inbox is None:
            return False
        inbox.put_nowait(frame)
        return True

    def add_connection(self, session_id: str, connection_id: str) -> None:
        """Record the connection in the hub at once; a first one may start it."""
        nodes = self.hub.presence.setdefault(session_id, {})
        first = not nodes
        nodes.setdefault(self.node_id, set()).add(connection_id)
        if first and self.hub.came(session_id):
            self._report(self._hooks_started, [session_id])

    def remove_connection(self, session_id: str, connection_id: str) -> None:
        """Remove the connection from the hub at once."""
        connections = self.hub.presence.get(session_id, {}).get(self.node_id)
        if connections is None:
            return
        connections.discard(connection_id)
        if not connections:
            self._drop(session_id, self.node_id)

    def _drop(self, session_id: str, node_id: str) -> None:
        nodes = self.hub.presence.get(session_id)
        if nodes is None or nodes.pop(node_id, None) is None:
            return
        if not nodes:
            del self.hub.presence[session_id]
            if self.hub.gone(session_id, self):
                self.report_ended([session_id])

    def _node_left(self, node_id: str) -> None:
        if self._hooks is not None:
            self._report(self._hooks.on_nodes_left, [node_id])

    def report_ended(self, sessions: list[str]) -> None:
        """Tell this node's registry of session ends its call decided."""
        self._report(self._hooks_ended, sessions)

    def _hooks_started(self, sessions: list[str]) -> None:
        if self._hooks is not None:
            self._hooks.on_sessions_started(sessions)

    def _hooks_ended(self, sessions: list[str]) -> None:
        if self._hooks is not None:
            self._hooks.on_sessions_ended(sessions)

    def _report(self, hook: Callable[[list[str]], None], sessions: list[str]) -> None:
        try:
            hook(sessions)
        except Exception:
            logger.exception("A session lifecycle hook failed on node %s", self.node_id)

    async def session_nodes(self, session_id: str) -> Mapping[str, int]:
        """Read the session's nodes from the hub."""
        nodes = self.hub.presence.get(session_id, {})
        return {node: len(connections) for node, connections in nodes.items()}

    async def sessions(self) -> frozenset[str]:
        """Read the connected sessions from the hub."""
        return frozenset(self.hub.presence)

    def holds_alone(self, session_id: str) -> bool:
        """Whether the hub lists no other node holding the session."""
        nodes = self.hub.presence.get(session_id, {})
        return all(node == self.node_id for node in nodes)

    async def publish_to_session(self, session_id: str, frame: bytes) -> list[str]:
        """Queue ``frame`` for every other running node holding the session."""
        return self._publish_to(self.hub.presence.get(session_id, {}), frame)

    async def publish_to_all(self, frame: bytes) -> list[str]:
        """Queue ``frame`` for every other running node."""
        return self._publish_to(list(self.hub.inboxes), frame)

    def _publish_to(self, nodes: Iterable[str], frame: bytes) -> list[str]:
        sent = []
        for node_id in nodes:
            inbox = self.hub.inboxes.get(node_id)
            if node_id != self.node_id and inbox is not None:
                inbox.put_nowait(frame)
                sent.append(node_id)
        return sent

    async def mark_session_closed(
        self, session_id: str, *, ago: float = 0.0, frame: bytes | None = None
    ) -> SessionClosed:
        """End the session and publish ``frame`` to its other holders.

        Presence here is never late, so no close is kept for later.
        """
        nodes = await self.session_nodes(session_id)
        ended = self.hub.end(session_id)
        published = () if frame is None else tuple(self._publish_to(nodes, frame))
        return SessionClosed(self.now() - ago, nodes, ended, published)
