"""A websocket and nothing else: no sessions, no cookie parsing, a set of sockets.

The bottom of :mod:`bench.memory_split`: what aiohttp alone holds for an idle
websocket that runs the suite's echo loop.
"""

from __future__ import annotations

from aiohttp import WSMsgType, web

from .server_common import PROBE, Probe, stats

SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("bare_sockets", set)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Hold the socket open in a set until it closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
    finally:
        sockets.discard(ws)
    return ws


def build_app(redis_url: str, prefix: str) -> web.Application:
    """One node without sessions: ``/ws`` and ``/bench/stats``."""
    app = web.Application()
    sockets: set[web.WebSocketResponse] = set()
    app[SOCKETS] = sockets
    app.router.add_get("/ws", websocket)
    app.router.add_get("/bench/stats", stats)
    app[PROBE] = Probe(sockets=lambda: len(sockets), sessions=lambda: 0)
    return app
