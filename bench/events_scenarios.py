"""The event scenarios: cross-node delivery, fan-out, register rate, replay.

They run on two nodes of ours (``bench.events_server ours``) and one raw
floor server (``bench.events_server raw``), on the suite's redis-server.
Clients are :class:`~bench.events_client.EventsWire` connections that speak
the protocol directly. ``perf_counter`` is ``CLOCK_MONOTONIC``: one clock
for every process of the machine, so a time taken in a server and one taken
in the load client can be subtracted.

``events_latency``
    A wire subscriber on node B (cross-node) and one on node A (same node),
    both subscribed to ``bench/latency/*``. Each round registers one event
    on node A, from server code (``registry.events.register``, 5 ms after
    the HTTP request that asks for it was answered, so that neither node A
    nor the load client is still busy with it; the start is node A's clock
    just before the call) or from a wire client on node A
    (``register_events``, the start is the client's clock just before the
    send); the end is the subscriber's clock when the ``events`` frame
    arrived. In the same rounds, in an order that rotates: the Redis
    pub/sub round trip through another process (``bench.pubsub_probe``).
``events_fanout``
    N wire subscribers (1,000), every one on node B, each of its own
    session, subscribed to ``bench/fan``. A round: node B's server code
    registers one event (``POST /bench/events/register``, so B also runs
    the register call and its follower reads the event back), and the
    client waits until every subscriber has it; one event per round, so
    that each frame carries one event. The floor: N websockets on a raw
    aiohttp server, which ``send_frame``-s one pre-encoded ``events`` frame
    of the same shape to each (``POST /bench/events/fan``). Server CPU per
    delivered event: the one delivering process's ``process_time()`` around
    a repetition of M rounds, less what the two reads cost, over M x N.
``events_register``
    Blocks of K batches of B events (100), one batch at a time: ours from
    server code on node A (``registry.events.register``: one script call
    per batch), a redis-py pipeline of B ``XADD`` with the same fields in
    the same process (no ``MULTI``), and ours from a wire client on node A
    (``register_events``). Events per second per block; the server
    process's CPU and redis-server's (``INFO cpu``) per event.
``events_replay``
    R events (10,000) of one type registered after a marker event, then
    ``subscribe(since=marker)``: the time from the subscribe's send to the
    arrival of the frame that carries the R-th replayed event at a wire
    client on node B. Beside it: the same replay in node B's server code
    (``registry.events.subscribe(since=...)`` iterated to the R-th event),
    and redis-py ``XRANGE`` pages of 500 of the same stream in node B's
    process (no decoding: the floor of reading them).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as redis

from .client import TIMEOUT, LoadClient, Tally
from .events_client import EventsWire, Tracked
from .events_server import TEXT
from .messaging_scenarios import cpu_of, login, read_cost
from .procs import ServerProcess
from .push_common import clock
from .scenarios import _PubSubProbe, rotated, until
from .summary import summarize

Log = Callable[[str], None]
Result = dict[str, Any]
EVENTS_SCENARIOS = (
    "events_latency",
    "events_fanout",
    "events_register",
    "events_replay",
)
PREFIX = "bench-ev"
MODULE = "bench.events_server"
FAN_TYPE = "bench/fan"
FENCE_TYPE = "bench/fence"


@dataclass(frozen=True)
class EventsSizes:
    """The counts of the event scenarios; every loop is bounded by them."""

    latency_reps: int = 100
    """Rounds of each latency variant (p50 and p95 over them)."""
    latency_warmup: int = 10
    fanout_subscribers: int = 1000
    fanout_rounds: int = 20
    """Events per repetition (CPU is read around them): 20,000 deliveries."""
    fanout_reps: int = 10
    fanout_warmup: int = 3
    register_batch: int = 100
    register_batches: int = 20
    """Batches per block (a rate per block)."""
    register_blocks: int = 12
    register_warmup: int = 5
    replay_events: int = 10_000
    replay_reps: int = 10
    open_concurrency: int = 50


EVENTS_FULL = EventsSizes()
EVENTS_SMOKE = EventsSizes(
    latency_reps=3,
    latency_warmup=1,
    fanout_subscribers=5,
    fanout_rounds=3,
    fanout_reps=2,
    fanout_warmup=1,
    register_batch=10,
    register_batches=3,
    register_blocks=2,
    register_warmup=1,
    replay_events=1200,
    replay_reps=2,
    open_concurrency=5,
)


class EventsCluster:
    """Nodes A and B of ours, and the raw floor, on the suite's redis-server."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.processes: list[ServerProcess] = []
        try:
            for impl in ("ours", "ours", "raw"):
                self.processes.append(
                    ServerProcess(impl, redis_url, f"{PREFIX}-{impl}", module=MODULE)
                )
        except BaseException:
            self.stop()
            raise
        self.a, self.b, self.raw = self.processes

    def stop(self) -> None:
        """Stop every node."""
        for process in self.processes:
            process.stop()


async def _post(
    http: aiohttp.ClientSession, node: ServerProcess, route: str, **query: Any
) -> dict[str, Any]:
    params = {k: str(v) for k, v in query.items()}
    async with http.post(f"{node.url}/bench/events/{route}", params=params) as reply:
        if reply.status != 200:
            text = await reply.text()
            raise RuntimeError(f"{route} on {node.impl}: {reply.status} {text[:300]}")
        body: dict[str, Any] = await reply.json()
        return body


async def _open_wire(
    http: aiohttp.ClientSession, node: ServerProcess, login_at: ServerProcess
) -> EventsWire:
    """A new session with one protocol connection on ``node``."""
    wire = await EventsWire.open(http, node.url, await login(http, login_at))
    assert isinstance(wire, EventsWire)
    return wire


def _json_event(event_type: str, n: int) -> dict[str, Any]:
    return {
        "type": event_type,
        "payload": {"type": "json", "data": {"n": n, "text": TEXT}},
    }


def _n_of(event: dict[str, Any]) -> int:
    return int(event["payload"]["data"]["n"])


async def run_events(
    redis_url: str,
    http: aiohttp.ClientSession,
    sizes: EventsSizes,
    chosen: Sequence[str],
    log: Log,
    skipped: dict[str, str],
) -> list[Result]:
    """Run the chosen event scenarios on a fresh cluster."""
    cluster = EventsCluster(redis_url)
    try:
        reply = await LoadClient(http, "ours", cluster.a.url).get(
            "/bench/events/features"
        )
        if reply["missing"]:
            for name in chosen:
                skipped[name] = str(reply["missing"])
            log(f"skipping the event scenarios: {reply['missing']}")
            return []
        results: list[Result] = []
        if "events_latency" in chosen:
            results += await events_latency(cluster, http, sizes, log)
        if "events_register" in chosen:
            results += await events_register(cluster, http, sizes, log)
        if "events_replay" in chosen:
            results += await events_replay(cluster, http, sizes, log)
        if "events_fanout" in chosen:
            results += await events_fanout(cluster, http, sizes, log)
        return results
    finally:
        cluster.stop()


# cross-node delivery


class _Arrivals:
    """When each subscriber got the event numbered n."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[float]] = {}

    def expect(self, n: int) -> asyncio.Future[float]:
        future = asyncio.get_running_loop().create_future()
        self.pending[n] = future
        return future

    def __call__(self, event: dict[str, Any], at: float, replay: bool) -> None:
        future = self.pending.pop(_n_of(event), None)
        if future is not None and not future.done():
            future.set_result(at)


def _checked(tracked: Tracked, what: str) -> None:
    if tracked.missed or tracked.out_of_order:
        raise RuntimeError(
            f"{what}: {tracked.missed} events frames missed, "
            f"{tracked.out_of_order} ids out of order"
        )


async def events_latency(
    cluster: EventsCluster, http: aiohttp.ClientSession, sizes: EventsSizes, log: Log
) -> list[Result]:
    """From the register call on node A to the event frame at a subscriber."""
    a, b = cluster.a, cluster.b
    wires: list[EventsWire] = []
    probe: _PubSubProbe | None = None
    arrivals = {"cross-node": _Arrivals(), "same-node": _Arrivals()}
    tracked: dict[str, Tracked] = {}
    numbers = itertools.count(1)
    samples: dict[tuple[str, str, str], list[float]] = {}
    try:
        sender = await _open_wire(http, a, a)
        wires.append(sender)
        for where, node in (("cross-node", b), ("same-node", a)):
            watcher = await _open_wire(http, node, a)
            wires.append(watcher)
            tracked[where], _ = await watcher.subscribe(
                ["bench/latency/*"], on_event=arrivals[where]
            )
        probe = await _PubSubProbe.start(cluster.redis_url)
        pubsub = probe

        async def by_server() -> dict[str, float]:
            n = next(numbers)
            futures = {w: arrivals[w].expect(n) for w in arrivals}
            await _post(http, a, "later", type="bench/latency/server", tag=n)
            arrived = await _latencies(0.0, futures)
            body = await LoadClient(http, "ours", a.url).get(
                f"/bench/events/started?tag={n}"
            )
            t0 = float(body["t0"])
            return {where: at - t0 for where, at in arrived.items()}

        async def by_wire() -> dict[str, float]:
            n = next(numbers)
            futures = {w: arrivals[w].expect(n) for w in arrivals}
            started = await sender.register([_json_event("bench/latency/wire", n)])
            return await _latencies(started, futures)

        async def by_pubsub() -> dict[str, float]:
            return {"cross-node": await pubsub.there()}

        variants: dict[tuple[str, str], Callable[[], Awaitable[dict[str, float]]]] = {
            ("ours", "server code"): by_server,
            ("ours", "wire client"): by_wire,
            ("redis", "pub/sub"): by_pubsub,
        }
        log(
            f"events cross-node delivery: {len(variants)} variants, "
            f"{sizes.latency_reps} rounds"
        )
        for once in variants.values():
            for _ in range(sizes.latency_warmup):
                await once()
        keys = list(variants)
        for rep in range(sizes.latency_reps):
            for key in rotated(keys, rep):
                for where, seconds in (await variants[key]()).items():
                    samples.setdefault((*key, where), []).append(seconds * 1000)
        for where, found in tracked.items():
            _checked(found, f"the {where} subscriber")
    finally:
        if probe is not None:
            await probe.stop()
        for wire in wires:
            await wire.close()
    return [
        {
            "scenario": "events_latency",
            "impl": impl,
            "via": via,
            "where": where,
            "latency_ms": summarize(values),
        }
        for (impl, via, where), values in samples.items()
    ]


async def _latencies(
    started: float, futures: dict[str, asyncio.Future[float]]
) -> dict[str, float]:
    found = {}
    for where, future in futures.items():
        found[where] = await asyncio.wait_for(future, TIMEOUT) - started
    return found


# fan-out


async def events_fanout(
    cluster: EventsCluster, http: aiohttp.ClientSession, sizes: EventsSizes, log: Log
) -> list[Result]:
    """One event to N subscribers on one node, against a raw server's frame."""
    a, b, raw = cluster.a, cluster.b, cluster.raw
    count = sizes.fanout_subscribers
    log(
        f"events fan-out: {count} subscribers on one node, "
        f"{sizes.fanout_reps} x {sizes.fanout_rounds} events"
    )
    gate = asyncio.Semaphore(sizes.open_concurrency)
    tallies = {"ours": Tally(), "raw": Tally()}
    clients: dict[str, list[tuple[EventsWire, Tracked]]] = {"ours": [], "raw": []}

    def counter(tally: Tally) -> Callable[[dict[str, Any], float, bool], None]:
        def add(event: dict[str, Any], at: float, replay: bool) -> None:
            tally.add()

        return add

    async def open_ours() -> tuple[EventsWire, Tracked]:
        async with gate:
            wire = await _open_wire(http, b, a)
            tracked, _ = await wire.subscribe(
                [FAN_TYPE], on_event=counter(tallies["ours"])
            )
            return wire, tracked

    async def open_raw() -> tuple[EventsWire, Tracked]:
        async with gate:
            wire = await EventsWire.open_raw(http, raw.url)
            tracked = wire.subscriptions[1]
            tracked.on_event = counter(tallies["raw"])
            return wire, tracked

    numbers = itertools.count(1)
    nodes = {"ours": b, "raw": raw}

    async def one_round(impl: str) -> float:
        tally = tallies[impl]
        tally.reset(count)
        started = clock()
        if impl == "ours":
            await _post(http, b, "register", type=FAN_TYPE, n=1, tag=next(numbers))
        else:
            await _post(http, raw, "fan")
        await asyncio.wait_for(tally.done.wait(), TIMEOUT)
        return (tally.last_at - started) * 1000

    rounds = 0
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    spread: dict[str, list[float]] = {"ours": [], "raw": []}
    try:
        for impl, opener in (("ours", open_ours), ("raw", open_raw)):
            opened = await asyncio.gather(
                *(opener() for _ in range(count)), return_exceptions=True
            )
            clients[impl] = [pair for pair in opened if isinstance(pair, tuple)]
            for failed in opened:
                if isinstance(failed, BaseException):
                    raise failed
        for impl, node in nodes.items():
            client = LoadClient(http, "ours", node.url)

            async def holds(client: LoadClient = client) -> bool:
                return bool((await client.get("/bench/stats"))["sockets"] == count)

            await until(holds, f"{impl} to hold the {count} subscribers")
        costs = {impl: await read_cost(http, (node,)) for impl, node in nodes.items()}
        for impl in nodes:
            for _ in range(sizes.fanout_warmup):
                await one_round(impl)
        rounds = sizes.fanout_warmup
        gc.collect()
        gc.freeze()  # thousands of client objects: keep full collections out
        try:
            for rep in range(sizes.fanout_reps):
                for impl in rotated(list(nodes), rep):
                    node = nodes[impl]
                    before = await cpu_of(http, (node,))
                    for _ in range(sizes.fanout_rounds):
                        spread[impl].append(await one_round(impl))
                    spent = await cpu_of(http, (node,)) - before - costs[impl]
                    cpu[impl].append(spent * 1e6 / (sizes.fanout_rounds * count))
        finally:
            gc.unfreeze()
        rounds += sizes.fanout_reps * sizes.fanout_rounds
    finally:
        closing = asyncio.Semaphore(sizes.open_concurrency)

        async def close(wire: EventsWire) -> None:
            async with closing:
                await wire.close()

        wires = [wire for pairs in clients.values() for wire, _ in pairs]
        await asyncio.gather(*(close(w) for w in wires), return_exceptions=True)
    results: list[Result] = []
    for impl in nodes:
        seen = [tracked for _, tracked in clients[impl]]
        results.append(
            {
                "scenario": "events_fanout",
                "impl": impl,
                "subscribers": count,
                "layout": "one node",
                "cpu_us_per_event": summarize(cpu[impl]),
                "last_ms": summarize(spread[impl]),
                "incomplete": sum(t.count != rounds for t in seen),
                "missed": sum(t.missed for t in seen),
                "out_of_order": sum(t.out_of_order for t in seen),
                "cpu_read_cost_us": costs[impl] * 1e6,
            }
        )
    return results


# register throughput


async def _redis_cpu(client: redis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def events_register(
    cluster: EventsCluster, http: aiohttp.ClientSession, sizes: EventsSizes, log: Log
) -> list[Result]:
    """Batches of events, one at a time: ours (server, wire) and raw XADD."""
    a = cluster.a
    size, batches = sizes.register_batch, sizes.register_batches
    log(
        f"events register: {sizes.register_blocks} blocks of {batches} batches "
        f"of {size} events"
    )
    wire = await _open_wire(http, a, a)
    client = redis.Redis.from_url(cluster.redis_url)
    numbers = itertools.count()
    cost = 0.0

    async def server(via: str, count: int) -> tuple[list[float], float]:
        reply = await _post(
            http,
            a,
            "throughput",
            via=via,
            batch=size,
            batches=count,
            type=f"bench/register/{via}",
        )
        return [float(s) for s in reply["seconds"]], float(reply["cpu"])

    async def by_wire(count: int) -> tuple[list[float], float]:
        before = await cpu_of(http, (a,))
        seconds = []
        for _ in range(count):
            batch = [
                _json_event("bench/register/wire", next(numbers)) for _ in range(size)
            ]
            started = time.perf_counter()
            await wire.register(batch)
            seconds.append(time.perf_counter() - started)
        return seconds, await cpu_of(http, (a,)) - before - cost

    blocks: dict[tuple[str, str], Callable[[int], Awaitable[tuple[list[float], float]]]]
    blocks = {
        ("ours", "server code"): lambda n: server("ours", n),
        ("redis", "XADD pipeline"): lambda n: server("xadd", n),
        ("ours", "wire client"): by_wire,
    }
    keys = list(blocks)
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    batch_ms: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    redis_cpu: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    try:
        cost = await read_cost(http, (a,))
        for key in keys:
            await blocks[key](sizes.register_warmup)
        for rep in range(sizes.register_blocks):
            for key in rotated(keys, rep):
                redis_before = await _redis_cpu(client)
                seconds, spent = await blocks[key](batches)
                redis_spent = await _redis_cpu(client) - redis_before
                events = size * len(seconds)
                rates[key].append(events / sum(seconds))
                batch_ms[key] += [s * 1000 for s in seconds]
                cpu[key].append(spent * 1e6 / events)
                redis_cpu[key].append(redis_spent * 1e6 / events)
    finally:
        await wire.close()
        await client.aclose()
    return [
        {
            "scenario": "events_register",
            "impl": impl,
            "via": via,
            "batch": size,
            "events_per_s": summarize(rates[impl, via]),
            "batch_ms": summarize(batch_ms[impl, via]),
            "cpu_us_per_event": summarize(cpu[impl, via]),
            "redis_cpu_us_per_event": summarize(redis_cpu[impl, via]),
        }
        for impl, via in keys
    ]


# replay


async def events_replay(
    cluster: EventsCluster, http: aiohttp.ClientSession, sizes: EventsSizes, log: Log
) -> list[Result]:
    """Replay of R retained events: a wire client, server code, raw XRANGE."""
    a, b = cluster.a, cluster.b
    count = sizes.replay_events
    log(f"events replay: {count} retained events, {sizes.replay_reps} repetitions")
    fences = [_Arrivals(), _Arrivals()]
    reader = await _open_wire(http, b, a)
    watchers = [await _open_wire(http, node, a) for node in (a, b)]
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        subscribed = [
            await watcher.subscribe([FENCE_TYPE], on_event=fence)
            for watcher, fence in zip(watchers, fences, strict=True)
        ]
        fenced = [tracked for tracked, _ in subscribed]
        epoch = str(subscribed[0][1]["epoch"])  # a replay needs the log's epoch

        async def by_wire(event_type: str, since: str) -> float:
            last = asyncio.get_running_loop().create_future()
            seen = itertools.count(1)

            def on_event(event: dict[str, Any], at: float, replay: bool) -> None:
                if next(seen) == count and not last.done():
                    last.set_result(at)

            started = clock()
            tracked, result = await reader.subscribe(
                [event_type], since=since, on_event=on_event, epoch=epoch
            )
            try:
                if result["recovered"] is not True:
                    raise RuntimeError(f"the replay did not recover: {result}")
                arrived: float = await asyncio.wait_for(last, TIMEOUT)
                _checked(tracked, "the replay's subscriber")
                if tracked.replayed != count or tracked.count != count:
                    raise RuntimeError(
                        f"the replay sent {tracked.replayed} of {count} events "
                        f"({tracked.count} in all)"
                    )
            finally:
                await reader.unsubscribe(int(result["subscription"]))
            return arrived - started

        async def by_server(via: str, event_type: str, since: str) -> float:
            reply = await _post(
                http, b, "replay", via=via, since=since, type=event_type, expect=count
            )
            if reply["events"] != count:
                raise RuntimeError(f"{via} read {reply['events']} of {count} events")
            return float(reply["seconds"])

        variants: dict[tuple[str, str], Callable[[str, str], Awaitable[float]]] = {
            ("ours", "wire client"): by_wire,
            ("ours", "server code"): lambda t, s: by_server("server", t, s),
            ("redis", "XRANGE pages"): lambda t, s: by_server("xrange", t, s),
        }
        keys = list(variants)
        for rep in range(sizes.replay_reps):
            event_type = f"bench/replay/{rep}"
            marker = await _post(http, a, "register", type="bench/replay-mark", n=1)
            await _post(http, a, "register", type=event_type, n=count)
            # once a node has handed on the fence, its follower is past them
            arrived = [fence.expect(rep) for fence in fences]
            await _post(http, a, "register", type=FENCE_TYPE, n=1, tag=rep)
            await asyncio.wait_for(asyncio.gather(*arrived), TIMEOUT)
            for key in rotated(keys, rep):
                seconds = await variants[key](event_type, marker["first"])
                samples.setdefault(key, []).append(seconds * 1000)
        for tracked in fenced:
            _checked(tracked, "a fence's subscriber")
    finally:
        await reader.close()
        for watcher in watchers:
            await watcher.close()
    return [
        {
            "scenario": "events_replay",
            "impl": impl,
            "via": via,
            "events": count,
            "replay_ms": summarize(values),
            "events_per_s": summarize([count * 1000 / v for v in values]),
        }
        for (impl, via), values in samples.items()
    ]
