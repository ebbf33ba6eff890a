"""The usual alternative: python-socketio on aiohttp with its AsyncRedisManager.

A session's sockets join a room named after the session id, so one ``emit``
reaches them on every node. Socket.IO has no cluster-wide "disconnect this
room", so the app keeps each session's socket ids in a Redis set and
disconnects them one by one; the manager carries each disconnect to the node
that holds the socket. That is what its docs point an app to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
import socketio
from aiohttp import web

from .push_common import clock, push_reply, push_request
from .server_common import PROBE, Probe, base_app, fanout_request, session_id_of

WS_PATH = "/socket.io/"
DISCONNECT_CONCURRENCY = 20
"""Disconnects in flight at once: faster than one by one, and well inside the
manager's Redis pool (100 connections in redis-py 8), which fails a publish
beyond that."""


class SessionRooms:
    """Socket.IO handlers that tie each socket to its session's room."""

    def __init__(self, sio: socketio.AsyncServer, redis_url: str, prefix: str) -> None:
        self.sio = sio
        # a burst of connects must wait for a pooled connection, not fail
        self.redis = redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(redis_url, max_connections=50)
        )
        self.prefix = prefix
        self.sessions: dict[str, set[str]] = {}
        """This node's socket ids per session id."""
        self.session_of: dict[str, str] = {}
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)

    def key(self, session: str) -> str:
        """The Redis set of the session's socket ids on every node."""
        return f"{self.prefix}:sids:{session}"

    async def connect(self, sid: str, environ: dict[str, Any]) -> bool:
        """Accept a socket with a session; join its room and record it."""
        session = await session_id_of(environ["aiohttp.request"])
        if session is None:
            return False
        await self.sio.enter_room(sid, session)
        self.sessions.setdefault(session, set()).add(sid)
        self.session_of[sid] = session
        await self.redis.sadd(self.key(session), sid)
        return True

    async def disconnect(self, sid: str, reason: object = None) -> None:
        """Forget the socket here and in Redis."""
        session = self.session_of.pop(sid, None)
        if session is None:
            return
        held = self.sessions[session]
        held.discard(sid)
        if not held:
            del self.sessions[session]
        await self.redis.srem(self.key(session), sid)

    async def logout(self, session: str) -> int:
        """Disconnect every socket of the session, on whichever node holds it."""
        sids = await self.redis.smembers(self.key(session))
        gate = asyncio.Semaphore(DISCONNECT_CONCURRENCY)

        async def disconnect(sid: bytes | str) -> None:
            async with gate:
                await self.sio.disconnect(_text(sid))

        await asyncio.gather(*(disconnect(sid) for sid in sids))
        return len(sids)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


ROOMS: web.AppKey[SessionRooms] = web.AppKey("socketio_rooms", SessionRooms)


async def fanout(request: web.Request) -> web.Response:
    """Emit the payload ``m`` times to the room of every session here.

    ``ignore_queue=True`` sends to this node's sockets only, as ours and raw
    do. A plain ``emit`` would also publish every message through Redis to the
    other nodes, costing more than twice the CPU here, plus theirs.
    """
    rounds, payload = fanout_request(request)
    rooms = request.app[ROOMS]
    sent = 0
    for _ in range(rounds):
        for session, sids in list(rooms.sessions.items()):
            await rooms.sio.emit("m", payload, to=session, ignore_queue=True)
            sent += len(sids)
    return web.json_response({"sent": sent})


async def push(request: web.Request) -> web.Response:
    """Emit ``m`` times to one session's room.

    To this node's sockets, or with ``remote=1`` to every node's (through the
    Redis manager).
    """
    rounds, payload, session, remote = push_request(request)
    if session is None:
        raise web.HTTPBadRequest(text="session= is required")
    rooms = request.app[ROOMS]
    at = clock()
    sent = 0
    for _ in range(rounds):
        await rooms.sio.emit("push", payload, to=session, ignore_queue=not remote)
        sent += len(rooms.sessions.get(session, ()))
    return push_reply(sent, at)


async def pushfan(request: web.Request) -> web.Response:
    """Emit to the room of every session here, ``m`` rounds (this node only)."""
    rounds, payload, _, _ = push_request(request)
    rooms = request.app[ROOMS]
    at = clock()
    sent = 0
    for _ in range(rounds):
        for session, sids in list(rooms.sessions.items()):
            await rooms.sio.emit("push", payload, to=session, ignore_queue=True)
            sent += len(sids)
    return push_reply(sent, at)


async def logout(request: web.Request) -> web.Response:
    """Disconnect every socket of the caller's session, on every node."""
    session = await session_id_of(request)
    if session is None:
        raise web.HTTPBadRequest(text="no session")
    return web.json_response({"closed": await request.app[ROOMS].logout(session)})


async def close_redis(app: web.Application) -> AsyncIterator[None]:
    """Close the app's own Redis client on cleanup."""
    yield
    await app[ROOMS].redis.aclose()


def build_app(redis_url: str, prefix: str) -> web.Application:
    """One node: Socket.IO with a Redis manager, and the control routes."""
    manager = socketio.AsyncRedisManager(redis_url, channel=f"{prefix}:socketio")
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )
    app = base_app()
    sio.attach(app, socketio_path=WS_PATH.strip("/"))
    app[ROOMS] = rooms = SessionRooms(sio, redis_url, prefix)
    app.cleanup_ctx.append(close_redis)
    app.router.add_post("/bench/fanout", fanout)
    app.router.add_post("/bench/logout", logout)
    app.router.add_post("/bench/push", push)
    app.router.add_post("/bench/pushfan", pushfan)

    async def leftovers() -> dict[str, int]:
        manager_rooms = manager.rooms.get("/", {})
        return {
            "rooms": len(manager_rooms),
            "engineio_sockets": len(sio.eio.sockets),
            "sid_maps": len(manager.eio_to_sid),
            "pending": len(manager.pending_disconnect),
            "sids_in_redis": len(await rooms.redis.keys(f"{prefix}:sids:*")),
        }

    async def cluster_ready(session: str, expected: int) -> bool:
        return int(await rooms.redis.scard(rooms.key(session))) == expected

    app[PROBE] = Probe(
        sockets=lambda: len(rooms.session_of),
        sessions=lambda: len(rooms.sessions),
        leftovers=leftovers,
        cluster_ready=cluster_ready,
    )
    return app
