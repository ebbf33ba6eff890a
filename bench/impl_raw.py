"""The floor: hand-written aiohttp with a dict of sockets and a Redis listener.

What a careful developer writes without a library: the session id from the
cookie session, a dict of sets of sockets, and one pub/sub channel on which a
logout on any node asks every node to close the session's sockets. Pushes
(``{"op":"push","data":...}``, encoded once per session) go to this node's
sockets; with ``remote=1`` they are also published on a second channel, on
which every node sends them to its sockets of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import redis.asyncio as redis
from aiohttp import WSCloseCode, WSMsgType, web

from .push_common import clock, push_frame, push_reply, push_request
from .server_common import PROBE, Probe, base_app, fanout_request, session_id_of

SOCKETS: web.AppKey[dict[str, set[web.WebSocketResponse]]] = web.AppKey(
    "raw_sockets", dict
)
REDIS: web.AppKey[redis.Redis] = web.AppKey("raw_redis", redis.Redis)
CHANNEL: web.AppKey[str] = web.AppKey("raw_channel", str)
PUSH_CHANNEL: web.AppKey[str] = web.AppKey("raw_push_channel", str)


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


async def send_local(app: web.Application, session: str, frame: str) -> int:
    """Send an encoded frame to this node's sockets of the session."""
    sent = 0
    for ws in tuple(app[SOCKETS].get(session, ())):
        await ws.send_str(frame)
        sent += 1
    return sent


async def push(request: web.Request) -> web.Response:
    """Push ``m`` times to one session: here, and with ``remote=1`` via Redis."""
    rounds, payload, session, remote = push_request(request)
    if session is None:
        raise web.HTTPBadRequest(text="session= is required")
    app = request.app
    at = clock()
    sent = 0
    for _ in range(rounds):
        frame = push_frame(payload)
        if remote:
            body = json.dumps({"session": session, "frame": frame})
            await app[REDIS].publish(app[PUSH_CHANNEL], body)
        sent += await send_local(app, session, frame)
    return push_reply(sent, at)


async def pushfan(request: web.Request) -> web.Response:
    """Push to every session of this node, ``m`` rounds; one encoding per session."""
    rounds, payload, _, _ = push_request(request)
    app = request.app
    sockets = app[SOCKETS]
    at = clock()
    sent = 0
    for _ in range(rounds):
        for session in list(sockets):
            sent += await send_local(app, session, push_frame(payload))
    return push_reply(sent, at)


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
    """Close the sockets of each session named on the close channel; push."""
    pushes = app[PUSH_CHANNEL].encode()
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        if message["channel"] == pushes:
            body = json.loads(message["data"])
            await send_local(app, body["session"], body["frame"])
        else:
            await close_local(app, message["data"].decode())


async def redis_listener(app: web.Application) -> AsyncIterator[None]:
    """Subscribe before serving; stop listening on cleanup."""
    pubsub = app[REDIS].pubsub()
    await pubsub.subscribe(app[CHANNEL], app[PUSH_CHANNEL])
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
    app[PUSH_CHANNEL] = f"{prefix}:push"
    app.cleanup_ctx.append(redis_listener)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/bench/fanout", fanout)
    app.router.add_post("/bench/logout", logout)
    app.router.add_post("/bench/push", push)
    app.router.add_post("/bench/pushfan", pushfan)
    app[PROBE] = Probe(
        sockets=lambda: sum(len(held) for held in sockets.values()),
        sessions=lambda: len(sockets),
    )
    return app
