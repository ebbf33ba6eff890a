"""Close-all across the cluster: the close, the held-back ones, and recovery."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from aiohttp import WSCloseCode, web

from .backends.base import Backend, BackendUnavailableError, SessionClosed
from .ids import redact
from .nodebus import JSONDict, NodeBus
from .sessions import Sessions
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws")

PENDING_CLOSE_LIMIT = 10_000
"""How many close-alls asked for during a backend outage wait for it to end."""

LocalSockets = Callable[[str, "float | None"], list[web.WebSocketResponse]]
"""This node's open sockets of a wire id (opened at or before a time, if given)."""


class Closing:
    """Closes a session's websockets on the other nodes, whatever the backend does.

    A close-all is one backend round trip (record it, and publish the close
    to the nodes that hold the session) and then each node's reply. While
    the backend is down the close-alls wait, at most
    :data:`PENDING_CLOSE_LIMIT` of them, until it is back; then they are
    sent again, oldest first, and the app's ``on_reconnect`` callbacks run.
    """

    def __init__(
        self,
        backend: Backend,
        bus: NodeBus,
        tasks: TaskOwner,
        sessions: Sessions,
        local_sockets: LocalSockets,
        on_reconnect: list[Callable[[], Awaitable[None]]],
        *,
        timeout: float,
    ) -> None:
        self._backend = backend
        self._bus = bus
        self._tasks = tasks
        self._sessions = sessions
        self._local_sockets = local_sockets
        self._on_reconnect = on_reconnect
        self.timeout = timeout
        self.pending: collections.deque[tuple[str, float]] = collections.deque()
        self._recovering: asyncio.Task[None] | None = None
        self._recover_again = False
        bus.handle("close_session", self._close_here)

    async def close_elsewhere(self, session: str) -> int:
        """Record the close-all and close the session on the nodes holding it."""
        marked: list[SessionClosed] = []

        async def publish(frame: bytes) -> Collection[str]:
            closed = await self._backend.mark_session_closed(session, frame=frame)
            marked.append(closed)
            return closed.published

        try:
            replies = await self._bus.call_published(
                publish, "close_session", {"session": session}, timeout=self.timeout
            )
        except BackendUnavailableError as exc:
            logger.warning(
                "Backend unavailable (%s): closing the local websockets of %s; "
                "the other nodes follow when it is back",
                exc,
                redact(session),
            )
            self._remember(session)
            return 0
        except Exception:  # not an outage: asking again would fail the same way
            logger.exception(
                "The backend refused the close-all of %s: only this node's "
                "websockets were closed",
                redact(session),
            )
            return 0
        if marked and marked[0].ended:
            self._sessions.report_ended([session])
        if not self._backend.healthy:  # it failed meanwhile: send again once back
            self._remember(session)
        return _count(replies.values())

    async def _close_on_nodes(self, nodes: Iterable[str], body: JSONDict) -> int:
        others = [node for node in nodes if node != self._bus.node_id]
        replies = await self._bus.call(
            others, "close_session", body, timeout=self.timeout
        )
        return _count(replies.values())

    async def _close_here(self, body: JSONDict) -> int:
        sockets = self._local_sockets(body["session"], body.get("before"))
        return await close_sockets(sockets, WSCloseCode.OK, b"")

    def closed_elsewhere(self, session: str, at: float) -> None:
        """Close what a close-all missed here (the backend saw it late)."""
        sockets = self._local_sockets(session, at)
        if not sockets or self._tasks.closed:
            return
        logger.info(
            "Closing %d websocket(s) of %s, closed elsewhere while this node's "
            "presence was not yet known",
            len(sockets),
            redact(session),
        )
        self._tasks.spawn(
            close_sockets(sockets, WSCloseCode.OK, b""),
            name=f"close-late-{redact(session)}",
        )

    def _remember(self, session: str) -> None:
        if len(self.pending) >= PENDING_CLOSE_LIMIT:
            dropped, _ = self.pending.popleft()
            logger.error(
                "Too many close-alls wait for the backend; dropped the one of %s",
                redact(dropped),
            )
        self.pending.append((session, time.monotonic()))

    def backend_reconnected(self) -> None:
        """The backend is back: send the held-back close-alls, then tell the app."""
        if self._tasks.closed:
            return
        if self._recovering is not None and not self._recovering.done():
            self._recover_again = True
            return
        self._recovering = self._tasks.spawn(
            self._recover(), name="backend-reconnected"
        )

    async def _recover(self) -> None:
        self._recover_again = True
        while self._recover_again:
            self._recover_again = False
            if not await self.send_pending():
                continue  # down again: the next recovery tells the app
            for callback in list(self._on_reconnect):
                try:
                    await callback()
                except Exception:
                    logger.exception("An on_reconnect callback failed")

    async def send_pending(self) -> bool:
        """Send the held-back close-alls, oldest first.

        Returns False if the backend failed again: the rest wait for the next
        recovery.
        """
        while self.pending:
            # taken off only once handled: a cancel (at stop) loses nothing
            entry = self.pending[0]
            session, asked_at = entry
            ago = time.monotonic() - asked_at
            if ago > self._backend.missed_close_window:
                self._handled(entry)
                logger.error(
                    "Dropped the close-all of %s asked %.0f s ago: older than the "
                    "backend's missed_close_window",
                    redact(session),
                    ago,
                )
                continue
            try:
                marked = await self._backend.mark_session_closed(session, ago=ago)
            except BackendUnavailableError as exc:
                logger.warning("Backend failed again (%s); close-alls wait for it", exc)
                return False
            except Exception:  # not an outage: retrying would fail the same way
                self._handled(entry)
                logger.exception(
                    "Dropped the held-back close-all of %s: the backend refused it",
                    redact(session),
                )
                continue
            self._handled(entry)
            if marked.ended:
                self._sessions.report_ended([session])
            try:
                await self._close_on_nodes(
                    marked.nodes, {"session": session, "before": marked.at}
                )
            except Exception:  # recorded already: the nodes read it on resync
                logger.exception(
                    "Asking the nodes to close the websockets of %s failed",
                    redact(session),
                )
        return True

    def _handled(self, entry: tuple[str, float]) -> None:
        """Take a held-back close-all off the queue (the bound may have already)."""
        with contextlib.suppress(ValueError):
            self.pending.remove(entry)

    async def stop(self, timeout: float) -> None:
        """Give the held-back close-alls one last try; log each one left."""
        if self.pending:
            with contextlib.suppress(Exception):  # logged where it happens
                await asyncio.wait_for(self.send_pending(), timeout)
        for session, _ in self.pending:
            logger.error(
                "Stopped with the close-all of session %s undelivered: its "
                "websockets on other nodes stay open",
                redact(session),
            )
        self.pending.clear()


def _count(replies: Iterable[Any]) -> int:
    return sum(n for n in replies if isinstance(n, int) and not isinstance(n, bool))


async def close_sockets(
    sockets: Iterable[web.WebSocketResponse], code: int, message: bytes
) -> int:
    """Close the open, prepared sockets concurrently; one failure spares the rest."""
    targets = [ws for ws in sockets if ws.prepared and not ws.closed]
    results = await asyncio.gather(
        *(ws.close(code=code, message=message) for ws in targets),
        return_exceptions=True,
    )
    closed = 0
    for result in results:
        if isinstance(result, BaseException):
            logger.error("Closing a websocket failed", exc_info=result)
        elif result:
            closed += 1
    return closed
