"""The registry: this node's websockets per session ws id, the ids, and closing them."""

from __future__ import annotations

import asyncio
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

from .authorization import Authorize, deny_all
from .backends.base import Backend, NodeHooks
from .backends.memory import MemoryBackend
from .closing import Closing, close_sockets
from .events.model import EventPayloadJson, RegisterEvent
from .events.ops import event_ops
from .events.service import SESSION_EVENT_PREFIX, Events
from .ids import check_session_ws_id, local_id, redact, wire_id
from .lock_ops import lock_ops
from .locks import Locks
from .messaging.ops import messaging_ops
from .messaging.service import Messaging
from .nodebus import NodeBus
from .origins import normalize_origins
from .peers import Peers
from .protocol import Arg, Op, OpTable, ProtocolLimits, Request
from .push import Push
from .sessions import SessionCallback, Sessions, properties_op
from .stats import Counters, Stats
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws")

DEFAULT_SESSION_KEY = "aiohttp_session_ws_id"
"""The session key under which the session ws id is stored."""

IdFactory = Callable[[web.Request], Hashable | Awaitable[Hashable]]
"""Makes a new session ws id for a request; may be sync or async."""

ReconnectCallback = Callable[[], Awaitable[None]]
"""Called after the backend came back from an outage: frames may have been lost."""

PropertiesFactory = Callable[
    [web.Request], "Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None"
]
"""Makes the properties of a protocol connection from its upgrade request."""


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
    opened_on_backend: float
    """When it was registered, on the backend's clock (:meth:`Backend.now`)."""


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
        waits for the response's connection to end, in seconds. Pushes wait as
        long for the other nodes' counts.
    :param limits: the limits of protocol connections (see :doc:`/protocol`).
    :param grace_period: how long a session stays alive after its last
        connection closed, in seconds (so that a page reload does not end it).
    :param properties_factory: called with the upgrade request of each
        protocol connection (sync or async); returns its properties: user
        keys, and ``$Principal`` and ``$Roles`` (see :doc:`/sessions`).
    :param authorize: the policy asked about every client request that
        reaches beyond its own session, as ``authorize(request, action)``
        (sync or async); the default denies them all (see :doc:`/security`).
    :param session_events: register an event when a session starts and
        ends, cluster-wide (``session_ws/session/started`` and ``.../ended``,
        payload: the public handle and the principal; see :doc:`/events`).
    :raises ValueError: an entry of ``allowed_origins`` is not an origin, or
        ``grace_period`` is negative.
    """

    def __init__(
        self,
        *,
        id_factory: IdFactory = DEFAULT_ID_FACTORY,
        session_key: str = DEFAULT_SESSION_KEY,
        backend: Backend | None = None,
        allowed_origins: Iterable[str] = (),
        close_timeout: float = 5.0,
        limits: ProtocolLimits | None = None,
        grace_period: float = 30.0,
        properties_factory: PropertiesFactory | None = None,
        authorize: Authorize = deny_all,
        session_events: bool = False,
    ) -> None:
        if not grace_period >= 0:
            raise ValueError(f"grace_period must be >= 0, not {grace_period!r}")
        self.id_factory = id_factory
        self.session_key = session_key
        self.allowed_origins = normalize_origins(allowed_origins)
        self.close_timeout = close_timeout
        self.limits = limits if limits is not None else ProtocolLimits()
        self.properties_factory = properties_factory
        self.authorize = authorize
        self.node_id = uuid.uuid4().hex
        self.backend = backend if backend is not None else MemoryBackend()
        self.backend.grace_period = grace_period
        self._registry: dict[Hashable, set[web.WebSocketResponse]] = {}
        self._records: dict[web.WebSocketResponse, ConnectionRecord] = {}
        self._by_connection_id: dict[str, ConnectionRecord] = {}
        self._tasks = TaskOwner(logger)
        self._shutting_down = False
        self.on_reconnect: list[ReconnectCallback] = []
        """Async callbacks run after the backend recovers from an outage, when
        messages between nodes may have been lost (re-read state you cache)."""
        self.peers = Peers()
        """This node's protocol connections."""
        self.counters = Counters()
        """What the protocol connections did (read it through :meth:`stats`)."""
        self.ops: OpTable[Any] = OpTable()
        """The client ops the protocol answers; each service adds its own."""
        self._bus = NodeBus(self.node_id, self.backend, self._tasks)
        self.sessions = Sessions(self.backend, self._tasks)
        """Public handles, properties and the lifecycle of sessions."""
        self.push = Push(self.backend, self._bus, self.peers, timeout=close_timeout)
        """Pushes to the protocol connections of a session, or of all."""
        self.closing = Closing(
            self.backend,
            self._bus,
            self._tasks,
            self.sessions,
            self._local_sockets,
            self.on_reconnect,
            timeout=close_timeout,
        )
        """Close-all across the cluster."""
        self.messaging = Messaging(self.backend, self._bus, self.peers, self._tasks)
        """Request-response messaging: to a path, a session, a filter."""
        self.events = Events(self.backend, self._tasks)
        """The event bus: register, subscribe with replay, query."""
        if session_events:
            self.sessions.on_start.append(self._session_event("started"))
            self.sessions.on_end.append(self._session_event("ended"))
        self.locks = Locks(
            self.backend, self._bus, self._tasks, self._session_of_connection
        )
        """Session locks: named, scoped, fenced, first come first served."""
        self.ops.add(Op("ping", _ping))
        self.ops.add(
            Op("cancel", _cancel, {"request": Arg("int", required=True)}, reply=False)
        )
        self.ops.add(properties_op(self.sessions))
        for op in messaging_ops(self.messaging, lambda: self.limits):
            self.ops.add(op)
        for op in lock_ops(self.locks, self.peers, self._tasks, lambda: self.limits):
            self.ops.add(op)
        for op in event_ops(self.events, self.peers, lambda: self.limits):
            self.ops.add(op)
        self.backend.attach(
            self.node_id,
            NodeHooks(
                on_frame=self._bus.receive,
                on_session_closed=self.closing.closed_elsewhere,
                on_reconnect=self._backend_reconnected,
                on_sessions_started=self.sessions.report_started,
                on_sessions_ended=self.sessions.report_ended,
                on_nodes_left=self._bus.nodes_left,
                on_frames_lost=self._bus.frames_lost,
                on_events=self.events.on_events,
                on_events_gap=self.events.on_events_gap,
            ),
        )

    def _session_event(self, what: str) -> SessionCallback:
        """A lifecycle callback that registers the session's event."""

        async def register(session_ws_id: Any) -> None:
            principal = None
            for peer in self.peers.of(session_ws_id):
                principal = peer.connection_properties().get("$Principal")
                break
            try:
                handle = self.public_handle(session_ws_id)
                payload = EventPayloadJson({"session": handle, "principal": principal})
                await self.events.register(
                    [RegisterEvent((*SESSION_EVENT_PREFIX, what), payload=payload)]
                )
            except Exception as exc:
                logger.warning("Could not register a session %s event: %s", what, exc)

        return register

    def _backend_reconnected(self) -> None:
        self.closing.backend_reconnected()
        self.locks.backend_reconnected()

    def _session_of_connection(self, connection_id: str) -> Hashable | None:
        record = self._by_connection_id.get(connection_id)
        return None if record is None else record.session_ws_id

    @property
    def grace_period(self) -> float:
        """Seconds a session stays alive after its last connection closed."""
        return self.backend.grace_period

    @property
    def on_session_start(self) -> list[SessionCallback]:
        """Callbacks run with the session ws id when a session starts.

        A session starts with its first connection anywhere in the cluster
        (not one that returns within the grace period); the callbacks run
        once per start, on one node. A Redis restarted empty forgets which
        sessions are alive: the sessions still held then start again.
        """
        return self.sessions.on_start

    @property
    def on_session_end(self) -> list[SessionCallback]:
        """Callbacks run with the session ws id when a session ends, on one node.

        See :doc:`/sessions` for when a session ends. A Redis restarted empty
        forgets the sessions in their grace period and the ends asked during
        the outage: those ends are not reported.
        """
        return self.sessions.on_end

    @property
    def _pending_closes(self) -> Any:
        return self.closing.pending

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
        self.events.stop()
        await self._tasks.aclose(timeout)
        await self.closing.stop(timeout)
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
        """Give the request's session a new session ws id.

        The session of the old id ends (its websockets stay open).
        """
        session = await aiohttp_session.get_session(request)
        old = session.get(self.session_key)
        session[self.session_key] = await self.generate_id(request)
        if old is not None:
            await self.sessions.end(old)

    async def delete_id(self, request: web.Request) -> None:
        """Remove the session ws id from the request's session.

        Its session ends (its websockets stay open).
        """
        session = await aiohttp_session.get_session(request)
        old = session.pop(self.session_key, None)
        if old is not None:
            await self.sessions.end(old)

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
        record = ConnectionRecord(
            uuid.uuid4().hex, session_ws_id, time.time(), self.backend.now()
        )
        self._records[wsr] = record
        self._by_connection_id[record.connection_id] = record
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
        self._by_connection_id.pop(record.connection_id, None)
        self.locks.connection_closed(record.connection_id)
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
        return await close_sockets(sockets, code, message)

    async def close_all_session(self, session_ws_id: Hashable) -> int:
        """Close every websocket of the session on every node; return how many closed.

        It waits at most ``close_timeout`` for the other nodes that hold the
        session. While the backend is down it closes this node's websockets
        and remembers the rest of the work until the backend is back. The
        session ends.
        It takes an id, not a request, because by the time it runs the request's
        session may already hold a new one.
        """
        # concurrently: a local client that does not answer the close frame
        # keeps close() waiting for seconds, and the other nodes need not wait
        sockets = list(self._registry.get(session_ws_id, ()))
        try:
            check_session_ws_id(session_ws_id)
        except (TypeError, ValueError):  # a 1.1.1-style id no other node can hold
            return await close_sockets(sockets, WSCloseCode.OK, b"")
        local, elsewhere = await asyncio.gather(
            close_sockets(sockets, WSCloseCode.OK, b""),
            self.closing.close_elsewhere(wire_id(session_ws_id)),
        )
        return local + elsewhere

    def _local_sockets(
        self, session: str, before: float | None = None
    ) -> list[web.WebSocketResponse]:
        key = local_id(session)
        sockets = self._registry.get(key, ()) if key is not None else ()
        if before is None:
            return list(sockets)
        # a socket put in _registry by hand has no time: err towards closing
        return [ws for ws in sockets if self._opened_at(ws, before) <= before]

    def _opened_at(self, ws: web.WebSocketResponse, default: float) -> float:
        record = self._records.get(ws)
        return default if record is None else record.opened_on_backend

    # the protocol's services
    def public_handle(self, session_ws_id: Hashable) -> str:
        """The session's public handle (``$SessionId``): safe to show a client.

        :raises BackendUnavailableError: the cluster's key is not known yet.
        """
        return self.sessions.handle_of(session_ws_id)

    async def send_to_session(self, session_ws_id: Hashable, data: Any) -> int:
        """Push ``data`` to every protocol connection of the session, on every node.

        ``data`` is JSON-encoded once, and the same bytes go to every socket;
        returns how many connections it reached. While the backend is down
        only this node's connections are reached (and the outage is logged).

        :raises TypeError: ``data`` is not JSON-able, or the id is not a str
            or an int.
        :raises ValueError: ``data`` holds a NaN or an infinity, or the id is
            invalid.
        """
        return await self.push.send_to_session(session_ws_id, data)

    async def broadcast(self, data: Any) -> int:
        """Push ``data`` to every protocol connection of the cluster; count them."""
        return await self.push.broadcast(data)

    async def set_session_properties(
        self, session_ws_id: Hashable, values: Mapping[str, str | None]
    ) -> bool:
        """Set user properties of a live session (``None`` removes a key).

        Every node reads the new values once this returns; they go when the
        session ends. Returns False, changing nothing, when the session is
        not alive.

        :raises ValueError: a key or a value is invalid (see :doc:`/sessions`).
        :raises BackendUnavailableError: the backend cannot be reached.
        """
        return await self.sessions.set_properties(session_ws_id, values)

    async def session_properties(
        self, session_ws_id: Hashable
    ) -> dict[str, str] | None:
        """The user properties of a live session; ``None`` when it is not alive.

        :raises BackendUnavailableError: the backend cannot be reached.
        """
        return await self.sessions.user_properties(session_ws_id)

    def stats(self) -> Stats:
        """The numbers of this node: connections, frames, errors, drops (cheap)."""
        counters = self.counters
        return Stats(
            connections=len(self._records),
            sessions=len(self._registry),
            protocol_connections=len(self.peers),
            frames_in=counters.frames_in,
            frames_out=counters.frames_out,
            errors=dict(counters.errors),
            queue_drops=counters.queue_drops,
            overflow_closes=counters.overflow_closes,
            rate_closes=counters.rate_closes,
            pending_requests=counters.pending_requests,
            **self.messaging.stats(),
            **self.locks.stats(),
            **self.events.stats(),
        )

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


async def _ping(connection: Any, request: Request) -> dict[str, Any]:
    return {}


async def _cancel(connection: Any, request: Request) -> None:
    connection.cancel_request(request.args["request"])
