"""The registry: this node's websockets per session ws id, the ids, and closing them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Set,
)
from dataclasses import dataclass
from typing import Any

import aiohttp_session
from aiohttp import WSCloseCode, web

from .backends.base import Backend, BackendUnavailableError, NodeHooks
from .backends.memory import MemoryBackend
from .ids import check_session_ws_id, local_id, redact, wire_id
from .nodebus import NodeBus
from .origins import normalize_origins
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws")

DEFAULT_SESSION_KEY = "aiohttp_session_ws_id"
"""The session key under which the session ws id is stored."""

IdFactory = Callable[[web.Request], Hashable | Awaitable[Hashable]]
"""Makes a new session ws id for a request; may be sync or async."""

ReconnectCallback = Callable[[], Awaitable[None]]
"""Called after the backend came back from an outage: frames may have been lost."""

PENDING_CLOSE_LIMIT = 10_000
"""How many close-alls asked for during a backend outage wait for it to end."""


def DEFAULT_ID_FACTORY(request: web.Request) -> str:  # noqa: N802 (1.1.1 name)
    """Return a new random session ws id: 32 hex digits from a UUID4."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """What the registry knows of one open websocket."""

    connection_id: str
    """A random id for this connection, unique in the cluster."""
    session_ws_id: Hashable
    """The session ws id the connection belongs to."""
    opened_at: float
    """When it was registered, in seconds since the epoch (:func:`time.time`)."""


class SessionWSRegistry(Mapping[Hashable, Set[web.WebSocketResponse]]):
    """Tracks the open websockets of each session, and closes them on demand.

    As a read-only mapping it holds *this node's* websockets: session ws id ->
    frozen set of its open :class:`~aiohttp.web.WebSocketResponse` objects.
    Cluster-wide questions (how many connections a session has anywhere) are
    the async methods, answered by the ``backend``.

    As in 1.1.1, the storage is ``self._registry``, a dict of session ws id ->
    set of websockets: a subclass may put sockets there itself, and the
    mapping, :meth:`close_all`, :meth:`close_all_session` and
    :meth:`unregister` see them (other nodes learn only of sockets that went
    through :meth:`register`).

    :param id_factory: makes a new session ws id from a request (sync or async).
    :param session_key: the session key that holds the session ws id.
    :param backend: where presence lives and how nodes talk; defaults to a new
        :class:`~aiohttp_session_ws.backends.MemoryBackend` (one process).
    :param allowed_origins: origins (``"https://example.com"``) that may open a
        websocket besides the request's own origin (its scheme and ``Host``);
        ``"https://*.example.com"`` allows every subdomain, ``"*"`` every origin.
    :param close_timeout: how long :meth:`close_all_session` waits for other
        nodes to report their closed websockets, and how long a scheduled close
        waits for the response's connection to end, in seconds.
    :raises ValueError: an entry of ``allowed_origins`` is not an origin.
    """

    def __init__(
        self,
        *,
        id_factory: IdFactory = DEFAULT_ID_FACTORY,
        session_key: str = DEFAULT_SESSION_KEY,
        backend: Backend | None = None,
        allowed_origins: Iterable[str] = (),
        close_timeout: float = 5.0,
    ) -> None:
        self.id_factory = id_factory
        self.session_key = session_key
        self.allowed_origins = normalize_origins(allowed_origins)
        self.close_timeout = close_timeout
        self.node_id = uuid.uuid4().hex
        self.backend = backend if backend is not None else MemoryBackend()
        self._registry: dict[Hashable, set[web.WebSocketResponse]] = {}
        self._records: dict[web.WebSocketResponse, ConnectionRecord] = {}
        self._opened: dict[web.WebSocketResponse, float] = {}
        self._pending_closes: collections.deque[tuple[str, float]] = collections.deque()
        self._tasks = TaskOwner(logger)
        self._recovering: asyncio.Task[None] | None = None
        self._recover_again = False
        self._shutting_down = False
        self.on_reconnect: list[ReconnectCallback] = []
        """Async callbacks run after the backend recovers from an outage, when
        messages between nodes may have been lost (re-read state you cache)."""
        self._bus = NodeBus(self.node_id, self.backend, self._tasks)
        self._bus.handle("close_session", self._close_session_for_node)
        self.backend.attach(
            self.node_id,
            NodeHooks(
                on_frame=self._bus.receive,
                on_session_closed=self._session_closed_elsewhere,
                on_reconnect=self._backend_reconnected,
            ),
        )

    # Mapping: this node's sockets
    def __getitem__(self, key: Hashable) -> frozenset[web.WebSocketResponse]:
        return frozenset(self._registry[key])

    def __contains__(self, key: object) -> bool:
        return key in self._registry

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    # lifecycle
    async def start(self) -> None:
        """Start the backend; :func:`~aiohttp_session_ws.setup` calls it on startup."""
        self._shutting_down = False
        await self.backend.start()

    @property
    def healthy(self) -> bool:
        """False while the backend is unreachable: other nodes may miss messages."""
        return self.backend.healthy

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` has begun: new websockets are refused."""
        return self._shutting_down

    async def shutdown(self) -> int:
        """Refuse new websockets, then close every open one with ``GOING_AWAY``.

        :func:`~aiohttp_session_ws.setup` calls it on application shutdown.
        Returns how many websockets :meth:`close_all` closed.
        """
        self._shutting_down = True
        return await self.close_all()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish pending closes (cancel them after ``timeout`` s); stop the backend.

        Close-alls still held back by a backend outage get one last try; each
        one that cannot be delivered is logged as an error.
        """
        await self._tasks.aclose(timeout)
        if self._pending_closes:
            with contextlib.suppress(Exception):  # logged where it happens
                await asyncio.wait_for(self._send_pending_closes(), timeout)
        for session, _ in self._pending_closes:
            logger.error(
                "Stopped with the close-all of session %s undelivered: its "
                "websockets on other nodes stay open",
                redact(session),
            )
        self._pending_closes.clear()
        await self.backend.stop()

    # session ws ids
    async def generate_id(self, request: web.Request) -> Hashable:
        """Make a new session ws id with ``id_factory``.

        :raises TypeError: the factory made something other than a str or an
            int; the id is stored in the session as JSON, and other types do
            not come back the same (a tuple comes back as an unhashable list).
        :raises ValueError: the factory made an empty string, or a string with
            a lone surrogate (Redis cannot carry it).
        """
        result = self.id_factory(request)
        session_ws_id = await result if inspect.isawaitable(result) else result
        check_session_ws_id(session_ws_id, source="id_factory's id")
        return session_ws_id

    async def get_id(self, request: web.Request) -> Any:
        """Return the request's session ws id, or ``None`` when it has none."""
        session = await aiohttp_session.get_session(request)
        return session.get(self.session_key)

    async def new_id(self, request: web.Request) -> None:
        """Give the request's session a new session ws id."""
        session = await aiohttp_session.get_session(request)
        session[self.session_key] = await self.generate_id(request)

    async def delete_id(self, request: web.Request) -> None:
        """Remove the session ws id from the request's session."""
        session = await aiohttp_session.get_session(request)
        session.pop(self.session_key, None)

    async def ensure_id(self, request: web.Request) -> None:
        """Give the request's session a session ws id if it has none."""
        if await self.get_id(request) is None:
            await self.new_id(request)

    # registration
    def register(self, session_ws_id: Hashable, wsr: web.WebSocketResponse) -> None:
        """Track ``wsr`` as an open websocket of ``session_ws_id``.

        :raises TypeError: the id is not a ``str`` or an ``int``.
        :raises ValueError: the id is an empty string or not valid Unicode.
        """
        check_session_ws_id(session_ws_id)
        if wsr in self._records:
            return
        record = ConnectionRecord(uuid.uuid4().hex, session_ws_id, time.time())
        self._records[wsr] = record
        self._opened[wsr] = self.backend.now()
        self._registry.setdefault(session_ws_id, set()).add(wsr)
        try:
            self.backend.add_connection(wire_id(session_ws_id), record.connection_id)
        except Exception:
            logger.exception("Backend could not record a connection")

    def unregister(self, session_ws_id: Hashable, wsr: web.WebSocketResponse) -> None:
        """Stop tracking ``wsr``; unknown sockets and ids are ignored."""
        sockets = self._registry.get(session_ws_id)
        if sockets is None or wsr not in sockets:
            return
        sockets.discard(wsr)
        if not sockets:
            del self._registry[session_ws_id]
        record = self._records.get(wsr)
        if record is None or record.session_ws_id != session_ws_id:
            return  # put in _registry by hand: the backend never heard of it
        del self._records[wsr]
        self._opened.pop(wsr, None)
        try:
            self.backend.remove_connection(wire_id(session_ws_id), record.connection_id)
        except Exception:
            logger.exception("Backend could not remove a connection")

    def connection(self, wsr: web.WebSocketResponse) -> ConnectionRecord | None:
        """Return the record of a websocket on this node, or ``None`` if unknown."""
        return self._records.get(wsr)

    def connections(
        self, session_ws_id: Hashable | None = None
    ) -> list[ConnectionRecord]:
        """Records of this node's connections, of one session or of all."""
        if session_ws_id is None:
            return list(self._records.values())
        sockets = self._registry.get(session_ws_id, ())
        return [self._records[ws] for ws in sockets if ws in self._records]

    # presence, cluster-wide
    async def session_nodes(self, session_ws_id: Hashable) -> Mapping[str, int]:
        """Map each node holding connections of the session to their count.

        :raises TypeError: the id is not a ``str`` or an ``int``.
        :raises ValueError: the id is an empty string or not valid Unicode.
        """
        check_session_ws_id(session_ws_id)
        return await self.backend.session_nodes(wire_id(session_ws_id))

    async def count_connections(self, session_ws_id: Hashable) -> int:
        """How many connections the session has open, on every node."""
        return sum((await self.session_nodes(session_ws_id)).values())

    async def connected_sessions(self) -> frozenset[Hashable]:
        """The ids of the sessions with an open connection on any node."""
        sessions = await self.backend.sessions()
        ids = (local_id(wire) for wire in sessions)
        return frozenset(i for i in ids if i is not None)

    # closing
    async def close_all(
        self,
        *,
        code: int = WSCloseCode.GOING_AWAY,
        message: bytes = b"Server shutdown",
    ) -> int:
        """Close every websocket on this node; return how many closed."""
        sockets = {ws for group in self._registry.values() for ws in group}
        return await _close_sockets(sockets, code, message)

    async def close_all_session(self, session_ws_id: Hashable) -> int:
        """Close every websocket of the session on every node; return how many closed.

        It waits at most ``close_timeout`` for the other nodes that hold the
        session. While the backend is down it closes this node's websockets
        and remembers the rest of the work until the backend is back.
        It takes an id, not a request, because by the time it runs the request's
        session may already hold a new one.
        """
        # concurrently: a local client that does not answer the close frame
        # keeps close() waiting for seconds, and the other nodes need not wait
        sockets = list(self._registry.get(session_ws_id, ()))
        try:
            check_session_ws_id(session_ws_id)
        except (TypeError, ValueError):  # a 1.1.1-style id no other node can hold
            return await _close_sockets(sockets, WSCloseCode.OK, b"")
        local, elsewhere = await asyncio.gather(
            _close_sockets(sockets, WSCloseCode.OK, b""),
            self._close_session_elsewhere(wire_id(session_ws_id)),
        )
        return local + elsewhere

    async def _close_session_elsewhere(self, session: str) -> int:
        """Record the close-all and ask the nodes holding the session to close."""
        try:
            marked = await self.backend.mark_session_closed(session)
        except BackendUnavailableError as exc:
            logger.warning(
                "Backend unavailable (%s): closing the local websockets of %s; "
                "the other nodes follow when it is back",
                exc,
                redact(session),
            )
            self._remember_close(session)
            return 0
        except Exception:  # not an outage: asking again would fail the same way
            logger.exception(
                "The backend refused the close-all of %s: only this node's "
                "websockets were closed",
                redact(session),
            )
            return 0
        closed = await self._close_on_nodes(marked.nodes, {"session": session})
        if not self.backend.healthy:  # it failed meanwhile: send again once back
            self._remember_close(session)
        return closed

    async def _close_on_nodes(self, nodes: Iterable[str], body: dict[str, Any]) -> int:
        others = [node for node in nodes if node != self.node_id]
        replies = await self._bus.call(
            others, "close_session", body, timeout=self.close_timeout
        )
        return sum(n for n in replies.values() if isinstance(n, int))

    def _local_sockets(
        self, session: str, before: float | None = None
    ) -> list[web.WebSocketResponse]:
        key = local_id(session)
        sockets = self._registry.get(key, ()) if key is not None else ()
        if before is None:
            return list(sockets)
        # a socket put in _registry by hand has no time: err towards closing
        return [ws for ws in sockets if self._opened.get(ws, before) <= before]

    async def _close_session_for_node(self, body: dict[str, Any]) -> int:
        sockets = self._local_sockets(body["session"], body.get("before"))
        return await _close_sockets(sockets, WSCloseCode.OK, b"")

    def _session_closed_elsewhere(self, session: str, at: float) -> None:
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
            _close_sockets(sockets, WSCloseCode.OK, b""),
            name=f"close-late-{redact(session)}",
        )

    def _remember_close(self, session: str) -> None:
        if len(self._pending_closes) >= PENDING_CLOSE_LIMIT:
            dropped, _ = self._pending_closes.popleft()
            logger.error(
                "Too many close-alls wait for the backend; dropped the one of %s",
                redact(dropped),
            )
        self._pending_closes.append((session, time.monotonic()))

    def _backend_reconnected(self) -> None:
        if self._tasks.closed:
            return
        if self._recovering is not None and not self._recovering.done():
            self._recover_again = True
            return
        self._recovering = self._tasks.spawn(
            self._recover(), name="backend-reconnected"
        )

    async def _recover(self) -> None:
        """Finish the close-alls the outage held back, then tell the app."""
        self._recover_again = True
        while self._recover_again:
            self._recover_again = False
            if not await self._send_pending_closes():
                continue  # down again: the next recovery tells the app
            for callback in list(self.on_reconnect):
                try:
                    await callback()
                except Exception:
                    logger.exception("An on_reconnect callback failed")

    async def _send_pending_closes(self) -> bool:
        """Send the held-back close-alls, oldest first.

        Returns False if the backend failed again: the rest wait for the next
        recovery.
        """
        while self._pending_closes:
            # taken off only once handled: a cancel (at stop) loses nothing
            entry = self._pending_closes[0]
            session, asked_at = entry
            ago = time.monotonic() - asked_at
            if ago > self.backend.missed_close_window:
                self._handled(entry)
                logger.error(
                    "Dropped the close-all of %s asked %.0f s ago: older than the "
                    "backend's missed_close_window",
                    redact(session),
                    ago,
                )
                continue
            try:
                marked = await self.backend.mark_session_closed(session, ago=ago)
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
            self._pending_closes.remove(entry)

    async def schedule_close_all_session(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """Close the session's websockets once ``response`` has been sent.

        It turns off keep-alive on ``response`` so the connection ends right after
        it, and closes when the connection's task ends, however it ends (or after
        ``close_timeout`` s at the latest). The close runs in a task the registry
        owns; :meth:`stop` (app cleanup) lets it finish.
        """
        session_ws_id = await self.get_id(request)
        response.force_close()
        if session_ws_id is None:
            return
        self._tasks.spawn(
            self._close_after(request.task, session_ws_id),
            name=f"close-session-{redact(wire_id(session_ws_id))}",
        )

    async def _close_after(
        self, connection_task: asyncio.Task[None] | None, session_ws_id: Hashable
    ) -> None:
        if connection_task is not None:
            # wait() raises neither the task's error nor its cancellation; the
            # bound covers a middleware that dropped force_close() on keep-alive.
            await asyncio.wait([connection_task], timeout=self.close_timeout)
        closed = await self.close_all_session(session_ws_id)
        logger.debug(
            "Closed %s websocket(s) of %s", closed, redact(wire_id(session_ws_id))
        )


async def _close_sockets(
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
