"""The lock scenarios: hand-off to a waiter on another node, uncontended pairs.

Ours and the competitors run side by side, in turns, on the suite's
redis-server: two nodes of ours (``bench.locks_server ours``) and two
processes that hold every installed competitor (``bench.locks_server
others``). The locks are taken and released by server code in those
processes (see :mod:`bench.locks_server`), and timed there.

``lock_handoff``
    Node A's session holds lock L; node B's session waits for it (ours:
    queued in the store; the pollers: their first attempt made). After a
    random delay (the same sequence of delays for every contender, so that
    a poller's phase is random and alike for all) A releases. The figure is
    the time from A's release call to B's call returning with the lock:
    ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for both processes.
    Ours is also timed over the wire (two protocol clients: from client A
    sending ``unlock`` to client B reading its ``lock`` result), for what
    the protocol adds.
``lock_uncontended``
    A loop of take + release of a free lock in one process, each pair
    timed; blocks of pairs, the contenders in turn; the process's CPU per
    pair. Ours again over the wire (``lock`` and ``unlock`` ops from one
    client, one after the other).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .client import TIMEOUT
from .messaging_client import OursWire
from .procs import ServerProcess
from .scenarios import rotated, until
from .summary import summarize

Log = Callable[[str], None]
Result = dict[str, Any]
LOCK_SCENARIOS = ("lock_handoff", "lock_uncontended")
PREFIX = "bench-lock"
MODULE = "bench.locks_server"
COMPETITORS = ("redispy", "redispy_fast", "redis_lock", "aioredlock")
UNCONTENDED_COMPETITORS = ("redispy", "redis_lock", "aioredlock")
"""A poller's ``sleep`` plays no part when the lock is free: redis-py runs once."""
SEED = 13


@dataclass(frozen=True)
class LockSizes:
    """The counts of the lock scenarios; every loop is bounded by them."""

    handoff_rounds: int = 150
    """Kept hand-offs per contender (p50 and p95 over them)."""
    handoff_warmup: int = 5
    delay_min: float = 0.005
    """Seconds the waiter waits at least before the release."""
    delay_spread: float = 0.1
    """Plus a uniform random part: a poller's phase (its ``sleep`` at most)."""
    pair_blocks: int = 12
    pair_block: int = 250
    """Timed take + release pairs per block (CPU is read per block)."""
    pair_warmup: int = 50


LOCKS_FULL = LockSizes()
LOCKS_SMOKE = LockSizes(
    handoff_rounds=3,
    handoff_warmup=1,
    delay_min=0.002,
    delay_spread=0.01,
    pair_blocks=2,
    pair_block=10,
    pair_warmup=2,
)


class LockWire(OursWire):
    """A protocol connection that also notes when each result frame arrived."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]):
        super().__init__(ws, hello)
        self.connection: str = hello["connection"]
        """The connection's id: the lock routes' ``owner`` for ours."""
        self.arrived: dict[int, float] = {}

    async def frame(self, text: str) -> None:
        """Note when a result or error frame came; then handle it."""
        at = time.perf_counter()
        frame = json.loads(text)
        if frame.get("op") in ("result", "error") and isinstance(frame.get("id"), int):
            self.arrived[frame["id"]] = at
        await super().frame(text)

    async def start(self, op: str, **args: Any) -> tuple[int, asyncio.Future[Any]]:
        """Send op ``op``; its id and the future of its result's data."""
        number, future = self.expect()
        await self.ws.send_str(json.dumps({"op": op, "id": number, **args}))
        return number, future

    async def call(self, op: str, **args: Any) -> Any:
        """Send op ``op``; return its result's ``data``; raise on an error frame."""
        number, future = await self.start(op, **args)
        try:
            return await self.wait(future)
        finally:
            self.arrived.pop(number, None)


class LockCluster:
    """Nodes A and B of ours, and of the competitors, on the suite's redis-server."""

    def __init__(self, redis_url: str) -> None:
        self.nodes: dict[str, tuple[ServerProcess, ServerProcess]] = {}
        try:
            for kind in ("ours", "others"):
                prefix = f"{PREFIX}-{kind}"
                self.nodes[kind] = (
                    ServerProcess(kind, redis_url, prefix, module=MODULE),
                    ServerProcess(kind, redis_url, prefix, module=MODULE),
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node."""
        for a, b in self.nodes.values():
            a.stop()
            b.stop()


@dataclass
class Contender:
    """One lock library's two nodes, and its sessions' connection ids (ours)."""

    impl: str
    a: ServerProcess
    b: ServerProcess
    owner_a: str = ""
    owner_b: str = ""


class _Routes:
    """The load client's calls of the lock routes."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def post(
        self, node: ServerProcess, route: str, **query: str | int
    ) -> dict[str, Any]:
        params = {k: str(v) for k, v in query.items()}
        url = f"{node.url}/bench/lock/{route}"
        async with self.http.post(url, params=params) as response:
            if response.status != 200:
                text = await response.text()
                raise RuntimeError(f"{route} on {node.impl}: {response.status} {text}")
            body: dict[str, Any] = await response.json()
            return body

    async def features(self, node: ServerProcess) -> dict[str, Any]:
        async with self.http.get(f"{node.url}/bench/lock/features") as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body


async def run_locks(
    redis_url: str,
    http: aiohttp.ClientSession,
    sizes: LockSizes,
    chosen: Sequence[str],
    log: Log,
    skipped: dict[str, str],
) -> list[Result]:
    """Run the chosen lock scenarios on a fresh cluster of lock nodes."""
    routes = _Routes(http)
    cluster = LockCluster(redis_url)
    wires: list[LockWire] = []
    try:
        ours_a, ours_b = cluster.nodes["ours"]
        others_a, others_b = cluster.nodes["others"]
        ours_missing = (await routes.features(ours_a))["missing"].get("ours")
        if ours_missing:
            for name in chosen:
                skipped[name] = ours_missing
            log(f"skipping the lock scenarios: {ours_missing}")
            return []
        missing: dict[str, str] = (await routes.features(others_a))["missing"]
        for impl, reason in missing.items():
            skipped[f"locks ({impl})"] = reason
            log(f"lock scenarios without {impl}: {reason}")
        for node in (ours_a, ours_b):  # every node reads the same cookie key
            await until(_serves(http, node), "the lock nodes to serve")
        wire_a = await _open_wire(http, ours_a, ours_a)
        wires.append(wire_a)
        wire_b = await _open_wire(http, ours_b, ours_a)
        wires.append(wire_b)
        contenders = [
            Contender("ours", ours_a, ours_b, wire_a.connection, wire_b.connection)
        ]
        contenders += [
            Contender(impl, others_a, others_b)
            for impl in COMPETITORS
            if impl not in missing
        ]
        results: list[Result] = []
        if "lock_handoff" in chosen:
            results += await lock_handoff(
                routes, contenders, (wire_a, wire_b), sizes, log
            )
        if "lock_uncontended" in chosen:
            kept = [
                c
                for c in contenders
                if c.impl == "ours" or c.impl in UNCONTENDED_COMPETITORS
            ]
            results += await lock_uncontended(routes, kept, wire_a, sizes, log)
        return results
    finally:
        for wire in wires:
            await wire.close()
        cluster.stop()


def _serves(http: aiohttp.ClientSession, node: ServerProcess) -> Callable[[], Any]:
    async def check() -> bool:
        async with http.get(f"{node.url}/bench/stats") as response:
            return response.status == 200

    return check


async def _open_wire(
    http: aiohttp.ClientSession, node: ServerProcess, login_at: ServerProcess
) -> LockWire:
    """A new session with one protocol connection on ``node``: it keeps it alive."""
    async with http.post(f"{login_at.url}/login") as response:
        response.raise_for_status()
        cookie = "; ".join(f"{k}={m.value}" for k, m in response.cookies.items())
    wire = await LockWire.open(http, node.url, cookie)
    assert isinstance(wire, LockWire)
    return wire


def _lock_name(impl: str, what: str) -> str:
    return f"{PREFIX}/{impl}/{what}"


async def _handoff_once(
    routes: _Routes, contender: Contender, delay: float
) -> tuple[float, float]:
    """One hand-off from node A to a waiter on node B, and A's release call: ms."""
    c = contender
    name = _lock_name(c.impl, "handoff")
    await routes.post(c.a, "hold", impl=c.impl, name=name, owner=c.owner_a)
    waiting = await routes.post(c.b, "wait", impl=c.impl, name=name, owner=c.owner_b)
    if not waiting["waiting"]:
        raise RuntimeError(f"{c.impl}: the waiter got {name} while A held it")
    await asyncio.sleep(delay)
    released = await routes.post(c.a, "release", impl=c.impl, name=name)
    t0 = float(released["t0"])
    t1 = float((await routes.post(c.b, "waited", impl=c.impl, name=name))["t1"])
    return (t1 - t0) * 1000, (float(released["released"]) - t0) * 1000


async def _wire_handoff_once(
    a: LockWire, b: LockWire, delay: float
) -> tuple[float, float]:
    """A hand-off over the wire: client A's unlock to B's lock result; to A's reply."""
    name = _lock_name("ours", "wire-handoff")
    held = await a.call("lock", name=name)
    number, pending = await b.start("lock", name=name)
    try:

        async def queued() -> bool:
            return bool((await a.call("lock_info", name=name))["waiting"] >= 1)

        await until(queued, "the wire waiter to be queued")
        await asyncio.sleep(delay)
        started = time.perf_counter()
        unlocked = await a.start("unlock", name=name, sequence=held["sequence"])
        granted = await b.wait(pending)
    except BaseException:
        pending.cancel()
        raise
    got = b.arrived.pop(number)
    if not (await a.wait(unlocked[1]))["unlocked"]:
        raise RuntimeError("ours (wire): the unlock was refused")
    replied = a.arrived.pop(unlocked[0])
    if not (await b.call("unlock", name=name, sequence=granted["sequence"]))[
        "unlocked"
    ]:
        raise RuntimeError("ours (wire): the waiter's unlock was refused")
    return (got - started) * 1000, (replied - started) * 1000


async def lock_handoff(
    routes: _Routes,
    contenders: Sequence[Contender],
    wires: tuple[LockWire, LockWire],
    sizes: LockSizes,
    log: Log,
) -> list[Result]:
    """Hand-offs to a waiter on another node, every contender in turn."""
    rng = random.Random(SEED)
    delays = [
        sizes.delay_min + rng.random() * sizes.delay_spread
        for _ in range(sizes.handoff_rounds)
    ]
    impls = [c.impl for c in contenders] + ["ours (wire)"]
    log(
        f"lock hand-off: {len(impls)} contenders ({', '.join(impls)}), "
        f"{sizes.handoff_rounds} rounds"
    )
    wire_a, wire_b = wires

    async def once(impl: str, delay: float) -> tuple[float, float]:
        if impl == "ours (wire)":
            return await _wire_handoff_once(wire_a, wire_b, delay)
        contender = next(c for c in contenders if c.impl == impl)
        return await _handoff_once(routes, contender, delay)

    for impl in impls:
        for index in range(sizes.handoff_warmup):
            await once(impl, delays[index % len(delays)])
    latencies: dict[str, list[float]] = {impl: [] for impl in impls}
    releases: dict[str, list[float]] = {impl: [] for impl in impls}
    for rep, delay in enumerate(delays):
        for impl in rotated(impls, rep):
            latency, release = await once(impl, delay)
            latencies[impl].append(latency)
            releases[impl].append(release)
    return [
        {
            "scenario": "lock_handoff",
            "impl": "ours" if impl == "ours (wire)" else impl,
            "via": "wire" if impl == "ours (wire)" else "server",
            "latency_ms": summarize(latencies[impl]),
            "release_ms": summarize(releases[impl]),
            "delay_ms": [sizes.delay_min * 1000, sizes.delay_spread * 1000],
        }
        for impl in impls
    ]


async def _wire_pairs(wire: LockWire, rounds: int) -> list[float]:
    name = _lock_name("ours", "wire-pairs")
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        held = await wire.call("lock", name=name)
        if not (await wire.call("unlock", name=name, sequence=held["sequence"]))[
            "unlocked"
        ]:
            raise RuntimeError("ours (wire): the unlock was refused")
        spent.append(time.perf_counter() - started)
    return spent


async def lock_uncontended(
    routes: _Routes,
    contenders: Sequence[Contender],
    wire: LockWire,
    sizes: LockSizes,
    log: Log,
) -> list[Result]:
    """Blocks of take + release of a free lock, every contender in turn."""
    impls = [c.impl for c in contenders] + ["ours (wire)"]
    log(
        f"lock uncontended: {len(impls)} contenders, "
        f"{sizes.pair_blocks} x {sizes.pair_block} pairs"
    )
    by_impl = {c.impl: c for c in contenders}

    async def block(impl: str, rounds: int) -> tuple[list[float], float | None]:
        if impl == "ours (wire)":
            return await _wire_pairs(wire, rounds), None
        c = by_impl[impl]
        name = _lock_name(impl, "pairs")
        reply = await routes.post(
            c.a, "loop", impl=impl, name=name, owner=c.owner_a, n=rounds
        )
        return [float(s) for s in reply["seconds"]], float(reply["cpu"])

    for impl in impls:
        await block(impl, sizes.pair_warmup)
    pairs: dict[str, list[float]] = {impl: [] for impl in impls}
    rates: dict[str, list[float]] = {impl: [] for impl in impls}
    cpu: dict[str, list[float]] = {impl: [] for impl in impls}
    for rep in range(sizes.pair_blocks):
        for impl in rotated(impls, rep):
            seconds, spent = await asyncio.wait_for(
                block(impl, sizes.pair_block), TIMEOUT
            )
            pairs[impl] += [s * 1e6 for s in seconds]
            rates[impl].append(len(seconds) / sum(seconds))
            if spent is not None:
                cpu[impl].append(spent * 1e6 / len(seconds))
    results: list[Result] = []
    for impl in impls:
        result: Result = {
            "scenario": "lock_uncontended",
            "impl": "ours" if impl == "ours (wire)" else impl,
            "via": "wire" if impl == "ours (wire)" else "server",
            "pair_us": summarize(pairs[impl]),
            "pairs_per_s": summarize(rates[impl]),
        }
        if cpu[impl]:
            result["cpu_us_per_pair"] = summarize(cpu[impl])
        results.append(result)
    return results
