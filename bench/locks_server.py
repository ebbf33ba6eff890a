"""The servers of the lock scenarios: ours and the competitors, one node each.

``python -m bench.locks_server KIND REDIS_URL PREFIX`` serves on a free
127.0.0.1 port and prints ``READY <port>``, as ``bench.server`` does
(``procs.ServerProcess(..., module="bench.locks_server")``). KIND is
``ours`` (a ``RedisSessionWSRegistry`` node with its protocol endpoint at
``/live``, whose connections keep the benchmark's sessions alive) or
``others`` (every competitor that is installed, side by side in one
process, idle but for the one being measured).

Each contender takes and releases locks *in this process*, with the
library's own calls, and the figures are taken here with ``perf_counter``
(``CLOCK_MONOTONIC``: one clock for every process of the machine), so that
neither HTTP nor websocket hops are in them:

- ``POST /bench/lock/hold``: take lock ``name`` and keep it;
- ``POST /bench/lock/wait``: start a waiter for ``name`` in a task; it notes
  the moment its call returned with the lock, and keeps it. The reply comes
  once the waiter waits (ours: the store counts it in the queue; the others
  have no queue: once its task has made its first attempt);
- ``POST /bench/lock/release``: release the held lock; the reply carries the
  moment just before the release was sent (``t0``) and the one when the
  release call returned;
- ``POST /bench/lock/waited``: wait (bounded) for the waiter, release its
  lock (untimed), and reply with the moment it got the lock (``t1``);
- ``POST /bench/lock/loop``: ``n`` rounds of take + release of a free lock,
  each timed, and the process's CPU time around them.

The hand-off latency is ``t1 - t0``: from node A's release call to node B's
call returning with the lock.

Contenders (``impl``):

- ``ours``: ``registry.locks.lock(session_ws_id, name)`` and
  ``SessionLock.unlock()``; the session is that of the protocol connection
  ``connection`` (an id from its ``hello``).
- ``redispy`` / ``redispy_fast``: ``redis.asyncio.lock.Lock`` with its
  default ``sleep=0.1`` / with ``sleep=0.01``: a waiter polls ``SET NX``.
- ``redis_lock``: python-redis-lock's ``redis_lock.Lock`` (synchronous: its
  calls run in a worker thread, and the moments are taken in that thread).
  A waiter blocks in ``BLPOP`` on a signal list that the release pushes to.
- ``aioredlock``: ``aioredlock.Aioredlock`` on this one redis-server; a
  waiter retries ``retry_count`` times with a random delay of 0.1 to 0.3 s
  (its defaults). Its default ``retry_count`` (3) gives up within about a
  second, so the waiter's manager gets enough retries to cover the wait's
  bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .server import serve_app, use_library_copy
from .server_common import PROBE, Probe, base_app

LIVE_PATH = "/live"
WAIT_BOUND = 30.0
"""Seconds any waiter or queue check waits at most."""
QUEUED_POLL = 0.0005
COMPETITORS = ("redispy", "redispy_fast", "redis_lock", "aioredlock")
LABELS = {
    "ours": "ours",
    "redispy": "redis-py Lock (sleep 0.1)",
    "redispy_fast": "redis-py Lock (sleep 0.01)",
    "redis_lock": "python-redis-lock",
    "aioredlock": "aioredlock",
}
MODULES = {"redis_lock": "redis_lock", "aioredlock": "aioredlock"}
"""The competitors' packages that may be missing (redis-py is always there)."""
AIOREDLOCK_DELAY_MIN = 0.1
"""aioredlock's default ``retry_delay_min``, which bounds its retries' sum."""


class Contender:
    """One lock library on this node: take, release, and a timed loop.

    Subclasses override :meth:`acquire` and :meth:`release` (their
    docstrings hold for the overrides).
    """

    async def acquire(self, name: str, owner: str) -> tuple[Any, float]:
        """Take ``name`` (waiting); the handle and the moment it was held."""
        raise NotImplementedError

    async def release(self, handle: Any) -> tuple[float, float]:
        """Release; the moments just before the release was sent, and after it."""
        raise NotImplementedError

    async def waiting(self, name: str, count: int) -> bool:
        """Whether ``count`` waiters are queued for ``name`` (if it can tell)."""
        return True

    async def loop(self, name: str, owner: str, rounds: int) -> list[float]:
        """``rounds`` take + release of a free lock: seconds each."""
        spent = []
        for _ in range(rounds):
            started = time.perf_counter()
            handle, _ = await self.acquire(name, owner)
            await self.release(handle)
            spent.append(time.perf_counter() - started)
        return spent

    async def close(self) -> None:
        """Let go of connections."""


class Ours(Contender):
    """``registry.locks`` of this node."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.locks = registry.locks

    def session_of(self, connection: str) -> Any:
        """The session ws id of the connection ``connection`` of this node."""
        for record in self.registry.connections():
            if record.connection_id == connection:
                return record.session_ws_id
        raise web.HTTPBadRequest(text=f"no connection {connection!r} on this node")

    async def acquire(self, name: str, owner: str) -> tuple[Any, float]:
        """See :meth:`Contender.acquire`."""
        lock = await self.locks.lock(self.session_of(owner), name, timeout=WAIT_BOUND)
        return lock, time.perf_counter()

    async def release(self, handle: Any) -> tuple[float, float]:
        """See :meth:`Contender.release`."""
        started = time.perf_counter()
        if not await handle.unlock():
            raise RuntimeError(f"ours: {handle!r} was not held at its release")
        return started, time.perf_counter()

    async def waiting(self, name: str, count: int) -> bool:
        """See :meth:`Contender.waiting`."""
        return bool((await self.locks.info(name)).waiting >= count)

    async def loop(self, name: str, owner: str, rounds: int) -> list[float]:
        """See :meth:`Contender.loop`."""
        session = self.session_of(owner)
        lock_ = self.locks.lock
        spent = []
        for _ in range(rounds):
            started = time.perf_counter()
            lock = await lock_(session, name)
            await lock.unlock()
            spent.append(time.perf_counter() - started)
        return spent


class RedisPy(Contender):
    """``redis.asyncio.lock.Lock``: a waiter polls every ``sleep`` seconds."""

    def __init__(self, redis_url: str, sleep: float) -> None:
        import redis.asyncio as redis
        from redis.asyncio.lock import Lock

        self.client = redis.Redis.from_url(redis_url)
        self.sleep = sleep
        self.lock_class = Lock

    async def acquire(self, name: str, owner: str) -> tuple[Any, float]:
        """See :meth:`Contender.acquire`."""
        lock = self.lock_class(
            self.client, name, sleep=self.sleep, blocking_timeout=WAIT_BOUND
        )
        if not await lock.acquire():
            raise RuntimeError(f"redis-py: {name} not acquired in {WAIT_BOUND} s")
        return lock, time.perf_counter()

    async def release(self, handle: Any) -> tuple[float, float]:
        """See :meth:`Contender.release`."""
        started = time.perf_counter()
        await handle.release()
        return started, time.perf_counter()

    async def close(self) -> None:
        """See :meth:`Contender.close`."""
        await self.client.aclose()


class RedisLock(Contender):
    """python-redis-lock, synchronous: every call in a worker thread."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.module: Any = importlib.import_module("redis_lock")
        self.client = redis.Redis.from_url(redis_url)

    def _acquire(self, name: str) -> tuple[Any, float]:
        lock = self.module.Lock(self.client, name)
        if not lock.acquire(blocking=True, timeout=int(WAIT_BOUND)):
            raise RuntimeError(f"redis_lock: {name} not acquired in {WAIT_BOUND} s")
        return lock, time.perf_counter()

    @staticmethod
    def _release(handle: Any) -> tuple[float, float]:
        started = time.perf_counter()
        handle.release()
        return started, time.perf_counter()

    async def acquire(self, name: str, owner: str) -> tuple[Any, float]:
        """See :meth:`Contender.acquire`."""
        return await asyncio.to_thread(self._acquire, name)

    async def release(self, handle: Any) -> tuple[float, float]:
        """See :meth:`Contender.release`."""
        return await asyncio.to_thread(self._release, handle)

    def _loop(self, name: str, rounds: int) -> list[float]:
        spent = []
        for _ in range(rounds):
            started = time.perf_counter()
            handle, _ = self._acquire(name)
            handle.release()
            spent.append(time.perf_counter() - started)
        return spent

    async def loop(self, name: str, owner: str, rounds: int) -> list[float]:
        """The whole loop in one thread, as a synchronous program runs it."""
        return await asyncio.to_thread(self._loop, name, rounds)

    async def close(self) -> None:
        """See :meth:`Contender.close`."""
        self.client.close()


class AioRedlock(Contender):
    """aioredlock on one redis-server; a waiter retries with random delays."""

    def __init__(self, redis_url: str) -> None:
        module: Any = importlib.import_module("aioredlock")
        retries = math.ceil(WAIT_BOUND / AIOREDLOCK_DELAY_MIN) + 1
        self.manager = module.Aioredlock([redis_url], retry_count=retries)
        self.error: type[Exception] = module.LockError

    async def acquire(self, name: str, owner: str) -> tuple[Any, float]:
        """See :meth:`Contender.acquire`."""
        lock = await self.manager.lock(name)  # no lease given: its watchdog extends
        return lock, time.perf_counter()

    async def release(self, handle: Any) -> tuple[float, float]:
        """See :meth:`Contender.release`."""
        started = time.perf_counter()
        await self.manager.unlock(handle)
        return started, time.perf_counter()

    async def close(self) -> None:
        """See :meth:`Contender.close`."""
        await self.manager.destroy()


def missing_competitors() -> dict[str, str]:
    """The competitors that cannot be imported here, and why."""
    missing = {}
    for impl, module in MODULES.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a package broken on this Python
            missing[impl] = f"{module} does not import: {type(exc).__name__}: {exc}"
    return missing


def make_competitors(redis_url: str) -> dict[str, Contender]:
    """Every competitor that imports here."""
    missing = missing_competitors()
    makers: dict[str, Callable[[], Contender]] = {
        "redispy": lambda: RedisPy(redis_url, 0.1),
        "redispy_fast": lambda: RedisPy(redis_url, 0.01),
        "redis_lock": lambda: RedisLock(redis_url),
        "aioredlock": lambda: AioRedlock(redis_url),
    }
    return {impl: make() for impl, make in makers.items() if impl not in missing}


CONTENDERS = web.AppKey[dict[str, Contender]]("lock_contenders")
MISSING = web.AppKey[dict[str, str]]("lock_missing")


class _Node:
    """What this node holds and waits for, by contender and name."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], Any] = {}
        self.waiters: dict[tuple[str, str], asyncio.Task[tuple[Any, float]]] = {}


NODE = web.AppKey[_Node]("lock_node")


def _args(request: web.Request) -> tuple[Contender, str, str, tuple[str, str]]:
    impl = request.query["impl"]
    contender = request.app[CONTENDERS].get(impl)
    if contender is None:
        raise web.HTTPNotFound(text=f"no contender {impl!r} on this node")
    name = request.query["name"]
    return contender, name, request.query.get("owner", ""), (impl, name)


async def hold(request: web.Request) -> web.Response:
    """Take the lock and keep it."""
    contender, name, owner, key = _args(request)
    node = request.app[NODE]
    if key in node.held:
        raise web.HTTPConflict(text=f"{key} is held here already")
    node.held[key], _ = await asyncio.wait_for(
        contender.acquire(name, owner), WAIT_BOUND
    )
    return web.json_response({"held": True})


async def wait(request: web.Request) -> web.Response:
    """Start a waiter; reply once it waits."""
    contender, name, owner, key = _args(request)
    node = request.app[NODE]
    if key in node.waiters:
        raise web.HTTPConflict(text=f"{key} has a waiter here already")
    task = asyncio.ensure_future(
        asyncio.wait_for(contender.acquire(name, owner), WAIT_BOUND)
    )
    node.waiters[key] = task
    deadline = time.monotonic() + WAIT_BOUND
    while not await contender.waiting(name, 1):
        if task.done() or time.monotonic() > deadline:
            break
        await asyncio.sleep(QUEUED_POLL)
    await asyncio.sleep(0)  # the others: their first attempt is under way
    return web.json_response({"waiting": not task.done()})


async def release(request: web.Request) -> web.Response:
    """Release the held lock; reply with the moment before the release."""
    contender, _, _, key = _args(request)
    handle = request.app[NODE].held.pop(key)
    started, ended = await contender.release(handle)
    return web.json_response({"t0": started, "released": ended})


async def waited(request: web.Request) -> web.Response:
    """The moment the waiter got the lock; its lock is released (untimed)."""
    contender, _, _, key = _args(request)
    task = request.app[NODE].waiters.pop(key)
    handle, got = await asyncio.wait_for(task, WAIT_BOUND)
    await contender.release(handle)
    return web.json_response({"t1": got})


async def loop(request: web.Request) -> web.Response:
    """``n`` timed rounds of take + release of a free lock, and the CPU time."""
    contender, name, owner, _ = _args(request)
    rounds = int(request.query["n"])
    if not 1 <= rounds <= 100_000:
        raise web.HTTPBadRequest(text="n must be 1 to 100000")
    cpu = time.process_time()
    spent = await contender.loop(name, owner, rounds)
    cpu = time.process_time() - cpu
    return web.json_response({"seconds": spent, "cpu": cpu})


async def features(request: web.Request) -> web.Response:
    """The contenders of this node, and the competitors that are missing."""
    return web.json_response(
        {
            "contenders": sorted(request.app[CONTENDERS].keys()),
            "missing": request.app[MISSING],
        }
    )


def _routes(app: web.Application) -> None:
    app[NODE] = _Node()
    app.router.add_post("/bench/lock/hold", hold)
    app.router.add_post("/bench/lock/wait", wait)
    app.router.add_post("/bench/lock/release", release)
    app.router.add_post("/bench/lock/waited", waited)
    app.router.add_post("/bench/lock/loop", loop)
    app.router.add_get("/bench/lock/features", features)

    async def closing(app: web.Application) -> AsyncIterator[None]:
        yield
        node = app[NODE]
        for task in node.waiters.values():
            task.cancel()
        for contender in app[CONTENDERS].values():
            with contextlib.suppress(Exception):
                await contender.close()

    app.cleanup_ctx.append(closing)


def _allow_all(request: web.Request, action: object) -> bool:
    return True


def build_ours(redis_url: str, prefix: str) -> web.Application:
    """One node of ours: the protocol endpoint (keeps sessions alive), lock routes."""
    # imported here, after use_library_copy() (``--lib``)
    from aiohttp_session_ws import (
        ProtocolLimits,
        RedisSessionWSRegistry,
        session_ws_endpoint,
        session_ws_middleware,
        setup,
    )

    # the per-connection rate limit is sized for a browser tab, not for a
    # load client that takes and releases locks back to back
    limits = ProtocolLimits(
        rate=1_000_000.0, burst=1_000_000, rate_close_after=1_000_000
    )
    registry = RedisSessionWSRegistry(
        redis_url, prefix=prefix, limits=limits, authorize=_allow_all
    )
    app = base_app([session_ws_middleware])
    setup(app, registry)
    app.router.add_get(LIVE_PATH, session_ws_endpoint)
    contenders: dict[str, Contender] = {}
    missing: dict[str, str] = {}
    if getattr(registry, "locks", None) is None:
        missing["ours"] = "SessionWSRegistry has no locks service yet"
    else:
        contenders["ours"] = Ours(registry)
    app[CONTENDERS] = contenders
    app[MISSING] = missing
    _routes(app)
    app[PROBE] = Probe(
        sockets=lambda: len(registry.connections()), sessions=lambda: len(registry)
    )
    return app


def build_others(redis_url: str, prefix: str) -> web.Application:
    """One node of every competitor that imports."""
    app = base_app()
    contenders: dict[str, Contender] = make_competitors(redis_url)
    missing: dict[str, str] = missing_competitors()
    app[CONTENDERS] = contenders
    app[MISSING] = missing
    _routes(app)
    app[PROBE] = Probe(sockets=lambda: 0, sessions=lambda: 0)
    return app


BUILDERS = {"ours": build_ours, "others": build_others}


async def serve(kind: str, redis_url: str, prefix: str) -> None:
    """Serve until a termination signal arrives."""
    await serve_app(BUILDERS[kind](redis_url, prefix))


if __name__ == "__main__":
    use_library_copy()
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
