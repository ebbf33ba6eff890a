"""The session locks of a Redis cluster: one script per change.

Each call is one script, so it is atomic and one round trip: ``acquire``
grants a free lock or queues the session's entry of this node; ``release``
(and the presence scripts, when a session ends or a node leaves or is
reaped: see ``prelude.lua``) hands the lock on to the first waiter of a live
node in the same step, and publishes a :data:`~..base.LOCK_GRANTED` frame
to that node. The keys are listed in :mod:`.scripts`.

Sequences are fencing tokens: each grant's is above the name's previous
one, above the caller's ``floor``, above the last one issued of any name
(``T:lock_clock``) and at least Redis ``TIME`` in microseconds, so they go
on upwards after Redis restarted empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import (
    SCOPE_CONNECTION,
    SCOPE_SESSION,
    BackendUnavailableError,
    LockGrant,
    LockState,
    LockStore,
)
from . import scripts

if TYPE_CHECKING:
    from .backend import RedisBackend

_NOT_ALIVE, _HELD, _NOT_MEMBER = 0, 1, 3


class RedisLockStore(LockStore):
    """The locks of the cluster, in Redis; this node's side of them."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        register = backend.client.register_script
        self._acquire = register(scripts.LOCK_ACQUIRE)
        self._cancel = register(scripts.LOCK_CANCEL)
        self._release = register(scripts.LOCK_RELEASE)
        self._state = register(scripts.LOCK_STATE)
        self._held = register(scripts.LOCK_HELD)

    async def acquire(
        self,
        name: str,
        session: str,
        scope: int,
        connection: str | None,
        floor: int,
    ) -> LockGrant | None:
        """Take or queue, in one script.

        This node's presence notes are written first: a session whose
        connection just opened here is alive for the call.

        :raises LookupError: the session is not alive.
        """
        if scope not in (SCOPE_SESSION, SCOPE_CONNECTION):
            raise ValueError(f"not a lock scope: {scope!r}")
        await self._backend._flush()
        reply = await self._backend._run(
            self._acquire,
            self._backend.node_id,
            name,
            session,
            scope,
            connection or "",
            max(int(floor), 0),
        )
        status = int(reply[0])
        if status == _NOT_ALIVE:
            raise LookupError("the session is not alive")
        if status == _NOT_MEMBER:
            self._backend._wake.set()  # the writer rejoins
            raise BackendUnavailableError(
                "Redis: this node holds no live lease (it is rejoining the cluster)"
            )
        if status == _HELD:
            return _grant(name, reply[1:])
        return None

    async def cancel(self, name: str, session: str) -> LockGrant | None:
        """Withdraw this node's entry; the grant if the session holds the lock."""
        reply = await self._backend._run(
            self._cancel, self._backend.node_id, name, session
        )
        return _grant(name, reply) if reply else None

    async def release(self, name: str, session: str, sequence: int) -> bool:
        """Release and hand on, in one script."""
        return bool(
            await self._backend._run(
                self._release, name, session, int(sequence), self._backend.node_id
            )
        )

    async def state(self, name: str) -> LockState:
        """Read the holder and the queue, in one script."""
        reply = await self._backend._run(self._state, name)
        holder = _grant(name, reply[1:]) if len(reply) > 1 else None
        queue = tuple(_text(session) for session in reply[0])
        return LockState(name, holder, len(queue), queue)

    async def held(self, grants: Sequence[tuple[str, int]]) -> list[bool]:
        """Check every grant in one script (none: no call)."""
        if not grants:
            return []
        args: list[str | int] = []
        for name, sequence in grants:
            args += [name, int(sequence)]
        return [bool(found) for found in await self._backend._run(self._held, *args)]


def _grant(name: str, fields: Sequence[Any]) -> LockGrant:
    """A grant from a script's ``{session, sequence, scope, connection}``."""
    session, sequence, scope, connection = (_text(field) for field in fields)
    return LockGrant(name, int(sequence), session, int(scope), connection or None)


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
