"""The servers of the messaging scenarios: ours, the raw floor, python-socketio.

``python -m bench.messaging_server IMPL REDIS_URL PREFIX`` serves IMPL on a
free 127.0.0.1 port and prints ``READY <port>``, as ``bench.server`` does
(``procs.ServerProcess(..., module="bench.messaging_server")``).

- **ours**: ``RedisSessionWSRegistry`` with ``session_ws_endpoint`` at
  ``/live``; the clients speak the messaging ops of the protocol
  (``add_handler``, ``send_to_path``, ``send_to_session``,
  ``send_to_filter``, ``respond``). The registry allows every action (the
  default policy denies the messaging ops) and raises the per-connection
  rate limit and queue, which are sized for a browser tab, not for a load
  client that sends thousands of requests on one connection.
  ``POST /bench/msg/tag`` sets the user property ``team=x`` on every
  session of the node, for the filter send.
- **raw**: hand-written aiohttp. ``/echo`` answers each JSON text frame with
  its re-encoding (the one-hop echo). ``/relay`` carries a request from
  client A to client B and B's answer back, by connection address
  (``<node>:<n>``, told in a ``hello``); a connection on another node is
  reached through that node's Redis channel. A ``fan`` goes to every joined
  connection of every node (one publish), and each answer goes back to the
  sender the same way (one publish per answer from another node).
- **socketio**: python-socketio with ``AsyncRedisManager``. Client A emits
  ``req`` with an ack; the server ``await sio.call("req", data, to=sid_B)``
  and returns B's answer as A's ack. ``call`` skips the Redis queue when B is
  on this node (``ignore_queue``: what an app that cares would do); for B on
  another node it goes through the manager, which routes B's ack back to this
  node by host id. Socket.IO has no filter send that collects answers: an
  emit with a callback to a room across nodes keeps one callback id for the
  room, so the first remote ack consumes it and the rest are dropped as
  unknown. So the filter send is done as the app would write it: ``fan``
  emits ``freq`` to a room through the manager, each client emits ``fresp``,
  and its node emits that to the sender's sid (through Redis unless the
  sender is on that node).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from aiohttp import WSMsgType, web

from .server import serve_app, use_library_copy
from .server_common import PROBE, Probe, base_app

LIVE_PATH = "/live"
SOCKETIO_PATH = "/socket.io/"
ECHO_PATH = "/echo"
RELAY_PATH = "/relay"
FAN_ROOM = "fan"
TEAM = ("team", "x")
"""The user property the filter send selects on."""

MISSING: web.AppKey[str] = web.AppKey("msg_missing", str)


async def features(request: web.Request) -> web.Response:
    """Whether this server can run the messaging scenarios; why not."""
    missing = request.app.get(MISSING, "")
    return web.json_response({"messaging": not missing, "missing": missing})


def _allow_all(request: web.Request, action: object) -> bool:
    return True


# ours


def build_ours(redis_url: str, prefix: str) -> web.Application:
    """One node of ours: the protocol endpoint with messaging, no authorization."""
    # imported here, after use_library_copy() (``--lib``)
    from aiohttp_session_ws import (
        ProtocolLimits,
        RedisSessionWSRegistry,
        session_ws_endpoint,
        session_ws_middleware,
        setup,
    )

    limits = ProtocolLimits(
        rate=1_000_000.0,
        burst=1_000_000,
        rate_close_after=1_000_000,
        max_queue=8192,
        max_pending=256,
    )
    registry = RedisSessionWSRegistry(
        redis_url, prefix=prefix, limits=limits, authorize=_allow_all
    )
    app = base_app([session_ws_middleware])
    setup(app, registry)
    if getattr(registry, "messaging", None) is None:
        app[MISSING] = "SessionWSRegistry has no messaging service yet"
    else:
        app[MISSING] = ""
        app.router.add_get(LIVE_PATH, session_ws_endpoint)
    app.router.add_get("/bench/msg/features", features)

    async def tag(request: web.Request) -> web.Response:
        """Set ``team=x`` on every session of this node; count them."""
        sessions = list(registry)
        gate = asyncio.Semaphore(50)

        async def one(session: Any) -> bool:
            async with gate:
                return bool(
                    await registry.set_session_properties(session, dict([TEAM]))
                )

        done = await asyncio.gather(*(one(s) for s in sessions))
        return web.json_response({"tagged": sum(done)})

    app.router.add_post("/bench/msg/tag", tag)
    app[PROBE] = Probe(
        sockets=lambda: len(registry.connections()),
        sessions=lambda: len(registry),
    )
    return app


# raw


class RawNode:
    """The floor's state on one node: its connections, and its Redis channels."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.node = uuid.uuid4().hex[:12]
        self.prefix = prefix
        self.redis = redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(redis_url, max_connections=50)
        )
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.joined: dict[str, web.WebSocketResponse] = {}
        self.echoes = 0
        self._numbers = itertools.count(1)

    def channel(self, node: str) -> str:
        """The Redis channel on which ``node`` takes frames for its connections."""
        return f"{self.prefix}:node:{node}"

    @property
    def fan_channel(self) -> str:
        """The Redis channel of fan-outs, which every node listens to."""
        return f"{self.prefix}:fan"

    def new_address(self) -> str:
        """A connection address: this node's id and a number."""
        return f"{self.node}:{next(self._numbers)}"

    async def route(self, to: str, frame: dict[str, Any]) -> None:
        """Send ``frame`` to the connection at ``to``: here, or through its node."""
        node, _, _ = to.partition(":")
        text = json.dumps(frame)
        if node == self.node:
            ws = self.sockets.get(to)
            if ws is not None:
                await ws.send_str(text)
            return
        body = json.dumps({"to": to, "frame": text})
        await self.redis.publish(self.channel(node), body)

    async def fan_local(self, text: str) -> None:
        """Send an encoded request to every joined connection of this node."""
        for ws in tuple(self.joined.values()):
            await ws.send_str(text)

    async def fan(self, sender: str, number: object, data: object) -> None:
        """A request to every joined connection of every node, encoded once."""
        text = json.dumps({"op": "req", "from": sender, "id": number, "data": data})
        body = json.dumps({"origin": self.node, "frame": text})
        await self.redis.publish(self.fan_channel, body)
        await self.fan_local(text)

    async def listen(self, pubsub: redis.client.PubSub) -> None:
        """Deliver what other nodes send to this node's connections."""
        fans = self.fan_channel.encode()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            body = json.loads(message["data"])
            if message["channel"] == fans:
                if body["origin"] != self.node:
                    await self.fan_local(body["frame"])
                continue
            ws = self.sockets.get(body["to"])
            if ws is not None:
                await ws.send_str(body["frame"])


RAW: web.AppKey[RawNode] = web.AppKey("msg_raw", RawNode)


async def raw_echo(request: web.Request) -> web.WebSocketResponse:
    """Answer each JSON text frame with its re-encoding."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    node = request.app[RAW]
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(json.dumps(json.loads(msg.data)))
            node.echoes += 1
    return ws


async def raw_relay(request: web.Request) -> web.WebSocketResponse:
    """Relay requests and answers between connections, on any node."""
    node = request.app[RAW]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    address = node.new_address()
    node.sockets[address] = ws
    try:
        await ws.send_str(json.dumps({"op": "hello", "address": address}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == "req":
                request_frame = {
                    "op": "req",
                    "from": address,
                    "id": frame["id"],
                    "data": frame.get("data"),
                }
                await node.route(frame["to"], request_frame)
            elif op == "resp":
                answer = {"op": "resp", "id": frame["id"], "data": frame.get("data")}
                await node.route(frame["to"], answer)
            elif op == "fan":
                await node.fan(address, frame["id"], frame.get("data"))
            elif op == "join":
                node.joined[address] = ws
                await ws.send_str(json.dumps({"op": "joined"}))
    finally:
        node.sockets.pop(address, None)
        node.joined.pop(address, None)
    return ws


async def raw_listener(app: web.Application) -> AsyncIterator[None]:
    """Listen to this node's channel and the fan channel while serving."""
    node = app[RAW]
    pubsub = node.redis.pubsub()
    await pubsub.subscribe(node.channel(node.node), node.fan_channel)
    task = asyncio.create_task(node.listen(pubsub))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await node.redis.aclose()


def build_raw(redis_url: str, prefix: str) -> web.Application:
    """One node of the floor: ``/echo`` and ``/relay``."""
    app = base_app()
    node = RawNode(redis_url, prefix)
    app[RAW] = node
    app.cleanup_ctx.append(raw_listener)
    app.router.add_get(ECHO_PATH, raw_echo)
    app.router.add_get(RELAY_PATH, raw_relay)
    app.router.add_get("/bench/msg/features", features)
    app[PROBE] = Probe(sockets=lambda: len(node.sockets), sessions=lambda: 0)
    return app


# socketio


def build_socketio(redis_url: str, prefix: str) -> web.Application:
    """One node of python-socketio with its Redis manager."""
    import socketio

    manager = socketio.AsyncRedisManager(redis_url, channel=f"{prefix}:socketio")
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )
    app = base_app()
    sio.attach(app, socketio_path=SOCKETIO_PATH.strip("/"))
    connected: set[str] = set()

    def here(sid: str) -> bool:
        return bool(manager.is_connected(sid, "/"))

    async def connect(sid: str, environ: dict[str, Any]) -> bool:
        connected.add(sid)
        return True

    async def disconnect(sid: str, reason: object = None) -> None:
        connected.discard(sid)

    async def req(sid: str, body: dict[str, Any]) -> Any:
        """A's request: ``call`` B and answer A's ack with B's answer."""
        to = body["to"]
        return await sio.call(
            "req", body.get("data"), to=to, timeout=30, ignore_queue=here(to)
        )

    async def join(sid: str, body: object = None) -> bool:
        await sio.enter_room(sid, FAN_ROOM)
        return True

    async def fan(sid: str, body: dict[str, Any]) -> None:
        """The filter send as an app writes it: one emit to the room, via Redis."""
        frame = {"rid": body["rid"], "from": sid, "data": body.get("data")}
        await sio.emit("freq", frame, to=FAN_ROOM)

    async def fresp(sid: str, body: dict[str, Any]) -> None:
        """One answer of a filter send: to the sender's sid, wherever it is."""
        to = body["to"]
        answer = {"rid": body["rid"], "session": sid, "data": body.get("data")}
        await sio.emit("fresp", answer, to=to, ignore_queue=here(to))

    for name, handler in (
        ("connect", connect),
        ("disconnect", disconnect),
        ("req", req),
        ("join", join),
        ("fan", fan),
        ("fresp", fresp),
    ):
        sio.on(name, handler)
    app.router.add_get("/bench/msg/features", features)
    app[PROBE] = Probe(sockets=lambda: len(connected), sessions=lambda: 0)
    return app


BUILDERS = {"ours": build_ours, "raw": build_raw, "socketio": build_socketio}


async def serve(impl: str, redis_url: str, prefix: str) -> None:
    """Serve until a termination signal arrives."""
    await serve_app(BUILDERS[impl](redis_url, prefix))


if __name__ == "__main__":
    use_library_copy()
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
