"""Session locks in the Python client: ``lock = await session.lock(name)``.

A :class:`~aiohttp_session_ws.client.Session` feeds its :class:`ClientLocks`
the server's ``lock_lost`` frames and tells it when a connection ends, when
a reconnection's ``hello`` came, and when the session closes for good; the
locks it holds are :class:`ClientSessionLock` objects. :doc:`/client-python`
explains it; :doc:`/protocol` has the ops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from . import locks as _locks
from .locks import LockInfo, SessionLockScope
from .protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from .client import Session

__all__ = [
    "CONNECTION_LOST",
    "LOST_WHILE_DISCONNECTED",
    "SESSION_CLOSED",
    "ClientLocks",
    "ClientSessionLock",
    "LockInfo",
    "LockTimeoutError",
    "LostCallback",
    "SessionLockScope",
]

logger = logging.getLogger(__name__)

CONNECTION_LOST = "connection lost"
"""Why a connection-scoped lock was lost: its connection ended."""
LOST_WHILE_DISCONNECTED = "lost while disconnected"
"""Why a session-scoped lock was lost: after a reconnection, the server said
another session (or another grant) holds it."""
SESSION_CLOSED = "session closed"
"""Why a lock was lost: the client session closed for good (the client can
no longer tell or unlock it)."""

_SLACK = 5.0
"""Seconds the client waits past a lock's ``timeout``, so that the server's
``timeout`` answer comes first."""

LostCallback = Callable[["ClientSessionLock"], "Awaitable[None] | None"]
"""Called with a lock that was lost (a plain function, or an ``async def``)."""


class LockTimeoutError(ProtocolError, _locks.LockTimeoutError):
    """The lock was not granted within the call's ``timeout``.

    A :exc:`~aiohttp_session_ws.protocol.ProtocolError` with the code
    ``timeout`` (the server's answer), and an
    :exc:`aiohttp_session_ws.locks.LockTimeoutError` (so a
    :exc:`TimeoutError`), like the server's own.
    """


def _lock_error(frame: dict[str, Any]) -> Exception:
    code = str(frame.get("code"))
    message = str(frame.get("message", ""))
    if code == ErrorCode.TIMEOUT:
        return LockTimeoutError(code, message)
    return ProtocolError(code, message)


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not timeout > 0
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds, not {timeout!r}"
        )


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _owned(lock: ClientSessionLock) -> bool:
    """``lock.is_owned``, read anew (after an await)."""
    return lock.is_owned


class ClientSessionLock:
    """A lock the client's session holds: ``async with`` it, or :meth:`unlock` it.

    Made by :meth:`Session.lock <aiohttp_session_ws.client.Session.lock>`;
    asking again for a lock the session holds gives the same object while
    it is owned. :attr:`sequence` is the fencing token: every later grant of
    the name has a larger one.
    """

    __slots__ = (
        "_callbacks",
        "_handed",
        "_locks",
        "_lost",
        "_owned",
        "lost_reason",
        "name",
        "owner",
        "scope",
        "sequence",
    )

    def __init__(
        self,
        locks: ClientLocks,
        name: str,
        sequence: int,
        scope: SessionLockScope,
        owner: str,
    ) -> None:
        self.name = name
        """The lock's name (a path, such as ``docs/42``)."""
        self.sequence = sequence
        """The fencing token of this grant."""
        self.scope = scope
        """When it is released without an unlock (it may weaken when the
        session asks again with ``UNLOCK_ON_CONNECTION_LOSS``)."""
        self.owner = owner
        """The public handle of the owning session (``session.session_id``)."""
        self.lost_reason: str | None = None
        """Why it was lost; ``None`` while owned, or once unlocked."""
        self._locks = locks
        self._owned = True
        self._handed = False  # a lock() call returned it
        self._lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._callbacks: list[LostCallback] = []

    @property
    def is_owned(self) -> bool:
        """Whether the session holds it, as far as this client knows.

        It goes false at :meth:`unlock`, when a ``lock_lost`` frame comes,
        when the connection of a connection-scoped lock ends, when a check
        after a reconnection finds it held by another, and when the session
        closes. It can be stale: a resource that must be safe checks
        :attr:`sequence`.
        """
        return self._owned

    async def unlock(self) -> bool:
        """Release the lock; True if it was still owned (as far as the client knows).

        While the session is reconnecting, a session-scoped lock is released
        once the next connection is open. Calling it again returns False.

        :raises ProtocolError: the server refused the ``unlock`` request
            (the lock is no longer owned here anyway).
        """
        return await self._locks._unlock(self)

    def on_lost(self, callback: LostCallback) -> Callable[[], None]:
        """Call ``callback(lock)`` when the lock is lost (not when unlocked).

        A plain function runs at once, in the session's reader: keep it
        short. An ``async def`` runs in a task the session owns. For a lock
        lost already, it is called at once. Exceptions are logged. Returns a
        function that removes the callback.
        """
        if self.lost_reason is not None:
            self._locks._call_back(callback, self)
        else:
            self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def wait_lost(self) -> str:
        """Wait until the lock is lost; return why (it never returns once unlocked)."""
        return await asyncio.shield(self._lost)

    def _end(self, reason: str | None) -> None:
        """No longer owned: ``reason`` says why it was lost, None if unlocked."""
        if not self._owned:
            return
        self._owned = False
        if reason is None:
            self._callbacks.clear()
            return  # wait_lost() goes on waiting: an unlocked lock is not lost
        self.lost_reason = reason
        self._lost.set_result(reason)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._locks._call_back(callback, self)

    async def __aenter__(self) -> ClientSessionLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unlock()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientSessionLock):
            return NotImplemented
        return (self.name, self.sequence, self.owner) == (
            other.name,
            other.sequence,
            other.owner,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.sequence, self.owner))

    def __repr__(self) -> str:
        if self._owned:
            state = "owned"
        elif self.lost_reason is not None:
            state = f"lost: {self.lost_reason}"
        else:
            state = "unlocked"
        return (
            f"<ClientSessionLock {self.name!r} #{self.sequence} {self.scope.name} "
            f"of {self.owner} ({state})>"
        )


@dataclass(eq=False, slots=True)
class _Call:
    """One :meth:`ClientLocks.lock` call."""

    name: str
    outcome: asyncio.Future[ClientSessionLock]
    request_id: int | None = None
    ws: object = None
    """The websocket its request went out on."""
    counted: bool = True
    """Whether it is in ``ClientLocks._calls``: it still wants the grant."""


class ClientLocks:
    """The locks of one client session (behind :meth:`Session.lock`).

    It owns, in the session, one task per :meth:`lock` call (it waits for
    the server's answer, also after the caller gave up, to release a grant
    that raced with the ``cancel``), and after each reconnection one that
    checks the session-scoped locks.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._held: dict[str, ClientSessionLock] = {}
        self._calls: dict[str, int] = {}
        """:meth:`lock` calls in progress, by name: their grant is wanted."""
        self._deferred: list[tuple[str, int]] = []
        """Unlocks to send once connected again: (name, sequence)."""
        self._generation = 0
        """Bumped when a connection ends: a check of an older one stops."""

    @property
    def held(self) -> list[ClientSessionLock]:
        """The locks this client holds, as far as it knows."""
        return list(self._held.values())

    # taking
    async def lock(
        self,
        name: str,
        scope: SessionLockScope = SessionLockScope.UNLOCK_ON_SESSION_LOSS,
        timeout: float | None = None,
    ) -> ClientSessionLock:
        """See :meth:`Session.lock <aiohttp_session_ws.client.Session.lock>`."""
        if not isinstance(name, str):
            raise TypeError(f"a lock name is a str, not {type(name).__name__}")
        scope = SessionLockScope(scope)
        _check_timeout(timeout)
        session = self._session
        args: dict[str, Any] = {"name": name, "scope": int(scope)}
        if timeout is not None:
            args["timeout"] = timeout
        call = _Call(name, asyncio.get_running_loop().create_future())
        outcome = call.outcome

        def on_id(request_id: int) -> None:
            call.request_id, call.ws = request_id, session._ws

        async def run() -> None:
            try:
                lock = await session._request(
                    "lock",
                    args,
                    timeout=math.inf,
                    error=_lock_error,
                    on_result=self._granted,
                    on_id=on_id,
                )
            except asyncio.CancelledError:  # the session closes
                if not outcome.done():
                    from .client import ConnectionLostError

                    outcome.set_exception(ConnectionLostError("The session was closed"))
                raise
            except Exception as exc:
                if not outcome.done():
                    outcome.set_exception(exc)
                return
            if outcome.done():  # the caller gave up: cancelled, or timed out
                self._uncount(call)  # (it may not have run since)
                self._abandon(lock)
            else:
                outcome.set_result(lock)

        self._calls[name] = self._calls.get(name, 0) + 1
        session._spawn(run(), name=f"session-ws lock {name!r}")
        limit = None if timeout is None else timeout + _SLACK
        try:
            async with asyncio.timeout(limit) as deadline:
                lock = await outcome
        except BaseException:
            self._uncount(call)
            self._gave_up(call)
            if deadline.expired():
                raise LockTimeoutError(
                    ErrorCode.TIMEOUT,
                    f"lock {name!r} was not granted within {timeout:g} s "
                    "(and the server did not answer)",
                ) from None
            raise
        finally:
            self._uncount(call)
        lock._handed = True
        return lock

    def _uncount(self, call: _Call) -> None:
        """The call no longer wants its grant (once per call)."""
        if not call.counted:
            return
        call.counted = False
        left = self._calls.get(call.name, 0) - 1
        if left > 0:
            self._calls[call.name] = left
        else:
            self._calls.pop(call.name, None)

    def _gave_up(self, call: _Call) -> None:
        """A :meth:`lock` call ended without taking its lock: withdraw it."""
        outcome = call.outcome
        if not outcome.done():
            outcome.cancel()
        if outcome.cancelled():
            if call.request_id is not None:  # the server is still at it: cancel it
                self._session._spawn(
                    self._send_cancel(call.request_id, call.ws),
                    name=f"session-ws lock cancel {call.request_id}",
                )
        elif outcome.exception() is None:  # granted, but the caller is gone
            self._abandon(outcome.result())

    async def _send_cancel(self, request_id: int, ws: object) -> None:
        session = self._session
        if session._ws is not ws:
            return  # that connection is over, and the request with it
        try:
            await session._send_frame("cancel", {"request": request_id})
        except (ConnectionError, ProtocolError) as exc:
            logger.debug("Could not cancel lock request %d: %s", request_id, exc)

    def _granted(self, request_id: int, data: Any) -> ClientSessionLock:
        """A ``lock`` result (in the reader): the lock object, new or the same."""
        if not isinstance(data, dict):
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a lock result must be an object, not {data!r:.40}"
            )
        name = data.get("name")
        sequence = data.get("sequence")
        owner = data.get("owner")
        try:
            scope = SessionLockScope(data.get("scope", 0))
        except ValueError:
            scope = None
        if (
            not isinstance(name, str)
            or not _int(sequence)
            or not isinstance(owner, str)
            or scope is None
        ):
            raise ProtocolError(ErrorCode.INTERNAL, f"a bad lock result: {data!r:.80}")
        held = self._held.get(name)
        if held is not None and held.is_owned:
            if held.sequence == sequence:
                held.scope = scope  # it may have weakened
                held.owner = owner
                return held
            held._end("granted again with another sequence")
        lock = ClientSessionLock(self, name, sequence, scope, owner)
        self._held[name] = lock
        return lock

    def _abandon(self, lock: ClientSessionLock) -> None:
        """A grant no call took (it raced a cancel): release it, unless wanted."""
        if lock._handed or self._calls.get(lock.name) or not lock.is_owned:
            return  # a call holds it, or will get it
        self._forget(lock)
        lock._end(None)
        self._spawn_release(lock.name, lock.sequence, lock.scope)

    def _spawn_release(self, name: str, sequence: int, scope: SessionLockScope) -> None:
        session = self._session
        if session.closed:
            return
        session._spawn(
            self._release(name, sequence, scope), name=f"session-ws unlock {name!r}"
        )

    async def _release(self, name: str, sequence: int, scope: SessionLockScope) -> None:
        try:
            await self._send_unlock(name, sequence, scope)
        except ProtocolError as exc:
            logger.warning("Could not unlock %r: %s", name, exc)

    async def _send_unlock(
        self, name: str, sequence: int, scope: SessionLockScope
    ) -> bool:
        """Send ``unlock``; if not connected, send it after the reconnection."""
        session = self._session
        try:
            data = await session._request(
                "unlock", {"name": name, "sequence": sequence}
            )
        except ConnectionError:
            if scope is SessionLockScope.UNLOCK_ON_SESSION_LOSS and not session.closed:
                self._deferred.append((name, sequence))
                return True
            return False  # gone with its connection (or the session)
        return isinstance(data, dict) and data.get("unlocked") is True

    # releasing
    async def _unlock(self, lock: ClientSessionLock) -> bool:
        if not lock.is_owned:
            return False
        self._forget(lock)
        lock._end(None)
        return await self._send_unlock(lock.name, lock.sequence, lock.scope)

    def _forget(self, lock: ClientSessionLock) -> None:
        if self._held.get(lock.name) is lock:
            del self._held[lock.name]

    def _lose(self, lock: ClientSessionLock, reason: str) -> None:
        self._forget(lock)
        lock._end(reason)

    # from the session
    def _on_lost(self, frame: dict[str, Any]) -> None:
        """A ``lock_lost`` frame (in the reader)."""
        name = frame.get("name")
        held = self._held.get(name) if isinstance(name, str) else None
        if held is None or held.sequence != frame.get("sequence"):
            return
        reason = frame.get("reason")
        self._lose(held, reason if isinstance(reason, str) and reason else "lost")

    def _connection_lost(self) -> None:
        """The connection ended: its connection-scoped locks went with it."""
        self._generation += 1
        for lock in list(self._held.values()):
            if lock.scope is SessionLockScope.UNLOCK_ON_CONNECTION_LOSS:
                self._lose(lock, CONNECTION_LOST)

    def _reconnected(self) -> None:
        """A reconnection's ``hello`` came: check the session-scoped locks."""
        if self._held or self._deferred:
            self._session._spawn(
                self._check(self._generation),
                name=f"session-ws check locks {self._session.url}",
            )

    def _closed(self) -> None:
        """The session closed for good: its locks are out of reach."""
        self._generation += 1
        self._deferred.clear()
        for lock in list(self._held.values()):
            self._lose(lock, SESSION_CLOSED)

    async def _check(self, generation: int) -> None:
        """Send the deferred unlocks; check each lock, and take it on this connection.

        A lock whose holder or sequence differs is lost. One still held is
        asked for again (granted at once, the same sequence), so that the
        server tells this connection when it is lost later.
        """
        session = self._session
        deferred, self._deferred = self._deferred, []
        for index, (name, sequence) in enumerate(deferred):
            try:
                await session._request("unlock", {"name": name, "sequence": sequence})
            except ConnectionError:
                self._deferred.extend(deferred[index:])
                return
            except ProtocolError as exc:
                logger.warning("Could not unlock %r: %s", name, exc)
        for lock in list(self._held.values()):
            if generation != self._generation:
                return
            if (
                not lock.is_owned
                or lock.scope is not SessionLockScope.UNLOCK_ON_SESSION_LOSS
            ):
                continue
            try:
                info = await self.info(lock.name)
            except ConnectionError:
                return
            except ProtocolError as exc:
                logger.warning("Could not check lock %r: %s", lock.name, exc)
                continue
            if not _owned(lock):
                continue  # unlocked meanwhile
            if info.owner != session.session_id or info.sequence != lock.sequence:
                self._lose(lock, LOST_WHILE_DISCONNECTED)
                continue
            try:
                data = await session._request(
                    "lock",
                    {"name": lock.name, "scope": int(lock.scope), "timeout": 1.0},
                    timeout=math.inf,
                )
            except ConnectionError:
                return
            except ProtocolError as exc:
                if exc.code == ErrorCode.TIMEOUT:  # lost, and taken by another
                    self._lose(lock, LOST_WHILE_DISCONNECTED)
                else:
                    logger.warning("Could not check lock %r: %s", lock.name, exc)
                continue
            granted = data.get("sequence") if isinstance(data, dict) else None
            if not _int(granted):
                continue
            if granted != lock.sequence and _owned(lock):
                self._lose(lock, LOST_WHILE_DISCONNECTED)  # lost meanwhile
            now = self._held.get(lock.name)
            if (now is None or now.sequence != granted) and not self._calls.get(
                lock.name
            ):
                # a grant nobody here holds (new, or unlocked meanwhile)
                self._spawn_release(lock.name, granted, lock.scope)

    # inspection
    async def info(self, name: str) -> LockInfo:
        """See :meth:`~aiohttp_session_ws.client.Session.lock_info`."""
        data = await self._session._request("lock_info", {"name": name})
        if not isinstance(data, dict):
            raise ProtocolError(
                ErrorCode.INTERNAL, f"lock_info must be an object, not {data!r:.40}"
            )
        scope = data.get("scope")
        owner = data.get("owner")
        sequence = data.get("sequence")
        waiting = data.get("waiting")
        queue = data.get("queue")
        return LockInfo(
            name=str(data.get("name", name)),
            owner=owner if isinstance(owner, str) else None,
            sequence=sequence if _int(sequence) else None,
            scope=SessionLockScope(scope) if scope in (0, 1) else None,
            waiting=waiting if _int(waiting) else 0,
            queue=tuple(str(h) for h in queue) if isinstance(queue, list) else (),
        )

    # support
    def _call_back(self, callback: LostCallback, lock: ClientSessionLock) -> None:
        try:
            result = callback(lock)
        except Exception:
            logger.exception("Lock-lost callback %r failed", callback)
            return
        if inspect.isawaitable(result):
            self._session._spawn(
                _logged(result, callback), name=f"session-ws lock lost {lock.name!r}"
            )

    def __repr__(self) -> str:
        return f"<ClientLocks {sorted(self._held)}>"


async def _logged(awaitable: Awaitable[Any], callback: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("Lock-lost callback %r failed", callback)
