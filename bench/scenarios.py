"""The scenarios; each runs every implementation in the same run.

Servers run in their own processes; this process is the load client. Within a
repetition the implementations take turns, in an order that rotates, so drift
in the machine's load falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as redis

from .client import LIVE, TIMEOUT, LoadClient, Protocol, Socket, Tally
from .procs import ROOT, ServerProcess
from .push_common import clock
from .sizes import Sizes
from .summary import summarize

IMPLS = ("ours", "raw", "socketio")
CLUSTER_PREFIX = "bench-"
POLL_INTERVAL = 0.005
Log = Callable[[str], None]
Result = dict[str, Any]
_T = TypeVar("_T")


def rotated(items: Sequence[_T], rep: int) -> list[_T]:
    """The implementations (or their runs) in the order of repetition ``rep``."""
    shift = rep % len(items)
    return list(items[shift:]) + list(items[:shift])


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def until_sockets(
    client: LoadClient, count: int, base_url: str | None = None
) -> None:
    """Wait until the server tracks exactly ``count`` sockets."""

    async def check() -> bool:
        stats = await client.get("/bench/stats", base_url)
        return bool(stats["sockets"] == count)

    await until(check, f"{client.impl} to track {count} sockets")


async def open_sessions(
    client: LoadClient, sessions: int, per_session: int, tally: Tally, limit: int
) -> list[Socket]:
    """Log ``sessions`` sessions in and open ``per_session`` sockets for each."""
    gate = asyncio.Semaphore(limit)

    async def one_session() -> list[Socket]:
        async with gate:
            _, cookie = await client.login()
            return [await client.open(cookie, tally) for _ in range(per_session)]

    opened = await asyncio.gather(*(one_session() for _ in range(sessions)))
    return list(itertools.chain.from_iterable(opened))


async def close_sockets(sockets: Sequence[Socket], limit: int) -> None:
    """Close the sockets from the client's side, ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(socket: Socket) -> None:
        async with gate:
            await socket.close()

    await asyncio.gather(*(one(s) for s in sockets))


class Cluster:
    """Nodes A and B of each implementation, all on one redis-server."""

    def __init__(self, redis_url: str, impls: Sequence[str]) -> None:
        self.redis_url = redis_url
        self.nodes: dict[str, tuple[ServerProcess, ServerProcess]] = {}
        try:
            for impl in impls:
                prefix = f"{CLUSTER_PREFIX}{impl}"
                self.nodes[impl] = (
                    ServerProcess(impl, redis_url, prefix),
                    ServerProcess(impl, redis_url, prefix),
                )
        except BaseException:
            self.stop()
            raise

    async def warm_up(self, http: aiohttp.ClientSession) -> None:
        """Open and close a socket on every node, and close across nodes once.

        That does lazy set-up (connection pools, listeners) before timing.
        python-socketio starts its Redis listener on a node's first connection;
        wait until both nodes listen, or the first close would be lost.
        """
        for impl, nodes in self.nodes.items():
            for node in nodes:
                client = LoadClient(http, impl, node.url)
                _, cookie = await client.login()
                socket = await client.open(cookie, Tally())
                await until_sockets(client, 1)
                await socket.close()
                await until_sockets(client, 0)
        await self._wait_listening()
        sizes = Sizes(open_concurrency=10)
        for impl, (a, b) in self.nodes.items():  # one logout each, for the pools
            await _close_once(http, impl, a, b, 2, sizes)

    async def _wait_listening(self) -> None:
        if "socketio" in self.nodes:  # python-socketio listens once it has a client
            listeners = redis.Redis.from_url(self.redis_url)
            channel = f"{CLUSTER_PREFIX}socketio:socketio"

            async def both_listen() -> bool:
                numsub = await listeners.pubsub_numsub(channel)
                return bool(numsub[0][1] == 2)

            try:
                await until(both_listen, "python-socketio nodes to listen")
            finally:
                await listeners.aclose()

    def stop(self) -> None:
        """Stop every node."""
        for a, b in self.nodes.values():
            a.stop()
            b.stop()


async def fanout(
    cluster: Cluster, http: aiohttp.ClientSession, sizes: Sizes, log: Log
) -> list[Result]:
    """Scenario 1: M small messages to every socket of N sessions, on node A."""
    results: list[Result] = []
    for sessions in sizes.fanout_sessions:
        log(f"fan-out: {sessions} sessions x {sizes.sockets_per_session} sockets")
        results += await _deliveries(
            cluster,
            http,
            sizes,
            scenario="fanout",
            route="/bench/fanout",
            sessions=sessions,
            per_session=sizes.sockets_per_session,
        )
    return results


async def push(
    cluster: Cluster, http: aiohttp.ClientSession, sizes: Sizes, log: Log
) -> list[Result]:
    """Scenario 5: push through the protocol, to one session and to N sessions.

    Ours calls ``send_to_session`` on node A (protocol connections: the hello
    first, then ``{"op":"push","data":...}`` frames); the floor encodes the
    same frame once per session and ``send_str``-s it to the session's
    sockets; python-socketio emits to the session's room (this node only).
    """
    results: list[Result] = []
    live = {"ours": LIVE}
    for k in sizes.push_session_sockets:
        log(f"push: 1 session x {k} sockets")
        results += await _deliveries(
            cluster,
            http,
            sizes,
            scenario="push_session",
            route="/bench/pushfan",
            sessions=1,
            per_session=k,
            protocols=live,
        )
    for sessions in sizes.fanout_sessions:
        log(f"push fan-out: {sessions} sessions x {sizes.sockets_per_session} sockets")
        results += await _deliveries(
            cluster,
            http,
            sizes,
            scenario="push_fanout",
            route="/bench/pushfan",
            sessions=sessions,
            per_session=sizes.sockets_per_session,
            protocols=live,
        )
    return results


async def _deliveries(
    cluster: Cluster,
    http: aiohttp.ClientSession,
    sizes: Sizes,
    *,
    scenario: str,
    route: str,
    sessions: int,
    per_session: int,
    protocols: dict[str, Protocol] | None = None,
) -> list[Result]:
    """Server CPU per delivered message, and the rate, of ``POST route?m=M``."""
    sockets_total = sessions * per_session
    rounds = max(1, sizes.fanout_deliveries // sockets_total)
    expected = sockets_total * rounds
    impls = list(cluster.nodes)
    clients = {
        i: LoadClient(http, i, cluster.nodes[i][0].url, (protocols or {}).get(i))
        for i in impls
    }
    tallies = {i: Tally() for i in impls}
    sockets: dict[str, list[Socket]] = {}
    for impl in impls:
        sockets[impl] = await open_sessions(
            clients[impl], sessions, per_session, tallies[impl], sizes.open_concurrency
        )
        await until_sockets(clients[impl], sockets_total)
    samples: dict[str, dict[str, list[float]]] = {
        i: {"cpu_us_per_msg": [], "msgs_per_s": []} for i in impls
    }
    # thousands of client sockets make the load client's full collections slow
    # and erratic; keep them out of the delivery times
    gc.collect()
    gc.freeze()
    try:
        for rep in range(sizes.fanout_reps):
            for impl in rotated(impls, rep):
                client, tally = clients[impl], tallies[impl]
                tally.reset(expected)
                cpu_before = (await client.get("/bench/stats"))["cpu"]
                started = time.perf_counter()
                reply = await client.post(f"{route}?m={rounds}")
                if reply["sent"] != expected:
                    raise RuntimeError(f"{impl} sent {reply['sent']} of {expected}")
                await asyncio.wait_for(tally.done.wait(), TIMEOUT * 4)
                elapsed = tally.last_at - started
                cpu_after = (await client.get("/bench/stats"))["cpu"]
                cpu_us = (cpu_after - cpu_before) * 1e6
                samples[impl]["cpu_us_per_msg"].append(cpu_us / expected)
                samples[impl]["msgs_per_s"].append(expected / elapsed)
    finally:
        gc.unfreeze()
    for impl in impls:
        await close_sockets(sockets[impl], sizes.open_concurrency)
        await until_sockets(clients[impl], 0)
    return [
        {
            "scenario": scenario,
            "impl": impl,
            "sessions": sessions,
            "sockets": sockets_total,
            "rounds": rounds,
            **{name: summarize(values) for name, values in samples[impl].items()},
        }
        for impl in impls
    ]


async def cross_node_close(
    cluster: Cluster, http: aiohttp.ClientSession, sizes: Sizes, log: Log
) -> list[Result]:
    """Scenario 2: K sockets of one session on node B; close-all asked on node A."""
    impls = list(cluster.nodes)
    results: list[Result] = []
    for k in sizes.close_sockets:
        log(f"cross-node close: {k} socket(s) on B, {sizes.close_reps} repetitions")
        latencies: dict[str, list[float]] = {i: [] for i in impls}
        for rep in range(sizes.close_reps):
            for impl in rotated(impls, rep):
                a, b = cluster.nodes[impl]
                latencies[impl].append(await _close_once(http, impl, a, b, k, sizes))
        results += [
            {
                "scenario": "close",
                "impl": impl,
                "sockets": k,
                "latency_ms": summarize(latencies[impl]),
            }
            for impl in impls
        ]
    return results


async def _close_once(
    http: aiohttp.ClientSession,
    impl: str,
    a: ServerProcess,
    b: ServerProcess,
    k: int,
    sizes: Sizes,
) -> float:
    client = LoadClient(http, impl, a.url)
    session, cookie = await client.login()
    tally = Tally()
    gate = asyncio.Semaphore(sizes.open_concurrency)

    async def open_on_b() -> Socket:
        async with gate:
            return await client.open(cookie, tally, base_url=b.url)

    sockets = await asyncio.gather(*(open_on_b() for _ in range(k)))
    await until_sockets(client, k, b.url)

    async def cluster_ready() -> bool:
        reply = await client.get(f"/bench/ready?session={session}&expected={k}")
        return bool(reply["ready"])

    await until(cluster_ready, f"{impl} cluster to know {k} sockets")
    started = time.perf_counter()
    asked = asyncio.create_task(client.post("/bench/logout", cookie))
    try:
        await asyncio.wait_for(
            asyncio.gather(*(s.closed.wait() for s in sockets)), TIMEOUT
        )
        latency = max(s.closed_at for s in sockets) - started
        await asyncio.wait_for(asked, TIMEOUT)
    finally:
        asked.cancel()
    await asyncio.wait_for(asyncio.gather(*(s.reader for s in sockets)), TIMEOUT)
    await until_sockets(client, 0, b.url)
    return latency * 1000


async def push_latency(
    cluster: Cluster, http: aiohttp.ClientSession, sizes: Sizes, log: Log
) -> list[Result]:
    """Scenario 6: from the call on node A to the push's arrival at the client.

    One connection of a new session, on node B (cross-node) or on node A
    (same node). Ours calls ``send_to_session`` on A; the floor publishes the
    frame on a Redis channel that node B listens to (or sends it itself, on
    the same node); python-socketio emits to the room through its Redis
    manager. The start is node A's clock just before the first send, the end
    the client's on arrival (one clock: ``CLOCK_MONOTONIC``). Next to them, in
    the same repetitions: a Redis pub/sub round trip through another process
    (``pub/sub``: PUBLISH, the other process publishes it back), and a
    PUBLISH to a subscriber of this process.
    """
    impls = list(cluster.nodes)
    log(f"push latency: {sizes.push_latency_reps} repetitions")
    targets: dict[tuple[str, str], _PushTarget] = {}
    for impl in impls:
        a, b = cluster.nodes[impl]
        for where, node in (("cross-node", b), ("same-node", a)):
            targets[impl, where] = await _PushTarget.open(http, impl, a, node)
    pubsub = await _PubSubProbe.start(cluster.redis_url)
    latencies: dict[tuple[str, str], list[float]] = {key: [] for key in targets}
    probes = {
        ("redis", "pub/sub"): pubsub.there,
        ("redis", "pub/sub, one process"): pubsub.here,
    }
    latencies.update({key: [] for key in probes})
    runs: list[tuple[str, str]] = list(latencies)
    try:
        for rep in range(sizes.push_latency_reps):
            for key in rotated(runs, rep):
                if key in probes:
                    latency = await probes[key]()
                else:
                    latency = await targets[key].push_once()
                latencies[key].append(latency * 1000)
    finally:
        await pubsub.stop()
        for target in targets.values():
            await target.close()
    return [
        {
            "scenario": "push_latency",
            "impl": impl,
            "where": where,
            "latency_ms": summarize(values),
        }
        for (impl, where), values in latencies.items()
    ]


class _PushTarget:
    """One socket of a new session, and pushes to it asked of node A."""

    def __init__(
        self, client: LoadClient, session: str, socket: Socket, remote: bool
    ) -> None:
        self.client = client
        self.session = session
        self.socket = socket
        self.remote = remote

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        impl: str,
        a: ServerProcess,
        node: ServerProcess,
    ) -> _PushTarget:
        client = LoadClient(http, impl, a.url, LIVE if impl == "ours" else None)
        session, cookie = await client.login()
        socket = await client.open(cookie, Tally(), base_url=node.url)

        async def cluster_ready() -> bool:
            reply = await client.get(f"/bench/ready?session={session}&expected=1")
            return bool(reply["ready"])

        await until(cluster_ready, f"{impl} cluster to know the socket")
        return cls(client, session, socket, remote=node is not a)

    async def push_once(self) -> float:
        """Seconds from node A's first send to the push's arrival."""
        tally = self.socket.tally
        tally.reset(1)
        remote = int(self.remote)
        reply = await self.client.post(
            f"/bench/push?session={self.session}&m=1&remote={remote}"
        )
        await asyncio.wait_for(tally.done.wait(), TIMEOUT)
        return tally.last_at - float(reply["at"])

    async def close(self) -> None:
        await self.socket.close()


class _PubSubProbe:
    """Redis pub/sub round trips: through another process, or within this one.

    ``there``: a PUBLISH to a subscriber in another process, which publishes
    it back (as a push goes from node A through Redis to node B, and from B
    to its client). ``here``: a PUBLISH to this process's own subscriber.
    """

    CHANNEL = f"{CLUSTER_PREFIX}probe"

    def __init__(
        self,
        client: redis.Redis,
        pubsub: redis.client.PubSub,
        child: asyncio.subprocess.Process,
    ) -> None:
        self.client = client
        self.pubsub = pubsub
        self.child = child
        self.arrived = asyncio.Event()
        self.arrived_at = 0.0
        self.echoed: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.sent = 0
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str) -> _PubSubProbe:
        client = redis.Redis.from_url(url)
        pubsub = client.pubsub()
        # both before listen(), which returns at once otherwise
        await pubsub.subscribe(f"{cls.CHANNEL}:here", f"{cls.CHANNEL}:there:back")
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.pubsub_probe",
            url,
            f"{cls.CHANNEL}:there",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        probe = cls(client, pubsub, child)
        try:
            assert child.stdout is not None
            ready = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
            if ready.strip() != b"READY":
                raise RuntimeError(f"the pub/sub probe said {ready!r}")
        except BaseException:
            await probe.stop()
            raise
        return probe

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            if message["channel"].endswith(b":back"):
                self.echoed.put_nowait((clock(), message["data"]))
            else:
                self.arrived_at = clock()
                self.arrived.set()

    async def here(self) -> float:
        """Seconds from a PUBLISH to its arrival at a subscriber in this process."""
        self.arrived.clear()
        started = clock()
        await self.client.publish(f"{self.CHANNEL}:here", b"x" * 32)
        await asyncio.wait_for(self.arrived.wait(), TIMEOUT)
        return self.arrived_at - started

    async def there(self) -> float:
        """Seconds from a PUBLISH to the subscriber process until its echo is back."""
        self.sent += 1
        started = clock()
        await self.client.publish(f"{self.CHANNEL}:there", str(self.sent))
        arrived, data = await asyncio.wait_for(self.echoed.get(), TIMEOUT)
        if int(data) != self.sent:
            raise RuntimeError(f"the pub/sub probe echoed {data!r}")
        return arrived - started

    async def stop(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        if self.child.stdin is not None:
            self.child.stdin.close()  # the probe ends when its stdin does
        try:
            await asyncio.wait_for(self.child.wait(), TIMEOUT)
        except TimeoutError:
            self.child.kill()
            await self.child.wait()
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


async def push_missing(redis_url: str, http: aiohttp.ClientSession) -> str:
    """Why our server cannot push through the protocol; '' when it can.

    Asked of a short-lived server, so that it is the servers' library (the
    work tree, or ``--lib``) that answers.
    """
    node = ServerProcess("ours", redis_url, f"{CLUSTER_PREFIX}features")
    try:
        reply = await LoadClient(http, "ours", node.url).get("/bench/features")
    finally:
        node.stop()
    return str(reply["missing"])


async def idle_memory(
    redis_url: str,
    http: aiohttp.ClientSession,
    sizes: Sizes,
    impls: Sequence[str],
    log: Log,
    protocol: bool = False,
) -> list[Result]:
    """Scenario 3: server RSS per idle tracked websocket; a fresh server each time.

    With ``protocol``, ours also runs with protocol connections (the
    ``idle_memory_protocol`` results), in the same rotation.
    """
    runs = list(impls) + (["ours-protocol"] if protocol and "ours" in impls else [])
    per_socket: dict[str, list[float]] = {run: [] for run in runs}
    count = sizes.idle_connections
    sessions = max(1, count // sizes.sockets_per_session)
    count = sessions * sizes.sockets_per_session
    log(f"idle memory: {count} connections, {sizes.idle_reps} repetitions")
    for rep in range(sizes.idle_reps):
        for run in rotated(runs, rep):
            impl = run.removesuffix("-protocol")
            node = ServerProcess(impl, redis_url, f"bench-idle-{run}-{rep}")
            try:
                live = LIVE if run.endswith("-protocol") else None
                client = LoadClient(http, impl, node.url, live)
                warm = await open_sessions(client, 5, 2, Tally(), 10)
                await until_sockets(client, 10)
                await close_sockets(warm, 10)
                await until_sockets(client, 0)
                before = await client.get("/bench/stats?full=1")
                held = await open_sessions(
                    client,
                    sessions,
                    sizes.sockets_per_session,
                    Tally(),
                    sizes.open_concurrency,
                )
                await until_sockets(client, count)
                after = await client.get("/bench/stats?full=1")
                per_socket[run].append((after["rss"] - before["rss"]) / count / 1024)
                await close_sockets(held, sizes.open_concurrency)
            finally:
                node.stop()
    return [
        {
            "scenario": "idle_memory_protocol"
            if run.endswith("-protocol")
            else "idle_memory",
            "impl": run.removesuffix("-protocol"),
            "sockets": count,
            "kib_per_socket": summarize(per_socket[run]),
        }
        for run in runs
    ]


def _blocks(total: int, blocks: int) -> Iterator[int]:
    size, extra = divmod(total, blocks)
    for index in range(blocks):
        yield size + (1 if index < extra else 0)


async def churn(
    redis_url: str,
    http: aiohttp.ClientSession,
    sizes: Sizes,
    impls: Sequence[str],
    log: Log,
) -> list[Result]:
    """Scenario 4: open and close sockets in a loop; state must return to empty.

    Each implementation has a fresh server; their blocks of cycles take turns.
    """
    log(f"churn: {sizes.churn_cycles} cycles, {sizes.churn_workers} workers")
    runs: list[_Churn] = []
    try:
        for impl in impls:
            node = ServerProcess(impl, redis_url, f"bench-churn-{impl}")
            runs.append(_Churn(node, LoadClient(http, impl, node.url), sizes))
        for run in runs:
            await run.prepare()
        blocks = list(_blocks(sizes.churn_cycles, sizes.churn_blocks))
        for index, cycles in enumerate(blocks):
            for run in rotated(runs, index):
                await run.block(cycles)
                if index == len(blocks) - 1:
                    await run.finish()
    finally:
        for run in runs:
            run.node.stop()
    return [run.result for run in runs]


class _Churn:
    """The churn of one implementation: a fresh server, and workers that cycle."""

    def __init__(self, node: ServerProcess, client: LoadClient, sizes: Sizes) -> None:
        self.node = node
        self.client = client
        self.sizes = sizes
        self.cookies: list[str] = []
        self.tally = Tally()
        self.rates: list[float] = []
        self.before: dict[str, Any] = {}
        self.fresh_tasks = 0
        """Tasks before the first websocket (lazy set-up may add a few)."""
        self.result: Result = {}

    async def prepare(self) -> None:
        """Log the workers in, warm up, and take the settled state as baseline."""
        for _ in range(self.sizes.churn_workers):
            self.cookies.append((await self.client.login())[1])
        self.fresh_tasks = int((await self.client.get("/bench/stats"))["tasks"])
        await self._run(self.sizes.churn_warmup)
        self.before, _ = await _settle(self.client, self.sizes.churn_settle_timeout)

    async def block(self, cycles: int) -> None:
        """Run one timed block of cycles."""
        self.rates.append(await self._run(cycles))

    async def finish(self) -> None:
        """Wait (bounded) for the state to return to the baseline; keep the result."""
        ended = time.perf_counter()
        after, settled_at = await _settle(
            self.client, self.sizes.churn_settle_timeout, int(self.before["tasks"])
        )
        self.result = {
            "scenario": "churn",
            "impl": self.node.impl,
            "cycles": self.sizes.churn_cycles,
            "logout_every": self.sizes.churn_logout_every,
            "cycles_per_s": summarize(self.rates),
            "empty": _idle(after) and after["tasks"] <= self.before["tasks"],
            "settle_s": settled_at - ended,
            "tasks_fresh": self.fresh_tasks,
            "before": self.before,
            "after": after,
            "rss_growth_kib": (after["rss"] - self.before["rss"]) / 1024,
        }

    async def _run(self, cycles: int) -> float:
        shares = _blocks(cycles, self.sizes.churn_workers)
        started = time.perf_counter()
        await asyncio.gather(
            *(self._worker(c, n) for c, n in zip(self.cookies, shares, strict=True))
        )
        return cycles / (time.perf_counter() - started)

    async def _worker(self, cookie: str, cycles: int) -> None:
        for number in range(cycles):
            socket = await self.client.open(cookie, self.tally)
            if number % self.sizes.churn_logout_every:
                await socket.close()
                continue
            # now and then the server closes it: a logout, close-all included
            await self.client.post("/bench/logout", cookie)
            await asyncio.wait_for(socket.closed.wait(), TIMEOUT)
            await asyncio.wait_for(socket.reader, TIMEOUT)


QUIET = 1.0
"""How long the task count must stay put for a state to count as settled."""


async def _settle(
    client: LoadClient, timeout: float, tasks_at_most: int | None = None
) -> tuple[dict[str, Any], float]:
    """Wait (bounded) until nothing is tracked and the task count holds still.

    With ``tasks_at_most``, also until there are no more tasks than that.
    Returns the last state seen, and when (``perf_counter``) it was reached:
    the first poll of the final task count, or the deadline.
    """
    started = time.perf_counter()
    deadline = started + timeout
    steady_since, last_tasks = started, -1
    while True:
        state = await client.get("/bench/stats?full=1")
        now = time.perf_counter()
        fewer = tasks_at_most is None or state["tasks"] <= tasks_at_most
        if state["tasks"] != last_tasks or not (_idle(state) and fewer):
            steady_since, last_tasks = now, state["tasks"]
        elif now - steady_since >= QUIET:
            return state, steady_since
        if now > deadline:
            return state, now
        await asyncio.sleep(QUIET / 10)


def _idle(state: dict[str, Any]) -> bool:
    """Nothing tracked: no socket, session, per-connection state or live ws."""
    return (
        state["sockets"] == 0
        and state["sessions"] == 0
        and all(value == 0 for value in state["leftovers"].values())
        and state["ws_objects_alive"] == 0
    )
