"""The one interface every backend implements and every service uses."""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..events.model import Event, EventId, EventType, RegisterEvent

FrameHandler = Callable[[bytes], Awaitable[None]]
"""Receives a frame that another node published to this node."""


class BackendUnavailableError(ConnectionError):
    """The backend could not reach the server that holds the cluster's state."""


class BackendConfigurationError(RuntimeError):
    """The backend's server refused this node (credentials, database, ACL, TLS).

    Raised by ``start()``, so the application fails to start: unlike an
    outage, waiting would not end it.
    """


@dataclass(frozen=True, slots=True)
class NodeHooks:
    """What a backend calls on the registry it serves."""

    on_frame: FrameHandler
    """A frame another node published to this node."""
    on_session_closed: Callable[[str, float], None]
    """A close-all of the session that this node's presence missed (it was
    written late, or the node was away): close the connections opened at or
    before the given :meth:`Backend.now` time."""
    on_reconnect: Callable[[], None]
    """The backend is back after an outage; frames may have been missed."""
    on_sessions_started: Callable[[list[str]], None] = lambda sessions: None
    """Sessions whose first connection in the cluster this node recorded (not
    one still in its grace period): each start is reported to one node only."""
    on_sessions_ended: Callable[[list[str]], None] = lambda sessions: None
    """Sessions whose end this node's call decided (grace period over, the
    node holding their last connection reaped, or :meth:`SessionStore.end`):
    each end is reported to one node only."""
    on_nodes_left: Callable[[list[str]], None] = lambda nodes: None
    """Nodes that left the cluster (stopped, or reaped after they died):
    work waiting on them will not be answered."""
    on_events: Callable[[str, list[Event]], None] = lambda epoch, events: None
    """Events appended to the cluster's log, in id order, each once per node
    (the backend follows the log); with the log's epoch. An empty list with
    a new epoch: the log was lost (and a new one begun)."""
    on_events_gap: Callable[[str], None] = lambda reason: None
    """This node missed events of the log (it fell behind its retention):
    its subscribers cannot have had them all."""
    on_frames_lost: Callable[[], None] = lambda: None
    """The link that brings frames to this node failed: replies on their
    way may be lost (:attr:`on_reconnect` follows once it is back)."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The answer to :meth:`Backend.mark_session_closed`."""

    at: float
    """When the close took effect, on the backend's clock (:meth:`Backend.now`)."""
    nodes: Mapping[str, int]
    """The live nodes that hold connections of the session, with their counts."""
    ended: bool = False
    """Whether this close ended the session (it was alive)."""
    published: tuple[str, ...] = ()
    """The nodes (never this one) that the close's frame was published to."""


PropertyValues = Mapping[str, "str | None"]
"""User properties to set on a session: ``None`` removes a key."""


class SessionStore(abc.ABC):
    """The live sessions of the cluster: their public handles and properties.

    A session is *alive* from its first connection anywhere until it ends:
    its grace period (:attr:`Backend.grace_period`) runs out after its last
    connection closed, a node that held its last connection is reaped (it
    died: the node TTL stood for the grace period), or :meth:`end` is called.
    Starts and ends are reported through :class:`NodeHooks`, once each for
    the whole cluster. Session ids are wire ids here.
    """

    @abc.abstractmethod
    def handle_of(self, session_id: str) -> str:
        """The session's public handle: a keyed hash of its id.

        It is the same on every node, and tells nothing of the id.

        :raises BackendUnavailableError: the cluster's key is not known yet
            (the server has been unreachable since this node started).
        """

    @abc.abstractmethod
    async def session_of(self, handle: str) -> str | None:
        """The id of the live session with public handle ``handle``, or ``None``."""

    @abc.abstractmethod
    async def set_properties(self, session_id: str, values: PropertyValues) -> bool:
        """Set (or, with ``None``, remove) user properties of a live session.

        Atomic: every node reads the new values once this returns. Returns
        False, changing nothing, when the session is not alive.
        """

    @abc.abstractmethod
    async def properties(self, session_id: str) -> dict[str, str] | None:
        """The user properties of a live session; ``None`` when it is not alive."""

    @abc.abstractmethod
    async def end(self, session_id: str) -> bool:
        """End the session now (its properties go); True if it was alive.

        The caller reports the end: it is not passed to
        :attr:`NodeHooks.on_sessions_ended`.
        """

    async def properties_of_many(
        self, session_ids: Sequence[str]
    ) -> list[dict[str, str] | None]:
        """:meth:`properties` of each session, in order (a backend batches them)."""
        return list(await asyncio.gather(*map(self.properties, session_ids)))


@dataclass(frozen=True, slots=True)
class AddressedRoute:
    """The answer to :meth:`HandlerStore.publish_addressed`."""

    status: Literal["sent", "no_session", "no_handler", "unreachable"]
    """``sent`` to :attr:`node`; or no live session has the handle; or no
    other node's connection of it handles the path; or the chosen node
    does not listen."""
    node: str | None = None
    """The node the frame was published to."""


class HandlerStore(abc.ABC):
    """Where the cluster's request handlers are: by path, and by session.

    A node notes its own registrations here without waiting (a backend
    that talks to a server writes them in the background, in order with
    presence); they live with the node's lease and go when it dies.
    """

    @abc.abstractmethod
    def add_path(self, path: str) -> None:
        """Count one more handler of this node for requests sent to ``path``."""

    @abc.abstractmethod
    def remove_path(self, path: str) -> None:
        """Count one handler less of this node for ``path``."""

    @abc.abstractmethod
    def set_addressed(self, session_id: str, paths: frozenset[str]) -> None:
        """Record the paths this node's connections of the session handle.

        Those are the paths they serve when a request is addressed to the
        session (empty: none).
        """

    @abc.abstractmethod
    def route(self, prefixes: Sequence[str]) -> tuple[str, frozenset[str]] | None:
        """The first of ``prefixes`` that a live node handles, and those nodes.

        This node's own registrations count at once. ``None`` when no node
        handles any of them. Never waits on a server.

        :raises BackendUnavailableError: the other nodes' registrations are
            not known now (an outage, or a resync under way).
        """

    @abc.abstractmethod
    async def publish_addressed(
        self, handle: str, prefixes: Sequence[str], frame: bytes, pick: float
    ) -> AddressedRoute:
        """Publish ``frame`` to another node that serves the session ``handle``.

        That node's connection of the session handles the first possible of
        ``prefixes`` when addressed. Among nodes with an equally specific
        path, ``pick`` (in [0, 1)) chooses one. At most one round trip to a
        server.
        """

    async def flush(self) -> None:  # noqa: B027 (by default: nothing to wait for)
        """Wait until this node's notes so far reached the server (if it is up)."""


SCOPE_SESSION = 0
"""A lock released when its session ends (``UNLOCK_ON_SESSION_LOSS``)."""
SCOPE_CONNECTION = 1
"""A lock released when the connection that asked closes
(``UNLOCK_ON_CONNECTION_LOSS``): the weaker scope."""

LOCK_GRANTED = "lock_granted"
"""The node-bus kind of the frame a lock store publishes to a node whose
waiting session was granted a lock; its body is a :class:`LockGrant`'s
fields (``connection`` ``""`` for none)."""
LOCK_LOST = "lock_lost"
"""The node-bus kind of the frame a lock store publishes to the nodes that
asked for a lock its session lost (the session ended, or the node holding
its connection went): body ``name``, ``sequence``, ``session``."""


@dataclass(frozen=True, slots=True)
class LockGrant:
    """A lock held by a session."""

    name: str
    sequence: int
    """The fencing token: larger for every later grant of the name."""
    session: str
    """The session that holds it (a wire id)."""
    scope: int
    """:data:`SCOPE_SESSION` or :data:`SCOPE_CONNECTION`."""
    connection: str | None = None
    """With :data:`SCOPE_CONNECTION`, the connection whose close releases it."""


@dataclass(frozen=True, slots=True)
class LockState:
    """Who holds a lock, and how many sessions wait for it."""

    name: str
    holder: LockGrant | None
    waiting: int
    queue: tuple[str, ...] = ()
    """The sessions of the queue entries, first first (a session waiting on
    two nodes is there twice)."""


def node_frame(kind: str, body: Mapping[str, object]) -> bytes:
    """A one-way node-bus frame of ``kind`` (no reply wanted), from a store.

    It is the node bus's frame format (:mod:`aiohttp_session_ws.nodebus`):
    a store publishes it to a node's inbox, as a Lua script does with
    ``cjson``.
    """
    frame = {"kind": kind, "from": "", "call": 0, "body": dict(body)}
    return json.dumps(frame, separators=(",", ":")).encode()


class LockStore(abc.ABC):
    """The cluster's session locks: who holds each name, and who waits.

    Waiters are served first come, first served: one queue entry per
    session and node (a session's calls on one node share it). A grant to a
    waiter, made by the step that released the lock, is told to the
    waiter's node with a :data:`LOCK_GRANTED` frame. The store releases
    locks on its own, in the same step as their cause, and tells the nodes
    that asked for them (:data:`LOCK_LOST`):

    - a session that ends loses its locks, and its queue entries go;
    - a node that leaves or is removed loses its connection-scoped locks
      (connections die with their node) and its queue entries.

    Sequences grow for each name across the cluster's life: a grant's is
    above the name's previous grant, above the ``floor`` the caller gives
    (the largest this node has seen), and at least the store's clock in
    microseconds, so a store that lost its keys still goes on upwards.
    """

    @abc.abstractmethod
    async def acquire(
        self,
        name: str,
        session: str,
        scope: int,
        connection: str | None,
        floor: int,
    ) -> LockGrant | None:
        """Take lock ``name`` for a live session, or queue the session for it.

        A free lock is granted at once. A lock the session holds already is
        returned as it is, but for its scope: asked with
        :data:`SCOPE_CONNECTION`, a session-scoped lock becomes
        connection-scoped (the weaker wins). Otherwise this node's entry of
        the session joins the end of the queue (or keeps its place, with the
        weaker scope, when it is there already) and ``None`` is returned. In
        every case this node is noted as one to tell if the lock is lost.

        :raises LookupError: the session is not alive.
        """

    @abc.abstractmethod
    async def cancel(self, name: str, session: str) -> LockGrant | None:
        """Withdraw this node's queue entry of the session for ``name``.

        Returns the grant if the session holds the lock (granted before the
        cancel, its frame maybe still on the way): the caller keeps or
        releases it. ``None`` otherwise.
        """

    @abc.abstractmethod
    async def release(self, name: str, session: str, sequence: int) -> bool:
        """Release the lock if ``session`` holds it with ``sequence``.

        In the same step the next waiter gets it (its node is told), and the
        other nodes that asked for it (other tabs of the session) are told
        it is lost. True if it was held so.
        """

    @abc.abstractmethod
    async def state(self, name: str) -> LockState:
        """Who holds the lock now, and how many queue entries wait."""

    @abc.abstractmethod
    async def held(self, grants: Sequence[tuple[str, int]]) -> list[bool]:
        """Whether each ``(name, sequence)`` is still held (after an outage)."""


@dataclass(frozen=True, slots=True)
class EventRead:
    """What :meth:`EventStore.read` found."""

    events: list[Event]
    """The retained events after the given id, in id order (a page)."""
    epoch: str
    """The log's epoch: it changes when the log is lost (a Redis restarted
    empty), so ids of another epoch mean nothing in this one."""
    trimmed: EventId | None
    """The largest id that retention removed (``None``: none yet)."""
    last: EventId | None
    """The log's last id (``None``: empty)."""


@dataclass(frozen=True, slots=True)
class EventRetention:
    """How much of the event log is kept."""

    max_count: int = 10_000
    """Events kept at most (the oldest go first)."""
    max_age: float | None = 24 * 3600.0
    """Seconds an event is kept at most (``None``: no limit)."""


class EventStore(abc.ABC):
    """The cluster's one ordered event log, and the latest event of each type.

    Retention bounds the log (:class:`EventRetention`). A backend follows
    the log and hands every new event to :attr:`NodeHooks.on_events`, once
    per node and in id order; a node cut off from the log catches up from
    it when it is back.
    """

    retention: EventRetention = EventRetention()

    @abc.abstractmethod
    async def register(self, events: Sequence[RegisterEvent]) -> list[Event]:
        """Append the events in one step: consecutive ids, one timestamp.

        Retention trims the log in the same step, and the latest event of
        each type is kept beside it.
        """

    @abc.abstractmethod
    async def read(self, after: EventId | None, limit: int) -> EventRead:
        """At most ``limit`` retained events after ``after`` (all: ``None``)."""

    @abc.abstractmethod
    async def latest(self) -> dict[EventType, Event]:
        """The latest event of each type registered (kept past retention)."""


class Backend(abc.ABC):
    """Cluster state and node-to-node transport for one node's registry.

    A backend serves exactly one registry. The registry *attaches* to it when it
    is created (giving its node id and its :class:`NodeHooks`), then starts and
    stops it with the application. Session ids are strings here. Methods that
    talk to a server raise :class:`BackendUnavailableError` when it cannot be reached.
    """

    _node_id: str | None = None
    _hooks: NodeHooks | None = None

    missed_close_window: float = 300.0
    """Seconds for which a close-all is remembered for the nodes that missed it."""

    grace_period: float = 30.0
    """Seconds a session stays alive after its last connection closed; the
    registry sets it from its own option when it attaches."""

    session_store: SessionStore
    """The live sessions, their handles and properties."""

    handler_store: HandlerStore
    """Where the request handlers of the cluster are."""

    lock_store: LockStore
    """The session locks of the cluster."""

    event_store: EventStore
    """The cluster's event log."""

    def attach(self, node_id: str, hooks: NodeHooks) -> None:
        """Bind this backend to the registry of node ``node_id``."""
        if self._node_id is not None:
            raise RuntimeError(
                f"{type(self).__name__} is already attached to a registry; "
                "create one backend per registry"
            )
        self._node_id = node_id
        self._hooks = hooks

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
        if self._hooks is not None:
            await self._hooks.on_frame(frame)

    @property
    def healthy(self) -> bool:
        """False while the backend cannot reach its server (frames may be lost)."""
        return True

    def now(self) -> float:
        """The backend's clock in seconds, comparable between the nodes."""
        return time.time()

    # lifecycle
    @abc.abstractmethod
    async def start(self) -> None:
        """Join the cluster: start listening for frames addressed to this node."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the cluster: stop listening and withdraw this node's presence."""

    # node bus
    @abc.abstractmethod
    async def publish(self, node_id: str, frame: bytes) -> bool:
        """Send ``frame`` to node ``node_id``; False if no such node is listening."""

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
        """Map each live node that holds connections of ``session_id`` to their count.

        This node's own notes made before the call are included.
        """

    @abc.abstractmethod
    async def sessions(self) -> frozenset[str]:
        """Every session id with an open connection on any node."""

    def holds_alone(self, session_id: str) -> bool:
        """True when this node knows that no other node holds ``session_id``.

        False means "maybe": a push must then go through
        :meth:`publish_to_session`. Cheap, and never touches a server.
        """
        return False

    @abc.abstractmethod
    async def publish_to_session(self, session_id: str, frame: bytes) -> list[str]:
        """Publish ``frame`` to every other live node holding ``session_id``.

        At most one round trip to the server (the lookup and the publishes
        are one step); none when the backend knows that no other node holds
        the session. Returns the nodes it was published to.
        """

    @abc.abstractmethod
    async def publish_to_all(self, frame: bytes) -> list[str]:
        """Publish ``frame`` to every other live node; return them."""

    @abc.abstractmethod
    async def mark_session_closed(
        self, session_id: str, *, ago: float = 0.0, frame: bytes | None = None
    ) -> SessionClosed:
        """Record that the session's connections were closed ``ago`` seconds ago.

        A node whose presence of the session reaches the backend later, or that
        comes back from an outage within :attr:`missed_close_window`, is told
        through :attr:`NodeHooks.on_session_closed`. The session ends, if it
        was alive (``ended``; the caller reports it). With ``frame``, the same
        atomic step publishes it to every other live node holding the session
        (``published``). Returns the close's time and the nodes that hold the
        session now.
        """
