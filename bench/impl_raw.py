"""The floor: hand-written aiohttp with a dict of sockets and a Redis listener.

What a careful developer writes without a library: the session id from the
cookie session, a dict of sets of sockets, and one pub/sub channel on which a
logout on any node asks every node to close the session's sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as redis
from aiohttp import WSCloseCode, WSMsgType, web

from .server_common import PROBE, Probe, base_app, fanout_request, session_id_of

SOCKETS: web.AppKey[dict[str, set[web.WebSocketResponse]]] = web.AppKey(
    "raw_sockets", dict
)
REDIS: web.AppKey[redis.Redis] = web.AppKey("raw_redis", redis.Redis)
CHANNEL: web.AppKey[str] = web.AppKey("raw_channel", str)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Track the socket under its session until it closes."""
    session = await session_id_of(request)
    if session is None:
        raise web.HTTPForbidden(text="log in first")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.setdefault(session, set()).add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
    finally:
        held = sockets.get(session)
        if held is not None:
            held.discard(ws)
            if not held:
                del sockets[session]
    return ws


async def fanout(request: web.Request) -> web.Response:
    """Send the payload ``m`` times to every socket of every session here."""
    rounds, payload = fanout_request(request)
    sockets = request.app[SOCKETS]
    sent = 0
    for _ in range(rounds):
        for session in list(sockets):
            for ws in tuple(sockets.get(session, ())):
                await ws.send_str(payload)
                sent += 1
    return web.json_response({"sent": sent})


async def close_local(app: web.Application, session: str) -> int:
    """Close this node's sockets of the session."""
    held = tuple(app[SOCKETS].get(session, ()))
    results = await asyncio.gather(
        *(ws.close(code=WSCloseCode.OK) for ws in held), return_exceptions=True
    )
    return sum(result is True for result in results)


async def logout(request: web.Request) -> web.Response:
    """Close the session's sockets here, and ask every node to do the same."""
    session = await session_id_of(request)
    if session is None:
        raise web.HTTPBadRequest(text="no session")
    app = request.app
    await app[REDIS].publish(app[CHANNEL], session)
    return web.json_response({"closed": await close_local(app, session)})


async def listen(app: web.Application, pubsub: redis.client.PubSub) -> None:
    """Close the sockets of each session named on the channel."""
    async for message in pubsub.listen():
        if message["type"] == "message":
            await close_local(app, message["data"].decode())


async def redis_listener(app: web.Application) -> AsyncIterator[None]:
    """Subscribe before serving; stop listening on cleanup."""
    pubsub = app[REDIS].pubsub()
    await pubsub.subscribe(app[CHANNEL])
    task = asyncio.create_task(listen(app, pubsub))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await app[REDIS].aclose()


def build_app(redis_url: str, prefix: str) -> web.Application:
    """One node: the dict of sockets, ``/ws``, and the benchmark's control routes."""
    app = base_app()
    sockets: dict[str, set[web.WebSocketResponse]] = {}
    app[SOCKETS] = sockets
    app[REDIS] = redis.Redis.from_pool(
        redis.BlockingConnectionPool.from_url(redis_url, max_connections=50)
    )
    app[CHANNEL] = f"{prefix}:close"
    app.cleanup_ctx.append(redis_listener)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/bench/fanout", fanout)
    app.router.add_post("/bench/logout", logout)
    app[PROBE] = Probe(
        sockets=lambda: sum(len(held) for held in sockets.values()),
        sessions=lambda: len(sockets),
    )
    return app
