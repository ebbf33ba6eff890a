"""The messaging scenarios: request round trips, and a filter send to many sessions.

Both run ours, the raw floor and python-socketio side by side, on their own
two-node clusters (``bench.messaging_server``) on the suite's redis-server.

``messaging_rtt``
    Client A (on node A) sends a request that client B echoes, B on node A
    (same node) or on node B (cross-node): A -> server -> B -> server -> A.
    Ours: ``send_to_path`` and ``send_to_session``, from the package's Python
    client (``session.messaging``, B a Python client too) and from a client
    that speaks the wire protocol directly (so that the Python client's own
    cost shows apart). The floor: ``/relay`` (the same hops, by connection
    address, through Redis for another node) and ``/echo`` (one hop, a JSON
    echo). python-socketio: an event with an ack that the server answers with
    ``await sio.call(...)`` to B's sid. And a Redis pub/sub round trip
    through another process, in the same repetitions. Each repetition runs a
    block of sequential requests per variant, in an order that rotates; the
    CPU of both server processes of the variant is read around each block.
``messaging_filter``
    N sessions, half on each node, each with one connection and an addressed
    handler (ours: the wire protocol; ``team=x`` set on every session); a
    sender on node A. Ours: ``send_to_filter``. The floor: one ``fan`` to
    every joined connection, answers relayed back one by one. Socket.IO: an
    emit to a room through the manager, answers as events to the sender's
    sid. The time runs from the send to the last answer (and, for ours, to
    the ``done`` frame); CPU is both nodes' per answer.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .client import TIMEOUT, LoadClient
from .messaging_client import (
    FanRound,
    MissingClientError,
    OursPython,
    OursWire,
    RawEcho,
    RawRelay,
    SocketIOClient,
    WireError,
)
from .procs import ServerProcess
from .scenarios import _PubSubProbe, rotated, until
from .summary import summarize

Log = Callable[[str], None]
Result = dict[str, Any]
MESSAGING_SCENARIOS = ("messaging_rtt", "messaging_filter")
PREFIX = "bench-msg-"
MODULE = "bench.messaging_server"
FILTER = "team eq 'x'"
"""The filter of ours: every session with the user property ``team`` = ``x``."""
FAN_PATH = "bench/fan"
PAYLOAD: dict[str, Any] = {"n": 0, "text": "x" * 32}
READ_COST_SAMPLES = 9


@dataclass(frozen=True)
class MessagingSizes:
    """The counts of the messaging scenarios; every loop is bounded by them."""

    rtt_reps: int = 12
    rtt_block: int = 50
    """Sequential requests per variant and repetition (CPU is read per block)."""
    rtt_warmup: int = 20
    filter_sessions: int = 1000
    """Sessions of the filter send, half on each node."""
    filter_rounds: int = 15
    filter_warmup: int = 2
    open_concurrency: int = 50


MESSAGING_FULL = MessagingSizes()
MESSAGING_SMOKE = MessagingSizes(
    rtt_reps=2,
    rtt_block=3,
    rtt_warmup=2,
    filter_sessions=6,
    filter_rounds=2,
    filter_warmup=1,
    open_concurrency=6,
)


class MessagingCluster:
    """Nodes A and B of each implementation on the suite's redis-server."""

    def __init__(self, redis_url: str, impls: Sequence[str]) -> None:
        self.redis_url = redis_url
        self.nodes: dict[str, tuple[ServerProcess, ServerProcess]] = {}
        try:
            for impl in impls:
                prefix = f"{PREFIX}{impl}"
                self.nodes[impl] = (
                    ServerProcess(impl, redis_url, prefix, module=MODULE),
                    ServerProcess(impl, redis_url, prefix, module=MODULE),
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node."""
        for a, b in self.nodes.values():
            a.stop()
            b.stop()


async def messaging_missing(
    cluster: MessagingCluster, http: aiohttp.ClientSession
) -> str:
    """Why our server cannot serve messaging; '' when it can."""
    node = cluster.nodes["ours"][0]
    reply = await LoadClient(http, "ours", node.url).get("/bench/msg/features")
    return str(reply["missing"])


async def cpu_of(http: aiohttp.ClientSession, nodes: Sequence[ServerProcess]) -> float:
    """The summed ``process_time()`` of the nodes."""
    total = 0.0
    for node in nodes:
        async with http.get(f"{node.url}/bench/stats") as response:
            response.raise_for_status()
            total += float((await response.json())["cpu"])
    return total


async def read_cost(
    http: aiohttp.ClientSession, nodes: Sequence[ServerProcess]
) -> float:
    """The nodes' CPU seconds that two reads of :func:`cpu_of` in a row cost."""
    deltas = []
    for _ in range(READ_COST_SAMPLES):
        before = await cpu_of(http, nodes)
        deltas.append(await cpu_of(http, nodes) - before)
    return statistics.median(deltas)


async def login(http: aiohttp.ClientSession, node: ServerProcess) -> str:
    """A new session on the cluster (every node reads the cookie)."""
    return (await LoadClient(http, "ours", node.url).login())[1]


@dataclass
class Variant:
    """One way of making a round trip, and the nodes whose CPU it costs."""

    impl: str
    where: str
    via: str
    once: Callable[[Any], Awaitable[Any]]
    """Sends the data, returns the echo."""
    nodes: tuple[ServerProcess, ...]


async def run_messaging(
    redis_url: str,
    http: aiohttp.ClientSession,
    sizes: MessagingSizes,
    impls: Sequence[str],
    chosen: Sequence[str],
    log: Log,
    skipped: dict[str, str],
) -> list[Result]:
    """Run the chosen messaging scenarios on fresh two-node clusters."""
    results: list[Result] = []
    cluster = MessagingCluster(redis_url, impls)
    try:
        if "ours" in cluster.nodes:
            missing = await messaging_missing(cluster, http)
            if missing:
                for name in chosen:
                    skipped[name] = missing
                log(f"skipping the messaging scenarios: {missing}")
                return []
        await _wait_socketio_listening(cluster)
        if "messaging_rtt" in chosen:
            results += await messaging_rtt(cluster, http, sizes, log, skipped)
        if "messaging_filter" in chosen:
            results += await messaging_filter(cluster, http, sizes, log)
    finally:
        cluster.stop()
    return results


async def _wait_socketio_listening(cluster: MessagingCluster) -> None:
    """python-socketio's manager listens from a node's first connection on."""
    if "socketio" not in cluster.nodes:
        return
    import redis.asyncio as redis

    for node in cluster.nodes["socketio"]:
        async with aiohttp.ClientSession() as http:
            client = await SocketIOClient.open(http, node.url)
            await client.close()
    listeners = redis.Redis.from_url(cluster.redis_url)
    channel = f"{PREFIX}socketio:socketio"

    async def both_listen() -> bool:
        numsub = await listeners.pubsub_numsub(channel)
        return bool(numsub[0][1] == 2)

    try:
        await until(both_listen, "python-socketio nodes to listen")
    finally:
        await listeners.aclose()


def _checked(expected: Any) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value != expected:
            raise RuntimeError(f"the echo came back as {value!r:.80}")

    return check


async def messaging_rtt(
    cluster: MessagingCluster,
    http: aiohttp.ClientSession,
    sizes: MessagingSizes,
    log: Log,
    skipped: dict[str, str],
) -> list[Result]:
    """Request round trips, same node and cross-node, every variant in turn."""
    closers: list[Callable[[], Awaitable[None]]] = []
    variants: list[Variant] = []
    probe: _PubSubProbe | None = None
    check = _checked(PAYLOAD)
    try:
        for impl, (a, b) in cluster.nodes.items():
            both = (a, b)
            if impl == "ours":
                variants += await _ours_variants(http, a, b, closers, skipped, log)
            elif impl == "raw":
                sender = await RawRelay.open(http, a.url)
                closers.append(sender.close)
                for where, node in (("same-node", a), ("cross-node", b)):
                    target = await RawRelay.open(http, node.url)
                    closers.append(target.close)
                    variants.append(
                        Variant(
                            impl,
                            where,
                            "relay",
                            _bind(sender.request, target.address),
                            both,
                        )
                    )
                echo = await RawEcho.open(http, a.url)
                closers.append(echo.close)
                variants.append(
                    Variant(impl, "same-node", "echo (one hop)", echo.request, both)
                )
            elif impl == "socketio":
                sio_sender = await SocketIOClient.open(http, a.url)
                closers.append(sio_sender.close)
                for where, node in (("same-node", a), ("cross-node", b)):
                    sio_target = await SocketIOClient.open(http, node.url)
                    closers.append(sio_target.close)
                    call = _sio_call(sio_sender, sio_target.sid)
                    variants.append(Variant(impl, where, "call", call, both))
        probe = await _PubSubProbe.start(cluster.redis_url)
        pubsub = probe

        async def pubsub_once(data: Any) -> Any:
            await pubsub.there()
            return data

        variants.append(Variant("redis", "cross-node", "pub/sub", pubsub_once, ()))
        log(
            f"messaging round trips: {len(variants)} variants, "
            f"{sizes.rtt_reps} x {sizes.rtt_block} requests"
        )
        for variant in variants:  # warm-up, and a check that each echoes
            for _ in range(sizes.rtt_warmup):
                check(await variant.once(PAYLOAD))
        costs: dict[tuple[ServerProcess, ...], float] = {}
        for variant in variants:  # what reading the CPU costs the nodes
            if variant.nodes and variant.nodes not in costs:
                costs[variant.nodes] = await read_cost(http, variant.nodes)
        latencies: dict[int, list[float]] = {i: [] for i in range(len(variants))}
        cpu: dict[int, list[float]] = {i: [] for i in range(len(variants))}
        indices = list(range(len(variants)))
        for rep in range(sizes.rtt_reps):
            for index in rotated(indices, rep):
                variant = variants[index]
                before = await cpu_of(http, variant.nodes)
                for _ in range(sizes.rtt_block):
                    started = time.perf_counter()
                    value = await variant.once(PAYLOAD)
                    latencies[index].append((time.perf_counter() - started) * 1000)
                    check(value)
                if variant.nodes:
                    spent = await cpu_of(http, variant.nodes) - before
                    spent -= costs[variant.nodes]
                    cpu[index].append(spent * 1e6 / sizes.rtt_block)
    finally:
        if probe is not None:
            await probe.stop()
        for close in reversed(closers):
            await close()
    results: list[Result] = []
    for index, variant in enumerate(variants):
        result: Result = {
            "scenario": "messaging_rtt",
            "impl": variant.impl,
            "where": variant.where,
            "via": variant.via,
            "latency_ms": summarize(latencies[index]),
        }
        if cpu[index]:
            result["cpu_us_per_request"] = summarize(cpu[index])
            result["cpu_read_cost_us"] = costs[variant.nodes] * 1e6
        results.append(result)
    return results


def _sio_call(sender: SocketIOClient, sid: str) -> Callable[[Any], Awaitable[Any]]:
    async def once(data: Any) -> Any:
        return await sender.emit_ack("req", {"to": sid, "data": data})

    return once


def _bind(
    method: Callable[[str, Any], Awaitable[Any]], to: str
) -> Callable[[Any], Awaitable[Any]]:
    async def once(data: Any) -> Any:
        return await method(to, data)

    return once


async def _ours_variants(
    http: aiohttp.ClientSession,
    a: ServerProcess,
    b: ServerProcess,
    closers: list[Callable[[], Awaitable[None]]],
    skipped: dict[str, str],
    log: Log,
) -> list[Variant]:
    """Ours: to_path and to_session, same and cross node, both clients."""
    variants: list[Variant] = []
    both = (a, b)
    for kind in ("Python client", "wire"):
        opener = OursPython.open if kind == "Python client" else OursWire.open
        try:
            sender = await opener(http, a.url, await login(http, a))
        except MissingClientError as exc:
            skipped["messaging_rtt (Python client)"] = str(exc)
            log(f"messaging round trips: no Python-client variants: {exc}")
            continue
        closers.append(sender.close)
        for where, node in (("same-node", a), ("cross-node", b)):
            target = await opener(http, node.url, await login(http, a))
            closers.append(target.close)
            path = f"bench/{'py' if kind == 'Python client' else 'wire'}/{where}"
            if isinstance(target, OursWire):
                await target.add_handler(path, addressed=False)
                await target.add_handler(path, addressed=True)
            else:
                await target.add_handlers(path)

            async def to_path(data: Any, s: Any = sender, p: str = path) -> Any:
                return await s.send_to_path(p, data)

            async def to_session(
                data: Any, s: Any = sender, p: str = path, h: str = target.handle
            ) -> Any:
                return await s.send_to_session(p, h, data)

            variants.append(Variant("ours", where, f"to_path, {kind}", to_path, both))
            variants.append(
                Variant("ours", where, f"to_session, {kind}", to_session, both)
            )
    return variants


# the filter send


Responder = OursWire | RawRelay | SocketIOClient


class _Fan:
    """One implementation's responders, its sender, and one round at a time."""

    def __init__(
        self,
        impl: str,
        nodes: tuple[ServerProcess, ServerProcess],
        sender: Responder,
        responders: list[Responder],
    ) -> None:
        self.impl = impl
        self.nodes = nodes
        self.sender = sender
        self.responders = responders
        self.latencies: list[float] = []
        self.done: list[float] = []
        self.cpu: list[float] = []
        self.errors = 0
        self.unanswered = 0
        self.expected_seen: set[int] = set()

    async def round(self, http: aiohttp.ClientSession, keep: bool) -> None:
        """One send; with ``keep``, its figures are kept."""
        sessions = len(self.responders)
        before = await cpu_of(http, self.nodes)
        started = time.perf_counter()
        sender = self.sender
        fan: FanRound
        if isinstance(sender, OursWire):
            fan = await sender.send_to_filter(FILTER, FAN_PATH, PAYLOAD)
        else:
            fan = await sender.fan(sessions, PAYLOAD)
        try:
            await asyncio.wait_for(fan.complete.wait(), TIMEOUT)
        finally:
            sender.forget(fan)
        spent = await cpu_of(http, self.nodes) - before
        if not keep:
            return
        self.expected_seen.add(fan.expected)
        self.errors += len(fan.errors)
        self.unanswered += len(fan.unanswered)
        self.latencies.append((fan.last_at - started) * 1000)
        self.done.append((fan.done_at - started) * 1000)
        self.cpu.append(spent * 1e6 / max(1, fan.received))

    def result(self) -> Result:
        result: Result = {
            "scenario": "messaging_filter",
            "impl": self.impl,
            "sessions": len(self.responders),
            "latency_ms": summarize(self.latencies),
            "done_ms": summarize(self.done),
            "cpu_us_per_response": summarize(self.cpu),
            "errors": self.errors,
            "unanswered": self.unanswered,
            "expected": sorted(self.expected_seen),
            "client_failures": sum(
                len(c.failures) for c in [*self.responders, self.sender]
            ),
        }
        return result

    async def close(self, limit: int) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(client: Responder) -> None:
            async with gate:
                await client.close()

        await asyncio.gather(*(one(c) for c in [*self.responders, self.sender]))


async def _open_fan(
    impl: str,
    http: aiohttp.ClientSession,
    nodes: tuple[ServerProcess, ServerProcess],
    sizes: MessagingSizes,
) -> _Fan:
    a, b = nodes
    gate = asyncio.Semaphore(sizes.open_concurrency)
    half = sizes.filter_sessions // 2
    homes = [a] * (sizes.filter_sessions - half) + [b] * half

    async def one(node: ServerProcess) -> Responder:
        async with gate:
            if impl == "ours":
                ours = await OursWire.open(http, node.url, await login(http, a))
                await ours.add_handler(FAN_PATH, addressed=True)
                return ours
            if impl == "raw":
                raw = await RawRelay.open(http, node.url)
                await raw.join()
                return raw
            sio = await SocketIOClient.open(http, node.url)
            if not await sio.emit_ack("join", {}):
                raise RuntimeError("python-socketio did not join the room")
            return sio

    responders = list(await asyncio.gather(*(one(node) for node in homes)))
    if impl == "ours":
        tagged = 0
        for node in nodes:
            reply = await LoadClient(http, impl, node.url).post("/bench/msg/tag")
            tagged += int(reply["tagged"])
        if tagged != sizes.filter_sessions:
            raise RuntimeError(f"ours tagged {tagged} of {sizes.filter_sessions}")
        sender: Responder = await OursWire.open(http, a.url, await login(http, a))
    elif impl == "raw":
        sender = await RawRelay.open(http, a.url)
    else:
        sender = await SocketIOClient.open(http, a.url)

    async def all_connected() -> bool:
        counts = [
            (await LoadClient(http, impl, node.url).get("/bench/stats"))["sockets"]
            for node in nodes
        ]
        return bool(sum(counts) == sizes.filter_sessions + 1)

    await until(all_connected, f"{impl} to hold the filter's connections")
    return _Fan(impl, nodes, sender, responders)


async def messaging_filter(
    cluster: MessagingCluster,
    http: aiohttp.ClientSession,
    sizes: MessagingSizes,
    log: Log,
) -> list[Result]:
    """A send to N sessions on two nodes: time to the last answer."""
    log(
        f"messaging filter send: {sizes.filter_sessions} sessions on 2 nodes, "
        f"{sizes.filter_rounds} rounds"
    )
    fans: list[_Fan] = []
    try:
        for impl, nodes in cluster.nodes.items():
            fans.append(await _open_fan(impl, http, nodes, sizes))
        for fan in fans:
            for _ in range(sizes.filter_warmup):
                await fan.round(http, keep=False)
        gc.collect()
        gc.freeze()  # thousands of client sockets: keep full collections out
        try:
            for rep in range(sizes.filter_rounds):
                for fan in rotated(fans, rep):
                    await fan.round(http, keep=True)
        finally:
            gc.unfreeze()
    except WireError as exc:
        raise RuntimeError(f"ours refused the filter send: {exc}") from exc
    finally:
        for fan in fans:
            await fan.close(sizes.open_concurrency)
    return [fan.result() for fan in fans]
