"""Session locks of the memory backend: one table per hub, FIFO queues."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import (
    LOCK_GRANTED,
    LOCK_LOST,
    SCOPE_CONNECTION,
    LockGrant,
    LockState,
    LockStore,
    node_frame,
)

Publish = Callable[[str, bytes], bool]
"""Queues a frame for a node of the hub; False if it is not running."""


@dataclass(eq=False)
class _Lock:
    holder: LockGrant | None = None
    holder_node: str | None = None  # the node of a connection-scoped holder
    nodes: set[str] = field(default_factory=set)  # told if it is lost
    # (node, session) -> (scope, connection), in arrival order
    queue: dict[tuple[str, str], tuple[int, str | None]] = field(default_factory=dict)
    last: int = 0


class MemoryLockTable:
    """The locks of one :class:`~aiohttp_session_ws.backends.MemoryHub`."""

    def __init__(self, alive: Callable[[str], bool], publish: Publish) -> None:
        self._alive = alive
        self._publish = publish
        self.locks: dict[str, _Lock] = {}
        self._issued = 0  # the last sequence granted, of any name

    def acquire(
        self,
        node: str,
        name: str,
        session: str,
        scope: int,
        connection: str | None,
        floor: int,
    ) -> LockGrant | None:
        """See :meth:`LockStore.acquire`."""
        if not self._alive(session):
            raise LookupError("the session is not alive")
        lock = self.locks.setdefault(name, _Lock())
        holder = lock.holder
        if holder is None:
            lock.holder = self._grant(lock, name, session, scope, connection, floor)
            lock.holder_node = node
            lock.nodes = {node}
            return lock.holder
        if holder.session == session:
            lock.nodes.add(node)
            if scope == SCOPE_CONNECTION and holder.scope != SCOPE_CONNECTION:
                holder = lock.holder = LockGrant(
                    name, holder.sequence, session, SCOPE_CONNECTION, connection
                )
                lock.holder_node = node
            return holder
        key = (node, session)
        known = lock.queue.get(key)
        if known is not None and known[0] == SCOPE_CONNECTION:
            scope, connection = known  # the weaker scope stays
        lock.queue[key] = (scope, connection)
        return None

    def cancel(self, node: str, name: str, session: str) -> LockGrant | None:
        """See :meth:`LockStore.cancel`."""
        lock = self.locks.get(name)
        if lock is None:
            return None
        lock.queue.pop((node, session), None)
        holder = lock.holder
        if holder is not None and holder.session == session:
            return holder
        self._forget_if_idle(name, lock)
        return None

    def release(
        self, name: str, session: str, sequence: int, node: str | None = None
    ) -> bool:
        """See :meth:`LockStore.release`; the other nodes that asked are told."""
        lock = self.locks.get(name)
        holder = lock.holder if lock is not None else None
        if lock is None or holder is None:
            return False
        if (holder.session, holder.sequence) != (session, sequence):
            return False
        self._tell_lost(lock, holder, skip=node)
        self._hand_on(name, lock)
        return True

    def state(self, name: str) -> LockState:
        """See :meth:`LockStore.state`."""
        lock = self.locks.get(name)
        if lock is None:
            return LockState(name, None, 0)
        return LockState(
            name, lock.holder, len(lock.queue), tuple(s for _, s in lock.queue)
        )

    def held(self, grants: Sequence[tuple[str, int]]) -> list[bool]:
        """See :meth:`LockStore.held`."""
        found = []
        for name, sequence in grants:
            lock = self.locks.get(name)
            holder = lock.holder if lock is not None else None
            found.append(holder is not None and holder.sequence == sequence)
        return found

    # what the hub tells
    def session_ended(self, session: str) -> None:
        """A session ended: its locks go to the next waiters, its entries go."""
        for name, lock in list(self.locks.items()):
            for key in [k for k in lock.queue if k[1] == session]:
                del lock.queue[key]
            holder = lock.holder
            if holder is not None and holder.session == session:
                self._tell_lost(lock, holder, skip=None)
                self._hand_on(name, lock)
            else:
                self._forget_if_idle(name, lock)

    def node_dropped(self, node: str) -> None:
        """A node left: its connection-scoped locks and its entries go."""
        for name, lock in list(self.locks.items()):
            for key in [k for k in lock.queue if k[0] == node]:
                del lock.queue[key]
            lock.nodes.discard(node)
            holder = lock.holder
            if (
                holder is not None
                and holder.scope == SCOPE_CONNECTION
                and lock.holder_node == node
            ):
                self._tell_lost(lock, holder, skip=node)
                self._hand_on(name, lock)
            else:
                self._forget_if_idle(name, lock)

    # the parts
    def _grant(
        self,
        lock: _Lock,
        name: str,
        session: str,
        scope: int,
        connection: str | None,
        floor: int,
    ) -> LockGrant:
        sequence = max(
            lock.last + 1, floor + 1, self._issued + 1, time.time_ns() // 1000
        )
        lock.last = self._issued = sequence
        return LockGrant(name, sequence, session, scope, connection)

    def _hand_on(self, name: str, lock: _Lock) -> None:
        """The holder let go: the first waiter gets it, and its node is told."""
        lock.holder = lock.holder_node = None
        lock.nodes = set()
        while lock.queue:
            (node, session), (scope, connection) = next(iter(lock.queue.items()))
            del lock.queue[(node, session)]
            grant = self._grant(lock, name, session, scope, connection, 0)
            if self._publish(node, node_frame(LOCK_GRANTED, _body(grant))):
                lock.holder = grant
                lock.holder_node = node
                lock.nodes = {node}
                return
        self._forget_if_idle(name, lock)

    def _tell_lost(self, lock: _Lock, holder: LockGrant, skip: str | None) -> None:
        body = {
            "name": holder.name,
            "sequence": holder.sequence,
            "session": holder.session,
        }
        for node in lock.nodes:
            if node != skip:
                self._publish(node, node_frame(LOCK_LOST, body))

    def _forget_if_idle(self, name: str, lock: _Lock) -> None:
        # the clock keeps sequences growing once the entry is gone
        if lock.holder is None and not lock.queue:
            self.locks.pop(name, None)


def _body(grant: LockGrant) -> dict[str, object]:
    return {
        "name": grant.name,
        "sequence": grant.sequence,
        "session": grant.session,
        "scope": grant.scope,
        "connection": grant.connection or "",
    }


class MemoryLockStore(LockStore):
    """One node's view of its hub's :class:`MemoryLockTable`."""

    def __init__(self, table: MemoryLockTable, node: Callable[[], str]) -> None:
        self.table = table
        self._node = node

    async def acquire(
        self,
        name: str,
        session: str,
        scope: int,
        connection: str | None,
        floor: int,
    ) -> LockGrant | None:
        """Take or queue, at once (one event loop: atomic)."""
        return self.table.acquire(self._node(), name, session, scope, connection, floor)

    async def cancel(self, name: str, session: str) -> LockGrant | None:
        """Withdraw this node's entry."""
        return self.table.cancel(self._node(), name, session)

    async def release(self, name: str, session: str, sequence: int) -> bool:
        """Release and hand on."""
        return self.table.release(name, session, sequence, self._node())

    async def state(self, name: str) -> LockState:
        """Read the table."""
        return self.table.state(name)

    async def held(self, grants: Sequence[tuple[str, int]]) -> list[bool]:
        """Read the table."""
        return self.table.held(grants)
