"""Counters of the protocol connections, and the snapshot :meth:`stats` returns."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Counters:
    """What this node's protocol connections did so far; cheap to bump."""

    frames_in: int = 0
    frames_out: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    queue_drops: int = 0
    overflow_closes: int = 0
    rate_closes: int = 0
    pending_requests: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one node's numbers (:meth:`SessionWSRegistry.stats`).

    Counts of this node only; the cluster's are the sum over its nodes.
    """

    connections: int
    """Open websockets registered on this node, protocol or not."""
    sessions: int
    """Sessions with an open websocket on this node."""
    protocol_connections: int
    """Open websockets that speak the protocol."""
    frames_in: int
    """Client frames received by protocol connections, since start."""
    frames_out: int
    """Server frames written to protocol connections, since start."""
    errors: dict[str, int]
    """``error`` frames sent, by code, since start."""
    queue_drops: int
    """Pushes dropped from the queue of a slow reader (``drop_oldest``)."""
    overflow_closes: int
    """Connections closed with 1013: their queue overflowed."""
    rate_closes: int
    """Connections closed with 1008: over the rate limit too long."""
    pending_requests: int
    """Requests in progress now."""
    message_handlers: int = 0
    """Request handlers registered on this node (server code's and its
    connections', by path and addressed)."""
    requests_handled: int = 0
    """Messaging requests waiting now for a client connection of this node to
    respond."""
    filter_sends: int = 0
    """Filter sends of this node still waiting for responses."""
    locks_held: int = 0
    """Session locks that this node's callers hold."""
    lock_waits: int = 0
    """Session locks that this node's callers wait for."""
    event_subscriptions: int = 0
    """Event subscriptions on this node (server code's and connections')."""

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a dict (for JSON, logs, a metrics exporter)."""
        return {name: getattr(self, name) for name in self.__slots__}
