"""The servers of the event scenarios: ours, and the raw floor of the fan-out.

``python -m bench.events_server IMPL REDIS_URL PREFIX`` serves IMPL on a
free 127.0.0.1 port and prints ``READY <port>``, as ``bench.server`` does
(``procs.ServerProcess(..., module="bench.events_server")``).

- **ours**: ``RedisSessionWSRegistry`` with ``session_ws_endpoint`` at
  ``/live``; clients speak the event ops of the protocol (``subscribe``,
  ``register_events``). The registry allows every action (the default
  policy denies the event ops) and raises the per-connection rate limit and
  queue, which are sized for a browser tab. Its event log keeps
  :data:`RETENTION` events, so that no scenario's events are trimmed
  during a run (the default keeps 10,000, and the replay needs 10,001).
  Routes, each timed in this process with ``perf_counter``
  (``CLOCK_MONOTONIC``, one clock for every process of the machine):

  - ``POST /bench/events/register?type=T&n=N&tag=K``: register N events of
    type T (in calls of at most 1,000, the service's limit), payloads
    ``{"n": K + i, ...}``; the reply has ``t0`` (just before the first
    call), the first and the last id;
  - ``POST /bench/events/later?type=T&tag=K&delay=S``: reply at once, and
    register one event (payload ``n`` = K) S seconds later (5 ms), so that
    neither this node nor the load client is still busy with the request
    when the event goes out; ``GET /bench/events/started?tag=K`` then tells
    the moment just before the register call;
  - ``POST /bench/events/throughput?via=V&batch=B&batches=K&type=T``: K
    batches of B events one after the other, each timed, and the process's
    CPU around them. ``via=ours``: ``registry.events.register(batch)``;
    ``via=xadd``: a redis-py pipeline (no ``MULTI``) of B ``XADD`` with the
    same fields, to a stream of its own (:data:`RAW_STREAM`);
  - ``POST /bench/events/replay?via=V&since=ID&type=T&expect=N``: read the
    N retained events of type T after ID. ``via=server``:
    ``registry.events.subscribe([T], since=ID)`` iterated to the N-th
    event; ``via=xrange``: redis-py ``XRANGE`` pages of 500 (the service's
    page) on our log's stream, the entries of type T counted, no decoding.
- **raw**: hand-written aiohttp. ``/ws`` keeps each websocket in a set;
  ``POST /bench/events/fan`` sends one pre-encoded ``events`` frame
  (:data:`RAW_FRAME`, the shape and size of ours) to every one of them with
  ``send_frame``, as ours does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import redis.asyncio as redis
from aiohttp import WSMsgType, web

from .server import serve_app, use_library_copy
from .server_common import PROBE, Probe, base_app

LIVE_PATH = "/live"
RAW_PATH = "/ws"
RETENTION = 1_000_000
"""Events our bench log keeps (by count; the default age limit stays)."""
CHUNK = 1000
"""Events of one register call at most (the service's ``MAX_REGISTER``)."""
PAGE = 500
"""The raw replay's page: the service's replay page."""
RAW_STREAM = "raw-events"
"""The key (after the prefix) of the raw ``XADD`` stream: no node follows it."""
TEXT = "x" * 32
WAIT_BOUND = 30.0
MISSING: web.AppKey[str] = web.AppKey("events_missing", str)


def payload(n: int) -> dict[str, Any]:
    """The JSON payload data of the bench's n-th event."""
    return {"n": n, "text": TEXT}


RAW_EVENT = {
    "id": "1764590000000-0",
    "type": "bench/fan",
    "timestamp": 1764590000.123456,
    "source_timestamp": None,
    "payload": {"type": "json", "data": payload(0)},
}
RAW_FRAME = json.dumps(
    {"op": "events", "subscription": 1, "events": [RAW_EVENT]},
    separators=(",", ":"),
).encode()
"""What the floor sends: an ``events`` frame as ours encodes one."""


async def features(request: web.Request) -> web.Response:
    """Whether this server can run the event scenarios; why not."""
    missing = request.app.get(MISSING, "")
    return web.json_response({"events": not missing, "missing": missing})


def _allow_all(request: web.Request, action: object) -> bool:
    return True


def _int(request: web.Request, name: str, low: int = 1, high: int = 1_000_000) -> int:
    value = int(request.query[name])
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name} must be in [{low}, {high}]")
    return value


# ours


def build_ours(redis_url: str, prefix: str) -> web.Application:
    """One node of ours: the protocol endpoint with events, no authorization."""
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
    store = getattr(registry.backend, "event_store", None)
    if getattr(registry, "events", None) is None or store is None:
        app[MISSING] = "SessionWSRegistry has no events service on Redis yet"
    else:
        from aiohttp_session_ws.backends.base import EventRetention

        store.retention = EventRetention(
            max_count=RETENTION, max_age=EventRetention().max_age
        )
        app[MISSING] = ""
        app.router.add_get(LIVE_PATH, session_ws_endpoint)
        _add_event_routes(app, registry, redis_url, prefix)
    app.router.add_get("/bench/events/features", features)
    app[PROBE] = Probe(
        sockets=lambda: len(registry.connections()),
        sessions=lambda: len(registry),
    )
    return app


def _add_event_routes(
    app: web.Application, registry: Any, redis_url: str, prefix: str
) -> None:
    from aiohttp_session_ws.events import (
        EventId,
        EventPayloadJson,
        RegisterEvent,
        format_event_type,
        parse_event_type,
    )
    from aiohttp_session_ws.events.model import payload_to_json

    events = registry.events
    raw = redis.Redis.from_url(redis_url)
    raw_stream = f"{prefix}:{RAW_STREAM}"

    async def close_raw(app: web.Application) -> None:
        await raw.aclose()

    app.on_cleanup.append(close_raw)

    def batch_of(event_type: Any, count: int, tag: int) -> list[Any]:
        return [
            RegisterEvent(event_type, payload=EventPayloadJson(payload(tag + i)))
            for i in range(count)
        ]

    async def register(request: web.Request) -> web.Response:
        event_type = parse_event_type(request.query["type"])
        count = _int(request, "n")
        tag = _int(request, "tag", 0, 1 << 40) if "tag" in request.query else 0
        chunks = [
            batch_of(event_type, min(CHUNK, count - start), tag + start)
            for start in range(0, count, CHUNK)
        ]
        t0 = time.perf_counter()
        done = []
        for chunk in chunks:
            done += await events.register(chunk, with_response=True)
        return web.json_response(
            {"t0": t0, "first": str(done[0].id), "last": str(done[-1].id)}
        )

    async def throughput(request: web.Request) -> web.Response:
        via = request.query["via"]
        event_type = parse_event_type(request.query["type"])
        size = _int(request, "batch", 1, CHUNK)
        batches = _int(request, "batches", 1, 10_000)
        seconds: list[float] = []
        cpu = time.process_time()
        if via == "ours":
            for k in range(batches):
                batch = batch_of(event_type, size, k * size)
                started = time.perf_counter()
                await events.register(batch)
                seconds.append(time.perf_counter() - started)
        elif via == "xadd":
            type_text = format_event_type(event_type)
            for k in range(batches):
                batch = batch_of(event_type, size, k * size)
                started = time.perf_counter()
                # what the store writes per event: type, timestamp, source
                # timestamp, payload JSON
                now = repr(time.time())
                pipe = raw.pipeline(transaction=False)
                for event in batch:
                    fields = {
                        "t": type_text,
                        "ts": now,
                        "st": "",
                        "p": json.dumps(
                            payload_to_json(event.payload), separators=(",", ":")
                        ),
                    }
                    pipe.xadd(raw_stream, fields)  # type: ignore[arg-type]
                await pipe.execute()
                seconds.append(time.perf_counter() - started)
        else:
            raise web.HTTPBadRequest(text="via is ours or xadd")
        cpu = time.process_time() - cpu
        return web.json_response({"seconds": seconds, "cpu": cpu})

    async def replay(request: web.Request) -> web.Response:
        via = request.query["via"]
        since = EventId.parse(request.query["since"])
        type_text = request.query["type"]
        event_type = parse_event_type(type_text)
        expect = _int(request, "expect")
        cpu = time.process_time()
        started = time.perf_counter()
        found = 0
        if via == "server":
            epoch = (await registry.backend.event_store.read(None, 0)).epoch
            subscription = await events.subscribe(
                [event_type], since=since, epoch=epoch, max_buffer=expect + CHUNK
            )
            try:
                if subscription.recovered is not True:
                    raise web.HTTPConflict(text=f"not recovered: {subscription.reason}")
                async with asyncio.timeout(WAIT_BOUND):
                    async for _ in subscription:
                        found += 1
                        if found == expect:
                            break
            finally:
                subscription.close()
        elif via == "xrange":
            key = registry.backend.event_store._key
            wanted = type_text.encode()
            after = f"({since}"
            for _ in range(RETENTION // PAGE + 1):  # bounded by the retention
                page: list[Any] = await raw.xrange(key, after, "+", count=PAGE) or []
                found += sum(fields[b"t"] == wanted for _, fields in page)
                if len(page) < PAGE or found >= expect:
                    break
                after = "(" + bytes(page[-1][0]).decode()
        else:
            raise web.HTTPBadRequest(text="via is server or xrange")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        return web.json_response({"seconds": seconds, "cpu": cpu, "events": found})

    started: dict[int, float] = {}
    pending: set[asyncio.Task[None]] = set()

    async def later(request: web.Request) -> web.Response:
        event_type = parse_event_type(request.query["type"])
        tag = _int(request, "tag", 0, 1 << 40)
        delay = float(request.query.get("delay", "0.005"))
        if not 0 <= delay <= 1:
            raise web.HTTPBadRequest(text="delay is in [0, 1] s")

        async def register_later() -> None:
            await asyncio.sleep(delay)
            batch = batch_of(event_type, 1, tag)
            started[tag] = time.perf_counter()
            await events.register(batch)

        task = asyncio.create_task(register_later())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return web.json_response({"scheduled": tag})

    async def started_at(request: web.Request) -> web.Response:
        tag = _int(request, "tag", 0, 1 << 40)
        if tag not in started:
            raise web.HTTPNotFound(text=f"event {tag} not registered yet")
        return web.json_response({"t0": started.pop(tag)})

    app.router.add_post("/bench/events/register", register)
    app.router.add_post("/bench/events/later", later)
    app.router.add_get("/bench/events/started", started_at)
    app.router.add_post("/bench/events/throughput", throughput)
    app.router.add_post("/bench/events/replay", replay)


# raw


Sockets = set[web.WebSocketResponse]
SOCKETS: web.AppKey[Sockets] = web.AppKey("events_raw_sockets")


async def raw_socket(request: web.Request) -> web.WebSocketResponse:
    """A websocket kept in the set until it closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        sockets.discard(ws)
    return ws


async def raw_fan(request: web.Request) -> web.Response:
    """Send the pre-encoded frame to every socket."""
    frame = RAW_FRAME
    text = WSMsgType.TEXT
    sent = 0
    sockets: Sockets = request.app[SOCKETS]
    for ws in tuple(sockets):
        try:
            await ws.send_frame(frame, text)
        except (ConnectionError, RuntimeError):
            continue
        sent += 1
    return web.json_response({"sent": sent})


def build_raw(redis_url: str, prefix: str) -> web.Application:
    """The floor of the fan-out: a set of websockets, one frame to each."""
    app = base_app()
    sockets: Sockets = set()
    app[SOCKETS] = sockets
    app.router.add_get(RAW_PATH, raw_socket)
    app.router.add_post("/bench/events/fan", raw_fan)
    app.router.add_get("/bench/events/features", features)
    app[PROBE] = Probe(sockets=lambda: len(sockets), sessions=lambda: 0)
    return app


BUILDERS = {"ours": build_ours, "raw": build_raw}


async def serve(impl: str, redis_url: str, prefix: str) -> None:
    """Serve until a termination signal arrives."""
    await serve_app(BUILDERS[impl](redis_url, prefix))


if __name__ == "__main__":
    use_library_copy()
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
