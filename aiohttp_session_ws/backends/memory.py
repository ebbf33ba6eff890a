"""The embedded default backend: dicts and asyncio queues, one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from .base import Backend, SessionClosed

logger = logging.getLogger("aiohttp_session_ws.memory")


class MemoryHub:
    """The shared state of the memory backends that form one in-process cluster.

    Every :class:`MemoryBackend` has a hub; backends created with the same hub
    see each other's presence and can publish frames to each other, exactly as
    nodes sharing a Redis do. That lets one process host several nodes, which is
    how the cluster code paths are exercised without a server.
    """

    def __init__(self) -> None:
        self.inboxes: dict[str, asyncio.Queue[bytes]] = {}
        """Running node id -> the queue of frames published to it."""
        self.presence: dict[str, dict[str, set[str]]] = {}
        """Session id -> node id -> ids of that node's connections of the session."""


class MemoryBackend(Backend):
    """Keeps presence in a :class:`MemoryHub` and delivers frames through queues."""

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open this node's inbox in the hub and start delivering from it."""
        if self._listener is not None:
            return
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.hub.inboxes[self.node_id] = inbox
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
            for session_id in list(self.hub.presence):
                self._drop(session_id, self._node_id)
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
        """Record the connection in the hub at once."""
        nodes = self.hub.presence.setdefault(session_id, {})
        nodes.setdefault(self.node_id, set()).add(connection_id)

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
        if nodes is None:
            return
        nodes.pop(node_id, None)
        if not nodes:
            del self.hub.presence[session_id]

    async def session_nodes(self, session_id: str) -> Mapping[str, int]:
        """Read the session's nodes from the hub."""
        nodes = self.hub.presence.get(session_id, {})
        return {node: len(connections) for node, connections in nodes.items()}

    async def sessions(self) -> frozenset[str]:
        """Read the connected sessions from the hub."""
        return frozenset(self.hub.presence)

    async def mark_session_closed(
        self, session_id: str, *, ago: float = 0.0
    ) -> SessionClosed:
        """Return the session's nodes; presence here is never late, so none is kept."""
        return SessionClosed(self.now() - ago, await self.session_nodes(session_id))
