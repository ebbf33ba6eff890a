"""The lock ops of the protocol: ``lock``, ``unlock`` and ``lock_info``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .authorization import ACQUIRE_LOCK, Action
from .locks import (
    LockInfo,
    Locks,
    LockTimeoutError,
    SessionLock,
    SessionLockScope,
    SessionNotAliveError,
)
from .messaging.paths import check_path
from .peers import Peer, Peers
from .protocol import (
    Arg,
    ErrorCode,
    Op,
    ProtocolError,
    ProtocolLimits,
    Request,
    encode,
)
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws.locks")


def lock_ops(
    locks: Locks,
    peers: Peers,
    tasks: TaskOwner,
    limits: Callable[[], ProtocolLimits],
) -> list[Op[Peer]]:
    """The lock ops, for the registry's op table.

    A connection that took a lock is told when it is lost, with a
    ``lock_lost`` frame.
    """
    # the connections that took each lock, to tell them of its loss
    takers: dict[SessionLock, set[Peer]] = {}
    # the locks each connection took, for its max_locks
    taken: dict[Peer, set[SessionLock]] = {}

    def forget(lock: SessionLock) -> set[Peer]:
        asked = takers.pop(lock, set())
        for peer in asked:
            mine = taken.get(peer)
            if mine is not None:
                mine.discard(lock)
                if not mine:
                    del taken[peer]
        return asked

    def lost(lock: SessionLock, reason: str) -> None:
        frame = encode(
            {
                "op": "lock_lost",
                "name": lock.name,
                "sequence": lock.sequence,
                "reason": reason,
            }
        )
        for peer in forget(lock):
            if not tasks.closed:
                tasks.spawn(peer.send(frame), name=f"lock-lost-{lock.name}")

    def closed(peer: Peer) -> None:
        for lock in taken.pop(peer, ()):
            asked = takers.get(lock)
            if asked is not None:
                asked.discard(peer)
                if not asked:
                    del takers[lock]

    locks.on_lost.append(lost)
    peers.on_discard.append(closed)

    async def take(peer: Peer, request: Request) -> dict[str, Any]:
        args = request.args
        try:
            scope = SessionLockScope(args.get("scope", 0))
        except ValueError:
            raise ProtocolError(
                ErrorCode.BAD_FRAME, "scope must be 0 (session) or 1 (connection)"
            ) from None
        timeout = args.get("timeout")
        if timeout is not None and not timeout > 0:
            raise ProtocolError(ErrorCode.BAD_FRAME, "timeout must be positive")
        most = limits().max_locks
        if len(taken.get(peer, ())) >= most:
            raise ProtocolError(
                ErrorCode.LIMIT, f"this connection holds {most} locks already"
            )
        try:
            lock = await locks.lock(
                peer.session_ws_id,
                args["name"],
                scope,
                timeout,
                connection=peer.connection_id,
            )
        except LockTimeoutError as exc:
            raise ProtocolError(ErrorCode.TIMEOUT, str(exc)) from None
        except SessionNotAliveError as exc:
            raise ProtocolError(ErrorCode.NOT_FOUND, str(exc)) from None
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        if lock.is_owned:
            takers.setdefault(lock, set()).add(peer)
            taken.setdefault(peer, set()).add(lock)
        return _lock_data(lock)

    async def unlock(peer: Peer, request: Request) -> dict[str, Any]:
        args = request.args
        lock = locks.held_by(peer.session_ws_id, args["name"])
        if lock is not None and lock.sequence == args["sequence"]:
            # this connection asked: the others that took it hear of it
            asked = takers.get(lock)
            if asked is not None:
                asked.discard(peer)
            mine = taken.get(peer)
            if mine is not None:
                mine.discard(lock)
        try:
            check_path(args["name"])
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        # also a lock its session took on another node (a tab reconnected here)
        released = await locks.release(
            peer.session_ws_id, args["name"], args["sequence"]
        )
        return {"unlocked": released}

    async def info(peer: Peer, request: Request) -> dict[str, Any]:
        try:
            found = await locks.info(request.args["name"])
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FRAME, str(exc)) from None
        return _info_data(found)

    def action(peer: Peer, request: Request) -> Action:
        return Action(request.op, ACQUIRE_LOCK, lock=request.args.get("name"))

    name = Arg("str", required=True)
    return [
        Op(
            "lock",
            take,
            {"name": name, "scope": Arg("int"), "timeout": Arg("number")},
            action,
            unbounded=True,
        ),
        Op("unlock", unlock, {"name": name, "sequence": Arg("int", required=True)}),
        Op("lock_info", info, {"name": name}, action),
    ]


def _lock_data(lock: SessionLock) -> dict[str, Any]:
    return {
        "name": lock.name,
        "sequence": lock.sequence,
        "scope": int(lock.scope),
        "owner": lock.owner,
    }


def _info_data(found: LockInfo) -> dict[str, Any]:
    return {
        "name": found.name,
        "owner": found.owner,
        "sequence": found.sequence,
        "scope": None if found.scope is None else int(found.scope),
        "waiting": found.waiting,
        "queue": list(found.queue),
    }
