"""Push: send data to every protocol connection of a session, or of the cluster."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import Any

from .backends.base import Backend, BackendUnavailableError
from .ids import check_session_ws_id, local_id, redact, wire_id
from .nodebus import JSONDict, NodeBus, Publisher
from .peers import Peer, Peers
from .protocol import encode_push

logger = logging.getLogger("aiohttp_session_ws")

_ID_TYPES = (str, int)


class Push:
    """Delivers push frames: encoded once, the same bytes to every socket.

    Local connections are served first and without the backend; the other
    nodes that hold the session get one frame each, which the backend looks
    up and publishes in one round trip. The count that comes back is how
    many connections the frame reached, on every node.
    """

    def __init__(
        self, backend: Backend, bus: NodeBus, peers: Peers, *, timeout: float
    ) -> None:
        self._backend = backend
        self._bus = bus
        self._peers = peers
        self.timeout = timeout
        # a push's writes never wait: run as the frame arrives
        bus.handle("push", self._push_here, inline=True)
        bus.handle("broadcast", self._broadcast_here, inline=True)

    async def send_to_session(self, session_ws_id: Hashable, data: Any) -> int:
        """Push ``data`` to every protocol connection of the session, on every node.

        Returns how many connections it reached. While the backend is down only
        this node's are reached (and the outage is logged).

        :raises TypeError: ``data`` is not JSON-able, or the id is not a str
            or an int.
        :raises ValueError: ``data`` holds a NaN or infinity; or the id is
            invalid.
        """
        peers = self._peers.of(session_ws_id)
        if not peers or type(session_ws_id) not in _ID_TYPES:
            # a connected session's id was checked when it registered; True
            # and 1.0 equal 1 as keys, but are not ids
            check_session_ws_id(session_ws_id)
        frame = encode_push(data)
        reached = 0
        for peer in peers:  # _deliver, inlined: one coroutine less per push
            if await peer.deliver(frame):
                reached += 1
        wire = wire_id(session_ws_id)
        if self._backend.holds_alone(wire):
            return reached  # local work first: no other node to ask
        body = {"session": wire, "frame": frame.decode("utf-8")}

        async def publish(call: bytes) -> list[str]:
            return await self._backend.publish_to_session(wire, call)

        return reached + await self._call(publish, "push", body, wire)

    async def broadcast(self, data: Any) -> int:
        """Push ``data`` to every protocol connection of the cluster.

        Returns how many connections it reached.

        :raises TypeError: ``data`` is not JSON-able.
        :raises ValueError: ``data`` holds a NaN or an infinity.
        """
        frame = encode_push(data)
        reached = await _deliver(self._peers, frame)
        body = {"frame": frame.decode("utf-8")}
        return reached + await self._call(
            self._backend.publish_to_all, "broadcast", body, None
        )

    async def _call(
        self, publish: Publisher, kind: str, body: JSONDict, session: str | None
    ) -> int:
        try:
            replies = await self._bus.call_published(
                publish, kind, body, timeout=self.timeout
            )
        except BackendUnavailableError as exc:
            logger.warning(
                "Backend unavailable (%s): pushed to this node's connections of "
                "%s only",
                exc,
                "the cluster" if session is None else redact(session),
            )
            return 0
        return sum(n for n in replies.values() if isinstance(n, int))

    async def _push_here(self, body: JSONDict) -> int:
        session_ws_id = local_id(body["session"])
        if session_ws_id is None:
            return 0
        return await _deliver(
            self._peers.of(session_ws_id), body["frame"].encode("utf-8")
        )

    async def _broadcast_here(self, body: JSONDict) -> int:
        return await _deliver(self._peers, body["frame"].encode("utf-8"))


async def _deliver(peers: Iterable[Peer], frame: bytes) -> int:
    reached = 0
    for peer in peers:
        if await peer.deliver(frame):
            reached += 1
    return reached
