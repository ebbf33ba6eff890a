"""Session locks: named, scoped, fenced, first come first served, cluster-wide.

A lock is held by a session (see :doc:`/locks`). The backend's lock store
decides who holds each name, queues the waiters in order, and hands a lock
on in the same step that releases it; this service keeps what this node's
callers wait for and hold, and tells them when a lock is lost.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .backends.base import (
    LOCK_GRANTED,
    LOCK_LOST,
    SCOPE_CONNECTION,
    Backend,
    BackendUnavailableError,
    LockGrant,
    LockStore,
)
from .ids import check_session_ws_id, wire_id
from .messaging.paths import check_path
from .nodebus import JSONDict, NodeBus
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws.locks")

MAX_FLOORS = 10_000
"""Lock names whose last sequence this node remembers (the newest ones)."""


class SessionLockScope(enum.IntEnum):
    """When a lock is released without an ``unlock()``."""

    UNLOCK_ON_SESSION_LOSS = 0
    """When its session ends (logout, a new session ws id, or the grace
    period after its last connection), wherever its connections were."""
    UNLOCK_ON_CONNECTION_LOSS = 1
    """When the connection that asked for it closes: the weaker scope."""


class LockTimeoutError(TimeoutError):
    """The lock was not granted within the call's ``timeout``."""


class SessionNotAliveError(LookupError):
    """The session has no connection and is not in its grace period.

    A lock of a session that is not alive would never be released by the
    session's end, so it is refused.
    """


LostCallback = Callable[["SessionLock"], "Awaitable[None] | None"]
"""Called with a lock that its owner lost (sync or async)."""


class SessionLock:
    """A lock a session holds: ``async with`` it, or :meth:`unlock` it.

    Repeated :meth:`Locks.lock` calls of the owning session return equal
    locks (the same object on one node). :attr:`sequence` is a fencing
    token: every later grant of the name has a larger one.
    """

    __slots__ = ("_callbacks", "_lost", "_owned", "_service", "grant", "owner")

    def __init__(self, service: Locks, grant: LockGrant, owner: str) -> None:
        self._service = service
        self.grant = grant
        self.owner = owner
        """The public handle of the owning session."""
        self._owned = True
        self._lost = asyncio.get_running_loop().create_future()
        self._callbacks: list[LostCallback] = []

    @property
    def name(self) -> str:
        """The lock's name (a path, such as ``docs/42``)."""
        return self.grant.name

    @property
    def sequence(self) -> int:
        """The fencing token of this grant."""
        return self.grant.sequence

    @property
    def scope(self) -> SessionLockScope:
        """When it is released without an unlock."""
        return SessionLockScope(self.grant.scope)

    @property
    def is_owned(self) -> bool:
        """Whether the session still holds it, as far as this node knows.

        It can go stale at once (see :doc:`/locks`, "What a lock cannot
        promise"); a resource that must be safe checks :attr:`sequence`.
        """
        return self._owned

    async def unlock(self) -> bool:
        """Release the lock; True if the session still held it."""
        return await self._service._unlock(self)

    def on_lost(self, callback: LostCallback) -> Callable[[], None]:
        """Call ``callback(lock)`` when the lock is lost (not when unlocked).

        Returns a function that removes the callback.
        """
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def wait_lost(self) -> str:
        """Wait until the lock is lost (never if it is unlocked); return why."""
        return await asyncio.shield(self._lost)

    def _end(self, reason: str | None) -> None:
        """No longer owned: ``reason`` says why it was lost, None if unlocked."""
        if not self._owned:
            return
        self._owned = False
        if reason is None:
            return  # unlocked: wait_lost() waits on (for ever)
        self._lost.set_result(reason)
        for callback in list(self._callbacks):
            self._service._call_back(callback, self)

    async def __aenter__(self) -> SessionLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unlock()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionLock):
            return NotImplemented
        return (self.name, self.sequence, self.owner) == (
            other.name,
            other.sequence,
            other.owner,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.sequence, self.owner))

    def __repr__(self) -> str:
        state = "owned" if self._owned else "released"
        return (
            f"<SessionLock {self.name!r} #{self.sequence} {self.scope.name} "
            f"of {self.owner} ({state})>"
        )


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a lock and how many sessions wait (:meth:`Locks.info`)."""

    name: str
    owner: str | None
    """The public handle of the holding session, or ``None`` if free."""
    sequence: int | None
    scope: SessionLockScope | None
    waiting: int
    """How many sessions wait for it (per node they wait on)."""
    queue: tuple[str, ...] = ()
    """The handles of the waiting sessions, first first (when the backend
    tells them)."""


@dataclass(eq=False)
class _Claim:
    """What this node's callers want of one lock, for one session."""

    waiters: list[asyncio.Future[SessionLock]] = field(default_factory=list)
    scope: int = 0
    connection: str | None = None
    lock: SessionLock | None = None
    handed: bool = False  # a call returned the lock: someone holds it
    # the connection each waiting call named (connection scope), or None
    named: dict[asyncio.Future[SessionLock], str | None] = field(default_factory=dict)


ConnectionSession = Callable[[str], "Hashable | None"]
"""The session ws id of a connection open on this node, by its id, or None."""


class Locks:
    """The lock service (``registry.locks``), see :doc:`/locks`."""

    def __init__(
        self,
        backend: Backend,
        bus: NodeBus,
        tasks: TaskOwner,
        connection_session: ConnectionSession,
    ) -> None:
        self._backend = backend
        self._tasks = tasks
        self._connection_session = connection_session
        self._claims: dict[tuple[str, str], _Claim] = {}
        self._by_connection: dict[str, set[tuple[str, str]]] = {}
        self._floors: collections.OrderedDict[str, int] = collections.OrderedDict()
        # a release or a withdrawal under way per (name, session): a new call
        # of the session waits for it, so that it never takes a lock that is
        # being let go
        self._settling: dict[tuple[str, str], asyncio.Task[None]] = {}
        # what could not be let go while the backend was away: done on resync
        self._abandoned_waits: set[tuple[str, str]] = set()
        self._abandoned_grants: set[LockGrant] = set()
        self.on_lost: list[Callable[[SessionLock, str], None]] = []
        """Called with each lock of this node that was lost, and why (the
        protocol tells the connections that asked)."""
        bus.handle(LOCK_GRANTED, self._granted_frame, inline=True)
        bus.handle(LOCK_LOST, self._lost_frame, inline=True)

    @property
    def _store(self) -> LockStore:
        return self._backend.lock_store

    # taking
    async def lock(
        self,
        session_ws_id: Hashable,
        name: str,
        scope: SessionLockScope = SessionLockScope.UNLOCK_ON_SESSION_LOSS,
        timeout: float | None = None,
        *,
        connection: str | None = None,
    ) -> SessionLock:
        """Take lock ``name`` for the session; wait (first come, first served).

        With ``UNLOCK_ON_CONNECTION_LOSS``, ``connection`` names the
        connection (a :class:`~aiohttp_session_ws.ConnectionRecord`'s
        ``connection_id``, open on this node) whose close releases it. A
        session that holds the lock gets it again (an equal lock; with the
        weaker scope if it asks so). Cancelling the call, or its
        ``timeout`` passing, withdraws it; a grant that raced with that is
        released.

        :raises LockTimeoutError: not granted within ``timeout`` seconds.
        :raises SessionNotAliveError: the session has no connection and is
            not in its grace period.
        :raises ValueError: the name is not a valid path, or the connection
            is missing or not one of the session's on this node.
        :raises BackendUnavailableError: the backend cannot be reached.
        """
        check_session_ws_id(session_ws_id)
        check_path(name)
        scope = SessionLockScope(scope)
        if scope is SessionLockScope.UNLOCK_ON_CONNECTION_LOSS:
            if connection is None:
                raise ValueError(
                    "UNLOCK_ON_CONNECTION_LOSS needs the connection whose close "
                    "releases the lock (connection=record.connection_id)"
                )
            if self._connection_session(connection) != session_ws_id:
                raise ValueError(
                    "the connection is not one of the session's on this node"
                )
        else:
            connection = None
        wire = wire_id(session_ws_id)
        key = (name, wire)
        settling = self._settling.get(key)
        if settling is not None:  # the session lets go of it: wait for that
            await asyncio.wait([settling])
        claim = self._claims.get(key)
        if claim is None:
            claim = self._claims[key] = _Claim()
        held = claim.lock
        if held is not None and held.is_owned and scope <= held.scope:
            claim.handed = True
            return held  # held already, as strongly as asked: no backend
        if scope is SessionLockScope.UNLOCK_ON_CONNECTION_LOSS:
            claim.scope, claim.connection = SCOPE_CONNECTION, connection
        waiter: asyncio.Future[SessionLock] = asyncio.get_running_loop().create_future()
        claim.waiters.append(waiter)
        claim.named[waiter] = connection
        try:
            grant = await self._store.acquire(
                name, wire, claim.scope, claim.connection, self._floors.get(name, 0)
            )
        except LookupError:
            self._withdraw_waiter(key, claim, waiter, ask_store=False)
            raise SessionNotAliveError(
                "the session is not alive (no connection, no grace period)"
            ) from None
        except BaseException:
            self._withdraw_waiter(key, claim, waiter, ask_store=True)
            raise
        if grant is not None:
            self._granted(grant)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                claim.handed = True  # granted at once: no wait to set up
                return waiter.result()
        try:
            async with asyncio.timeout(timeout):
                lock = await asyncio.shield(waiter)
            claim.handed = True
            return lock
        except TimeoutError:
            self._withdraw_waiter(key, claim, waiter, ask_store=True)
            raise LockTimeoutError(
                f"lock {name!r} was not granted within {timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            self._withdraw_waiter(key, claim, waiter, ask_store=True)
            raise

    def _withdraw_waiter(
        self,
        key: tuple[str, str],
        claim: _Claim,
        waiter: asyncio.Future[SessionLock],
        *,
        ask_store: bool,
    ) -> None:
        """A call gave up: if it was the last of its claim, leave the queue."""
        if waiter in claim.waiters:
            claim.waiters.remove(waiter)
        claim.named.pop(waiter, None)
        if not waiter.done():
            waiter.cancel()
        if claim.waiters:
            return  # other calls still wait for it
        lock = claim.lock
        if lock is not None:
            if claim.handed:
                return  # granted meanwhile, and some call holds it
            # granted meanwhile to this call alone, which gave up: let go
            claim.lock = None
            self._forget_connection(lock, key)
            lock._end(None)
            if ask_store:
                self._settle(key, self._release(lock.grant))
            ask_store = False
        if self._claims.get(key) is claim:
            del self._claims[key]
        if ask_store:
            self._settle(key, self._leave_queue(*key))

    def _settle(self, key: tuple[str, str], work: Awaitable[None]) -> None:
        """Run a release or a withdrawal that a new call of the key waits for."""
        if self._tasks.closed:
            if inspect.iscoroutine(work):
                work.close()
            return
        before = self._settling.get(key)

        async def settle() -> None:
            if before is not None:
                await asyncio.wait([before])
            await work

        task = self._tasks.spawn(settle(), name=f"lock-settle-{key[0]}")
        self._settling[key] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._settling.get(key) is task:
                del self._settling[key]

        task.add_done_callback(done)

    async def _leave_queue(self, name: str, session: str) -> None:
        """Withdraw from the store's queue; release a grant that raced with it."""
        try:
            grant = await self._store.cancel(name, session)
        except BackendUnavailableError as exc:
            logger.warning("Could not withdraw from the queue of %r: %s", name, exc)
            self._abandoned_waits.add((name, session))  # done on resync
            return
        if grant is not None and (name, session) not in self._claims:
            await self._release(grant)

    # granting
    def _granted(self, grant: LockGrant) -> None:
        """The store granted a lock to a session of this node's callers."""
        self._note_floor(grant.name, grant.sequence)
        key = (grant.name, grant.session)
        claim = self._claims.get(key)
        if claim is None or (not claim.waiters and claim.lock is None):
            # nobody waits any more (cancelled): never leak it
            self._settle(key, self._release(grant))
            return
        if grant.scope == SCOPE_CONNECTION and grant.connection is not None:
            if self._connection_session(grant.connection) is None:
                # granted to a connection that closed meanwhile: let it go;
                # calls naming a connection still open wait on (queued again)
                self._settle(key, self._release(grant))
                live = [
                    c
                    for c in claim.named.values()
                    if c is not None and self._connection_session(c) is not None
                ]
                if live:
                    claim.connection = live[0]
                    self._settle(key, self._queue_again(key, claim))
                    return
                for waiter in claim.waiters:
                    if not waiter.done():
                        waiter.set_exception(
                            SessionNotAliveError("the connection closed")
                        )
                claim.waiters.clear()
                claim.named.clear()
                self._claims.pop(key, None)
                return
            self._by_connection.setdefault(grant.connection, set()).add(key)
        held = claim.lock
        if held is None or held.sequence != grant.sequence or not held.is_owned:
            if held is not None:
                held._end("granted again with another sequence")
            held = claim.lock = SessionLock(
                self, grant, self._handle_of_wire(grant.session)
            )
        else:
            held.grant = grant  # its scope may have weakened
        for waiter in claim.waiters:
            if not waiter.done():
                waiter.set_result(held)
        claim.waiters.clear()
        claim.named.clear()

    async def _queue_again(self, key: tuple[str, str], claim: _Claim) -> None:
        """Queue a claim again (its grant went to a connection that closed)."""
        try:
            grant = await self._store.acquire(
                key[0],
                key[1],
                claim.scope,
                claim.connection,
                self._floors.get(key[0], 0),
            )
        except (BackendUnavailableError, LookupError) as exc:
            logger.warning("Could not queue again for lock %r: %s", key[0], exc)
            return
        if grant is not None:
            self._granted(grant)

    async def _granted_frame(self, body: JSONDict) -> None:
        self._granted(
            LockGrant(
                body["name"],
                int(body["sequence"]),
                body["session"],
                int(body["scope"]),
                body.get("connection") or None,
            )
        )

    async def _lost_frame(self, body: JSONDict) -> None:
        self._lose(
            body["name"],
            body["session"],
            int(body["sequence"]),
            "its session ended, or the node of its connection went away",
        )

    def _lose(self, name: str, session: str, sequence: int, reason: str) -> None:
        key = (name, session)
        claim = self._claims.get(key)
        if claim is None or claim.lock is None or claim.lock.sequence != sequence:
            return
        lock = claim.lock
        claim.lock = None
        if not claim.waiters:
            del self._claims[key]
        self._forget_connection(lock, key)
        lock._end(reason)
        for callback in self.on_lost:
            try:
                callback(lock, reason)
            except Exception:
                logger.exception("A lock-lost hook failed")

    # releasing
    async def _unlock(self, lock: SessionLock) -> bool:
        if not lock.is_owned:
            return False
        key = (lock.name, lock.grant.session)
        claim = self._claims.get(key)
        if claim is not None and claim.lock is lock:
            claim.lock = None
            if not claim.waiters:
                del self._claims[key]
        self._forget_connection(lock, key)
        lock._end(None)
        for callback in self.on_lost:  # the other takers (tabs) hear of it
            try:
                callback(lock, "unlocked by its session")
            except Exception:
                logger.exception("A lock-lost hook failed")
        return await self._store.release(lock.name, lock.grant.session, lock.sequence)

    async def _release(self, grant: LockGrant) -> None:
        try:
            await self._store.release(grant.name, grant.session, grant.sequence)
        except BackendUnavailableError as exc:
            logger.warning("Could not release lock %r: %s", grant.name, exc)
            self._abandoned_grants.add(grant)  # done on resync

    def _forget_connection(self, lock: SessionLock, key: tuple[str, str]) -> None:
        connection = lock.grant.connection
        if connection is not None:
            keys = self._by_connection.get(connection)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_connection[connection]

    def connection_closed(self, connection_id: str) -> None:
        """A connection of this node closed: its connection-scoped locks go."""
        keys = self._by_connection.pop(connection_id, None)
        if not keys:
            return
        for key in keys:
            claim = self._claims.get(key)
            lock = claim.lock if claim is not None else None
            if lock is None or lock.grant.connection != connection_id:
                continue
            self._lose(key[0], key[1], lock.sequence, "its connection closed")
            if not self._tasks.closed:
                self._tasks.spawn(
                    self._release(lock.grant), name=f"lock-closed-{key[0]}"
                )

    # after an outage
    def backend_reconnected(self) -> None:
        """Check the locks held here, and queue the waiters again."""
        busy = self._claims or self._abandoned_waits or self._abandoned_grants
        if busy and not self._tasks.closed:
            self._tasks.spawn(self._resync(), name="locks-resync")

    async def _resync(self) -> None:
        # first let go of what could not be let go during the outage
        for abandoned in list(self._abandoned_grants):
            self._abandoned_grants.discard(abandoned)
            await self._release(abandoned)
        for key in list(self._abandoned_waits):
            self._abandoned_waits.discard(key)
            if key not in self._claims:
                await self._leave_queue(*key)
        owned = [
            (key, claim.lock)
            for key, claim in self._claims.items()
            if claim.lock is not None
        ]
        try:
            if owned:
                still = await self._store.held(
                    [(k[0], lock.sequence) for k, lock in owned]
                )
                for (key, lock), kept in zip(owned, still, strict=True):
                    if not kept:
                        self._lose(
                            key[0],
                            key[1],
                            lock.sequence,
                            "the cluster lost it (Redis restarted empty?)",
                        )
            for key, claim in list(self._claims.items()):
                if claim.waiters and claim.lock is None:
                    grant = await self._store.acquire(
                        key[0],
                        key[1],
                        claim.scope,
                        claim.connection,
                        self._floors.get(key[0], 0),
                    )
                    if grant is not None:
                        self._granted(grant)
        except (BackendUnavailableError, LookupError) as exc:
            logger.warning("Could not check the locks after an outage: %s", exc)

    async def release(self, session_ws_id: Hashable, name: str, sequence: int) -> bool:
        """Release the session's lock ``name`` if it holds it with ``sequence``.

        For a lock this node knows of it is :meth:`SessionLock.unlock`; for
        one taken on another node (a tab that reconnected here) the backend
        checks the session and sequence. True if it was held so.

        :raises BackendUnavailableError: the backend cannot be reached.
        """
        lock = self.held_by(session_ws_id, name)
        if lock is not None and lock.sequence == sequence:
            return await lock.unlock()
        return await self._store.release(name, wire_id(session_ws_id), sequence)

    # inspection
    def held_by(self, session_ws_id: Hashable, name: str) -> SessionLock | None:
        """The lock ``name`` that this node knows the session holds, if any."""
        claim = self._claims.get((name, wire_id(session_ws_id)))
        lock = claim.lock if claim is not None else None
        return lock if lock is not None and lock.is_owned else None

    async def info(self, name: str) -> LockInfo:
        """Who holds lock ``name`` now, and who waits.

        :raises BackendUnavailableError: the backend cannot be reached.
        """
        check_path(name)
        state = await self._store.state(name)
        holder = state.holder
        queue = tuple(self._handle_of_wire(s) for s in state.queue)
        if holder is None:
            return LockInfo(name, None, None, None, state.waiting, queue)
        return LockInfo(
            name,
            self._handle_of_wire(holder.session),
            holder.sequence,
            SessionLockScope(holder.scope),
            state.waiting,
            queue,
        )

    def _handle_of_wire(self, wire: str) -> str:
        try:
            return self._backend.session_store.handle_of(wire)
        except BackendUnavailableError:
            return ""

    def stats(self) -> dict[str, int]:
        """The locks this node's callers hold and wait for (cheap)."""
        return {
            "locks_held": sum(1 for c in self._claims.values() if c.lock is not None),
            "lock_waits": sum(1 for c in self._claims.values() if c.waiters),
        }

    # support
    def _note_floor(self, name: str, sequence: int) -> None:
        floors = self._floors
        if floors.get(name, 0) < sequence:
            floors[name] = sequence
        floors.move_to_end(name)
        while len(floors) > MAX_FLOORS:
            floors.popitem(last=False)

    def _call_back(self, callback: LostCallback, lock: SessionLock) -> None:
        try:
            result = callback(lock)
        except Exception:
            logger.exception("A lock-lost callback failed")
            return
        if inspect.isawaitable(result) and not self._tasks.closed:
            self._tasks.spawn(_logged(result), name=f"lock-lost-{lock.name}")


async def _logged(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("A lock-lost callback failed")


__all__ = [
    "LockInfo",
    "LockTimeoutError",
    "Locks",
    "SessionLock",
    "SessionLockScope",
    "SessionNotAliveError",
]
