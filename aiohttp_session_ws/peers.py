"""The protocol connections of this node, per session: where services deliver."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Protocol

logger = logging.getLogger("aiohttp_session_ws")


class Peer(Protocol):
    """A protocol connection, as the services see it (no aiohttp here)."""

    @property
    def connection_id(self) -> str:
        """The connection's id, unique in the cluster (``$ConnectionId``)."""

    @property
    def session_ws_id(self) -> Hashable:
        """The session ws id of the connection's session (a secret)."""

    @property
    def handle(self) -> str:
        """The public handle of the connection's session (``$SessionId``)."""

    def connection_properties(self) -> dict[str, str]:
        """The fixed properties of the connection, and its factory's ones."""

    async def deliver(self, frame: bytes) -> bool:
        """Send an encoded push frame; False if the connection is gone.

        It never waits on a slow client: the frame waits in the connection's
        bounded queue instead, and may be dropped from it (see ``overflow``).
        """

    async def drained(self) -> bool:
        """Wait until the frames queued so far are written; False if gone."""

    async def send(self, frame: bytes) -> bool:
        """Send an encoded frame that must not be dropped (a request to handle).

        Like :meth:`deliver`, but a full queue closes the connection rather
        than drop it. False if the connection is gone.
        """


class Peers:
    """The protocol connections open on this node, by session ws id."""

    # tuples: a push reads them far more often than a connection changes
    # them, and a tuple needs no copy to survive changes during a delivery
    def __init__(self) -> None:
        self._by_session: dict[Hashable, tuple[Peer, ...]] = {}
        self._count = 0
        self.on_discard: list[Callable[[Peer], None]] = []
        """Called with each connection that closed (services drop what it held)."""

    def __len__(self) -> int:
        return self._count

    def add(self, peer: Peer) -> None:
        """Track an open protocol connection."""
        peers = self._by_session.get(peer.session_ws_id, ())
        if peer not in peers:
            self._by_session[peer.session_ws_id] = (*peers, peer)
            self._count += 1

    def discard(self, peer: Peer) -> None:
        """Stop tracking a connection; unknown ones are ignored."""
        peers = self._by_session.get(peer.session_ws_id)
        if peers is None or peer not in peers:
            return
        self._count -= 1
        rest = tuple(other for other in peers if other is not peer)
        if rest:
            self._by_session[peer.session_ws_id] = rest
        else:
            del self._by_session[peer.session_ws_id]
        for callback in self.on_discard:
            try:
                callback(peer)
            except Exception:
                logger.exception("A closed-connection callback failed")

    def of(self, session_ws_id: Hashable) -> tuple[Peer, ...]:
        """The open protocol connections of one session (a snapshot)."""
        return self._by_session.get(session_ws_id, ())

    def __iter__(self) -> Iterator[Peer]:
        for peers in list(self._by_session.values()):
            yield from peers
