"""The benchmark server on aiohttp-session-ws, as its docs tell an app to use it.

When the library has the opt-in protocol (``session_ws_endpoint``) and the push
service (``send_to_session``), the server also serves protocol connections at
``/live`` and pushes through the registry; ``GET /bench/features`` says whether
it does, and why not.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiohttp import WSMsgType, web

from aiohttp_session_ws import (
    REGISTRY_APP_KEY,
    RedisBackend,
    RedisSessionWSRegistry,
    session_ws,
    session_ws_middleware,
    setup,
)

from .push_common import PROTOCOL_PATH, clock, push_reply, push_request
from .server_common import PROBE, Probe, base_app, fanout_request, session_id_of

SendToSession = Callable[[Hashable, Any], Awaitable[int]]
PUSH = web.AppKey[SendToSession]("ours_push")
MISSING: web.AppKey[str] = web.AppKey("ours_missing", str)


def protocol_endpoint() -> (
    Callable[[web.Request], Awaitable[web.StreamResponse]] | None
):
    """The library's ``session_ws_endpoint``, or ``None`` before it exists."""
    module = importlib.import_module("aiohttp_session_ws")
    endpoint: Any = getattr(module, "session_ws_endpoint", None)
    return endpoint if callable(endpoint) else None


def push_api(registry: object) -> SendToSession | None:
    """``send_to_session`` of the registry (or of its ``push`` service), if any."""
    for owner in (registry, getattr(registry, "push", None)):
        send: Any = getattr(owner, "send_to_session", None)
        if callable(send):
            return send  # type: ignore[no-any-return]
    return None


def add_protocol_route(app: web.Application) -> bool:
    """Serve protocol connections at ``/live`` if the library can."""
    endpoint = protocol_endpoint()
    if endpoint is None:
        return False
    app.router.add_get(PROTOCOL_PATH, endpoint)
    return True


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


async def push(request: web.Request) -> web.Response:
    """``send_to_session`` ``m`` times: to one session, on every node."""
    rounds, payload, session, _ = push_request(request)
    if session is None:
        raise web.HTTPBadRequest(text="session= is required")
    send = _send(request)
    at = clock()
    sent = 0
    for _ in range(rounds):
        sent += await send(session, payload)
    return push_reply(sent, at)


async def pushfan(request: web.Request) -> web.Response:
    """``send_to_session`` to every session of this node, ``m`` rounds."""
    rounds, payload, _, _ = push_request(request)
    registry = request.app[REGISTRY_APP_KEY]
    send = _send(request)
    at = clock()
    sent = 0
    for _ in range(rounds):
        for session in list(registry):
            sent += await send(session, payload)
    return push_reply(sent, at)


def _send(request: web.Request) -> SendToSession:
    send = request.app.get(PUSH)
    if send is None:
        raise web.HTTPNotImplemented(text=request.app[MISSING])
    return send


async def features(request: web.Request) -> web.Response:
    """Whether this library serves the protocol and pushes; why not."""
    missing = request.app[MISSING]
    return web.json_response({"push": not missing, "missing": missing})


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
    app.router.add_post("/bench/push", push)
    app.router.add_post("/bench/pushfan", pushfan)
    app.router.add_get("/bench/features", features)
    send = push_api(registry)
    if not add_protocol_route(app):
        app[MISSING] = "aiohttp_session_ws has no session_ws_endpoint yet"
    elif send is None:
        app[MISSING] = "SessionWSRegistry has no send_to_session yet"
    else:
        app[MISSING] = ""
        app[PUSH] = send

    backend = registry.backend

    async def leftovers() -> dict[str, int]:
        # the private maps the registry and its backend keep per socket, per
        # session and per call, and this node's presence hash in Redis
        node_key = f"{backend._tag}:node:{registry.node_id}"
        return {
            "records": len(registry.connections()),
            "opened_times": len(getattr(registry, "_opened", ())),
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
