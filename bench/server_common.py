"""What every benchmark server shares: cookie sessions, /login and /bench/stats.

Each implementation module builds on :func:`base_app` and adds its websocket
route, ``POST /bench/fanout`` and ``POST /bench/logout``, and fills in
:class:`Probe` so that ``/bench/stats`` can report what it tracks.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp_session
import psutil
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

SESSION_KEY = "aiohttp_session_ws_id"
"""Where every implementation keeps the session id: our library's default key."""

COOKIE_SECRET = b"bench-only-secret-32-bytes-long!"
"""All nodes share the cookie key, as a cluster behind a balancer would."""

PAYLOAD_LIMIT = 1024


@dataclass
class Probe:
    """How ``/bench/stats`` asks an implementation what it holds."""

    sockets: Callable[[], int]
    """Open websockets this node tracks."""
    sessions: Callable[[], int]
    """Sessions with a tracked websocket on this node."""
    leftovers: Callable[[], Awaitable[dict[str, int]]] = field(
        default=lambda: _no_leftovers()
    )
    """Sizes of other per-connection state (internal maps, Redis keys)."""
    cluster_ready: Callable[[str, int], Awaitable[bool]] = field(
        default=lambda session, expected: _always_ready()
    )
    """Whether the cluster knows ``expected`` sockets of ``session`` (for a close)."""


async def _no_leftovers() -> dict[str, int]:
    return {}


async def _always_ready() -> bool:
    return True


PROBE: web.AppKey[Probe] = web.AppKey("bench_probe", Probe)


async def login(request: web.Request) -> web.Response:
    """Start a new session with a new id; the cookie carries it."""
    session = await aiohttp_session.new_session(request)
    session_id = uuid.uuid4().hex
    session[SESSION_KEY] = session_id
    return web.json_response({"session": session_id})


async def session_id_of(request: web.Request) -> str | None:
    """The session id in the request's cookie session, if any."""
    session = await aiohttp_session.get_session(request)
    value = session.get(SESSION_KEY)
    return value if isinstance(value, str) else None


def _tasks_besides_connections() -> int:
    """Tasks, not counting aiohttp's one per open HTTP connection.

    The load client keeps idle keep-alive connections open for its control
    requests, so their number depends on the client, not on the server. Open
    websockets, which also hold such a task, show in ``ws_objects_alive``.
    """
    return sum(
        getattr(task.get_coro(), "__qualname__", "") != "RequestHandler.start"
        for task in asyncio.all_tasks()
    )


def _ws_objects_alive() -> int:
    return sum(isinstance(o, web.WebSocketResponse) for o in gc.get_objects())


async def stats(request: web.Request) -> web.Response:
    """CPU time, tasks and what the probe reports; with ``?full=1`` also memory.

    CPU time is read first, so that a collection here is not counted in it.
    """
    cpu = time.process_time()
    probe = request.app[PROBE]
    body: dict[str, object] = {
        "cpu": cpu,
        "tasks": _tasks_besides_connections(),
        "sockets": probe.sockets(),
        "sessions": probe.sessions(),
    }
    if request.query.get("full"):
        gc.collect()
        body["rss"] = psutil.Process().memory_info().rss
        body["ws_objects_alive"] = _ws_objects_alive()
        body["leftovers"] = await probe.leftovers()
    return web.json_response(body)


async def ready(request: web.Request) -> web.Response:
    """Answer whether the cluster knows ``expected`` sockets of ``session``."""
    session = request.query["session"]
    expected = int(request.query["expected"])
    return web.json_response(
        {"ready": await request.app[PROBE].cluster_ready(session, expected)}
    )


def fanout_request(request: web.Request) -> tuple[int, str]:
    """The rounds and payload of a ``POST /bench/fanout?m=M&payload=P``."""
    rounds = int(request.query["m"])
    payload = request.query.get("payload", "x" * 32)
    if len(payload) > PAYLOAD_LIMIT or rounds < 1:
        raise web.HTTPBadRequest(text="m must be >= 1 and the payload small")
    return rounds, payload


def base_app(extra_middlewares: list[Middleware] | None = None) -> web.Application:
    """An app with encrypted cookie sessions, /login, /bench/stats, /bench/ready."""
    storage = EncryptedCookieStorage(COOKIE_SECRET, cookie_name="BENCH_SESSION")
    middlewares = [aiohttp_session.session_middleware(storage)]
    middlewares += extra_middlewares or []
    app = web.Application(middlewares=middlewares)
    app.router.add_post("/login", login)
    app.router.add_get("/bench/stats", stats)
    app.router.add_get("/bench/ready", ready)
    return app
