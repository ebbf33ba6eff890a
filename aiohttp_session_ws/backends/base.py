"""The one interface every backend implements and every service uses."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping

FrameHandler = Callable[[bytes], Awaitable[None]]
"""Receives a frame that another node published to this node."""


class Backend(abc.ABC):
    """Cluster state and node-to-node transport for one node's registry.

    A backend serves exactly one registry. The registry *attaches* to it when it
    is created (giving its node id and the handler for incoming frames), then
    starts and stops it with the application. Session ids are strings here.
    """

    _node_id: str | None = None
    _on_frame: FrameHandler | None = None

    def attach(self, node_id: str, on_frame: FrameHandler) -> None:
        """Bind this backend to the registry of node ``node_id``."""
        if self._node_id is not None:
            raise RuntimeError(
                f"{type(self).__name__} is already attached to a registry; "
                "create one backend per registry"
            )
        self._node_id = node_id
        self._on_frame = on_frame

    @property
    def node_id(self) -> str:
        """The id of the node this backend serves."""
        if self._node_id is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached: pass it to "
                "SessionWSRegistry(backend=...)"
            )
        return self._node_id

    async def deliver(self, frame: bytes) -> None:
        """Hand a frame received for this node to the attached registry."""
        if self._on_frame is not None:
            await self._on_frame(frame)

    # lifecycle
    @abc.abstractmethod
    async def start(self) -> None:
        """Join the cluster: start listening for frames addressed to this node."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the cluster: stop listening and withdraw this node's presence."""

    # node bus
    @abc.abstractmethod
    async def publish(self, node_id: str, frame: bytes) -> None:
        """Send ``frame`` to node ``node_id`` (fire and forget)."""

    # presence
    @abc.abstractmethod
    def add_connection(self, session_id: str, connection_id: str) -> None:
        """Note that this node opened a connection of ``session_id``.

        It does not block: a backend that talks to a server writes in the
        background, so that registering a websocket never waits on the network.
        """

    @abc.abstractmethod
    def remove_connection(self, session_id: str, connection_id: str) -> None:
        """Note that this node closed a connection of ``session_id``."""

    @abc.abstractmethod
    async def session_nodes(self, session_id: str) -> Mapping[str, int]:
        """Map each node that holds connections of ``session_id`` to their count."""

    @abc.abstractmethod
    async def sessions(self) -> frozenset[str]:
        """Every session id with an open connection on any node."""
