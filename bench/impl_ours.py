"""The benchmark server on aiohttp-session-ws, as its docs tell an app to use it."""

from __future__ import annotations

from aiohttp import WSMsgType, web

from aiohttp_session_ws import (
    REGISTRY_APP_KEY,
    RedisBackend,
    RedisSessionWSRegistry,
    session_ws,
    session_ws_middleware,
    setup,
)

from .server_common import PROBE, Probe, base_app, fanout_request, session_id_of


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Hold the socket open, registered under the session, until it closes."""
    async with session_ws(request) as ws:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
    return ws


async def fanout(request: web.Request) -> web.Response:
    """Send the payload ``m`` times to every socket of every session here."""
    rounds, payload = fanout_request(request)
    registry = request.app[REGISTRY_APP_KEY]
    sent = 0
    for _ in range(rounds):
        for session in list(registry):
            for ws in registry.get(session, ()):
                await ws.send_str(payload)
                sent += 1
    return web.json_response({"sent": sent})


async def logout(request: web.Request) -> web.Response:
    """Close every websocket of the caller's session, on every node."""
    session = await session_id_of(request)
    if session is None:
        raise web.HTTPBadRequest(text="no session")
    closed = await request.app[REGISTRY_APP_KEY].close_all_session(session)
    return web.json_response({"closed": closed})


def build_app(redis_url: str, prefix: str) -> web.Application:
    """One node: a Redis registry, ``/ws``, and the benchmark's control routes."""
    registry = RedisSessionWSRegistry(redis_url, prefix=prefix)
    assert isinstance(registry.backend, RedisBackend)
    app = base_app([session_ws_middleware])
    setup(app, registry)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/bench/fanout", fanout)
    app.router.add_post("/bench/logout", logout)

    backend = registry.backend

    async def leftovers() -> dict[str, int]:
        # the private maps the registry and its backend keep per socket, per
        # session and per call, and this node's presence hash in Redis
        node_key = f"{backend._tag}:node:{registry.node_id}"
        return {
            "records": len(registry.connections()),
            "opened_times": len(registry._opened),
            "session_sockets": sum(len(group) for group in registry._registry.values()),
            "background_tasks": len(registry._tasks),
            "pending_calls": len(registry._bus._calls),
            "presence_notes": len(backend._local) + len(backend._dirty),
            "flush_waiters": len(backend._flush_waiters),
            "node_hash_in_redis": int(await backend.client.hlen(node_key)),
            "sessions_in_redis": len(await registry.connected_sessions()),
        }

    async def cluster_ready(session: str, expected: int) -> bool:
        return await registry.count_connections(session) == expected

    app[PROBE] = Probe(
        sockets=lambda: len(registry.connections()),
        sessions=lambda: len(registry),
        leftovers=leftovers,
        cluster_ready=cluster_ready,
    )
    return app
