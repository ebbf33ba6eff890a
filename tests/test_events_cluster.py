"""The event bus across a Redis cluster, and its faults, over the wire.

Node A (and, where a test says so, a second node) runs in this process (a
real aiohttp server with a Redis registry); node B is its own OS process
(``tests/cluster_node.py``, node TTL 1 s, a policy that allows everything).
Every tab is a raw protocol websocket (``tests/wire.py``).

What every subscriber here is held to: the ids it is sent are strictly
increasing, none twice, none missing (they equal the registered ids its
query types match), replayed ones marked and first. Faults: subscribers
reconnecting again and again on alternating nodes, Redis restarted empty
or with its data kept, a node's follower connection killed, retention by
count and by age, a node killed (SIGKILL) or stalled (SIGSTOP/SIGCONT).
``make soak`` runs the reconnecting replay much longer (``-m soak``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import RedisSessionWSRegistry
from aiohttp_session_ws.backends.base import EventRetention

from .apps import Client, build_app, logout, registry_of, session_cookie_header
from .nodes import NODE_TTL, NodeProcess, StartNode
from .redis_server import RedisServer
from .waiting import until
from .wire import WireTab, allow_all, open_tab

LONG = 20.0
"""A bound far beyond what any wait here should take."""
PROMPT = 3.0
"""What "at once" means across nodes: about the node TTL (1 s), with room."""

Node = Client | NodeProcess
Id = tuple[int, int]


def eid(text: str) -> Id:
    """An event id as a pair that orders as ids do (not as strings)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def text(event_id: Id) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def registry(node: Client) -> RedisSessionWSRegistry:
    found = registry_of(node)
    assert isinstance(found, RedisSessionWSRegistry)
    return found


def live_url(node: Node) -> str:
    if isinstance(node, NodeProcess):
        return node.url("/live")
    return str(node.make_url("/live"))


def node_id(node: Node) -> str:
    return node.node_id if isinstance(node, NodeProcess) else registry(node).node_id


# what a tab was sent
@dataclass(frozen=True)
class Got:
    """One event as a subscriber received it."""

    id: Id
    type: str
    replay: bool
    subscription: int
    frame: int
    """The number of the frame it came in (in the order the tab read them)."""
    epoch: str | None
    """The epoch an ``events_lost`` frame before it named (None: none yet)."""


class Feed:
    """The server frames of one tab, read in the background as they come."""

    def __init__(self, tab: WireTab) -> None:
        self.tab = tab
        self.frames: list[dict[str, Any]] = []
        self.got: list[Got] = []
        self.lost: list[dict[str, Any]] = []
        self.missed = 0
        self._epoch: str | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.tab.frames.get()
            number = len(self.frames)
            self.frames.append(frame)
            if frame.get("op") == "events":
                self.missed += int(frame.get("missed", 0))
                for event in frame["events"]:
                    self.got.append(
                        Got(
                            eid(event["id"]),
                            event["type"],
                            bool(frame.get("replay", False)),
                            frame["subscription"],
                            number,
                            self._epoch,
                        )
                    )
            elif frame.get("op") == "events_lost":
                self._epoch = frame["epoch"]
                self.lost.append(frame)
            self._changed.set()

    def ids(self, subscription: int | None = None) -> list[Id]:
        return [
            g.id
            for g in self.got
            if subscription is None or g.subscription == subscription
        ]

    async def wait(self, condition: Callable[[], bool], timeout: float = LONG) -> None:
        """Wait (bounded) until ``condition()`` holds after some frame came."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def has(self, ids: Iterable[Id], timeout: float = LONG) -> None:
        """Wait (bounded) until every one of ``ids`` came."""
        wanted = set(ids)
        try:
            await self.wait(lambda: wanted <= set(self.ids()), timeout)
        except TimeoutError:
            missing = sorted(wanted - set(self.ids()))
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} events never came to "
                f"{self.tab.handle} (first {missing[:3]}, got {len(self.got)}, "
                f"missed {self.missed}, lost {self.lost}, closed "
                f"{self.tab.closed.is_set()})"
            ) from None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Nodes:
    """The nodes, sessions and tabs of one test; closes what it opened."""

    def __init__(self, aiohttp_client: AiohttpClient, start_node: StartNode) -> None:
        self._aiohttp_client = aiohttp_client
        self._start_node = start_node
        self.tabs: list[WireTab] = []
        self.feeds: list[Feed] = []
        self._browser: aiohttp.ClientSession | None = None

    async def a(self, url: str, prefix: str, **options: Any) -> Client:
        """A node in this process."""
        options.setdefault("node_ttl", NODE_TTL)
        options.setdefault("reconnect_max_delay", 0.5)
        options.setdefault("authorize", allow_all)
        found = RedisSessionWSRegistry(url, prefix=prefix, **options)
        return await self._aiohttp_client(
            build_app(found, routes=[web.get("/logout", logout)])
        )

    async def b(self, url: str) -> NodeProcess:
        """A node in its own OS process."""
        return await self._start_node(url, NODE_TTL)

    async def tab(self, node: Node, headers: dict[str, str] | None = None) -> WireTab:
        """A protocol tab on ``node``: of the session in ``headers``, or a new one."""
        if self._browser is None:
            self._browser = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        found = await open_tab(self._browser, live_url(node), headers=headers or {})
        self.tabs.append(found)
        return found

    async def login(self, node: Client) -> tuple[dict[str, str], WireTab]:
        """A new session, by its first tab on ``node``: its cookie, and the tab."""
        browser = await self._aiohttp_client(node.server)
        first = await open_tab(browser, "/live")
        self.tabs.append(first)
        return session_cookie_header(browser), first

    def feed(self, tab: WireTab) -> Feed:
        found = Feed(tab)
        self.feeds.append(found)
        return found

    async def close(self) -> None:
        for feed in self.feeds:
            await feed.close()
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                await tab.close()
        if self._browser is not None:
            await self._browser.close()


@pytest.fixture
async def nodes(
    aiohttp_client: AiohttpClient, start_node: StartNode
) -> AsyncIterator[Nodes]:
    found = Nodes(aiohttp_client, start_node)
    yield found
    await found.close()


# registering
def json_event(event_type: str, data: Any) -> dict[str, Any]:
    return {"type": event_type, "payload": {"type": "json", "data": data}}


async def register(
    tab: WireTab, batch: list[dict[str, Any]], retry_for: float = 0.0
) -> list[dict[str, Any]]:
    """Register a batch (with response); retry while the log is unavailable."""
    deadline = time.monotonic() + retry_for
    while True:
        frame = await tab.call("register_events", events=batch, response=True)
        if frame["op"] == "result":
            done: list[dict[str, Any]] = frame["data"]["events"]
            assert len(done) == len(batch)
            return done
        assert frame["code"] == "unavailable", frame
        if time.monotonic() > deadline:
            raise AssertionError(f"the log stayed unavailable: {frame}")
        await asyncio.sleep(0.1)  # nothing announces that Redis is back


@dataclass
class Registrar:
    """Registers batches of mixed types from one tab, and keeps what it got."""

    tab: WireTab
    types: Sequence[str]
    batches: list[list[dict[str, Any]]] = field(default_factory=list)

    async def run(
        self,
        total: int,
        pause: float = 0.02,
        sizes: Sequence[int] = (1, 2, 3, 4, 5),
        seed: int = 0,
    ) -> None:
        """Register ``total`` events, in batches, one batch every ``pause`` s.

        A tab's rate limit is 50 frames/s: a pause of 20 ms plus the round
        trip stays under it.
        """
        rng = random.Random(seed)
        done = 0
        while done < total:
            size = min(rng.choice(sizes), total - done)
            batch = [
                json_event(rng.choice(self.types), [self.tab.handle, done + n])
                for n in range(size)
            ]
            self.batches.append(await register(self.tab, batch))
            done += size
            await asyncio.sleep(pause)  # a steady rate: nothing to await

    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]


def matches(query_types: Sequence[str], event_type: str) -> bool:
    """Whether a query type (``?`` one segment, a last ``*`` any rest) matches.

    Written here again, from the spec, so that the tests do not take the
    server's word for it.
    """
    segments = event_type.split("/")
    for query_type in query_types:
        query = query_type.split("/")
        if query[-1] == "*":
            query, rest = query[:-1], True
        else:
            rest = False
        if len(segments) < len(query) or (not rest and len(segments) != len(query)):
            continue
        if all(q in ("?", s) for q, s in zip(query, segments, strict=False)):
            return True
    return False


def matching(
    registrars: Iterable[Registrar], query_types: Sequence[str], after: Id = (0, 0)
) -> list[Id]:
    """The registered ids (after ``after``) that ``query_types`` match, in order."""
    return sorted(
        eid(event["id"])
        for registrar in registrars
        for event in registrar.events()
        if matches(query_types, event["type"]) and eid(event["id"]) > after
    )


def strictly_increasing(ids: Sequence[Id]) -> bool:
    return all(x < y for x, y in itertools.pairwise(ids))


def check_batches(
    got: Sequence[Got], registrars: Iterable[Registrar], query_types: Sequence[str]
) -> int:
    """Each batch's matching events came one after the other, with consecutive
    ids and one timestamp; return how many batches were split across frames."""
    at = {g.id: n for n, g in enumerate(got)}
    frame = {g.id: g.frame for g in got}
    split = 0
    for registrar in registrars:
        for batch in registrar.batches:
            ids = [eid(e["id"]) for e in batch]
            assert [i[1] - ids[0][1] for i in ids] == list(range(len(ids))), ids
            assert {i[0] for i in ids} == {ids[0][0]}
            assert len({e["timestamp"] for e in batch}) == 1
            mine = [eid(e["id"]) for e in batch if matches(query_types, e["type"])]
            places = [at[i] for i in mine]
            if places:
                wanted = list(range(places[0], places[0] + len(places)))
                assert places == wanted, f"batch {mine} came at {places}"
            split += len({frame[i] for i in mine}) > 1
    return split


# 1. replay across reconnections, alternating nodes
@dataclass
class Round:
    node: str
    answer: dict[str, Any]
    got: list[Got]


async def reconnecting_subscriber(
    nodes: Nodes,
    nodes_by_turn: Sequence[Node],
    headers: dict[str, str],
    first: tuple[WireTab, Feed, dict[str, Any]],
    types: list[str],
    rounds: int,
    window: tuple[float, float],
    done: asyncio.Event,
    final_ids: Callable[[], list[Id]],
    seed: int = 0,
) -> list[Round]:
    """Read for a while, drop the socket, resume on the next node; again.

    ``first`` is the first tab, its feed and its subscribe answer. Returns
    every round (its answer, what came).
    """
    rng = random.Random(seed)
    first_tab, feed, answer = first
    epoch: str = answer["epoch"]
    last: str = answer["position"]
    history: list[Round] = [Round("first", answer, feed.got)]
    turn = 0

    async def read_then_drop(feed: Feed, tab: WireTab, span: float) -> None:
        await asyncio.sleep(span)  # a random stretch of live reading
        await tab.close()  # what was in flight is lost to this tab
        await feed.close()

    await read_then_drop(feed, first_tab, rng.uniform(*window))
    while True:
        last_round = done.is_set()
        if feed.got:
            last = text(feed.got[-1].id)
        turn += 1
        node = nodes_by_turn[turn % len(nodes_by_turn)]
        tab = await nodes.tab(node, headers)
        assert tab.handle == first_tab.handle  # the same session, on another node
        feed = nodes.feed(tab)
        answer = await tab.ok("subscribe", types=types, since=last, epoch=epoch)
        assert answer["recovered"] is True, answer
        assert answer["epoch"] == epoch
        history.append(Round(node_id(node), answer, feed.got))
        if last_round or turn >= rounds:
            await done.wait()
            await feed.wait(caught_up(feed, eid(last), final_ids()[-1]))
            await asyncio.sleep(0.2)  # room for a duplicate to show
            break
        await read_then_drop(feed, tab, rng.uniform(*window))
    return history


def caught_up(feed: Feed, since: Id, end: Id) -> Callable[[], bool]:
    """Whether ``feed`` (resumed after ``since``) got up to ``end``."""
    return lambda: (feed.got[-1].id if feed.got else since) >= end


def check_rounds(rounds: list[Round], expected: list[Id]) -> None:
    received = [g.id for r in rounds for g in r.got]
    assert strictly_increasing(received), "a duplicate or a step back"
    assert not (set(expected) - set(received)), (
        f"{len(set(expected) - set(received))} events never came"
    )
    assert received == expected
    for r in rounds[1:]:
        position = eid(r.answer["position"])
        kinds = [g.replay for g in r.got]
        assert kinds == sorted(kinds, reverse=True), "a replayed event after a live one"
        # the replay is what the log held when it subscribed, the rest is live
        assert all(g.replay == (g.id <= position) for g in r.got), r.node


async def replay_across_reconnections(
    nodes: Nodes,
    url: str,
    prefix: str,
    registrar_on: str,
    total: int,
    rounds: int,
    window: tuple[float, float],
) -> None:
    a = await nodes.a(url, prefix)
    b: Node = (
        await nodes.b(url) if registrar_on == "process" else await nodes.a(url, prefix)
    )
    headers, first = await nodes.login(a)
    registrar = Registrar(await nodes.tab(b), ["feed/x", "feed/y/z", "noise/x"])
    await register(registrar.tab, [json_event("noise/x", "before")])
    done = asyncio.Event()
    types = ["feed/*"]
    feed = nodes.feed(first)
    answer = await first.ok("subscribe", types=types)
    assert answer["recovered"] is None
    assert answer["position"] is not None
    subscriber = asyncio.create_task(
        reconnecting_subscriber(
            nodes,
            [a, b],
            headers,
            (first, feed, answer),
            types,
            rounds,
            window,
            done,
            lambda: matching([registrar], ["feed/*"]),
        )
    )
    async with asyncio.timeout(LONG * 3):
        await registrar.run(total)
        done.set()
        history = await subscriber
    expected = matching([registrar], ["feed/*"], eid(answer["position"]))
    assert len(history) >= min(rounds, 3)
    check_rounds(history, expected)
    replayed = sum(g.replay for r in history for g in r.got)
    print(
        f"{len(expected)} events over {len(history)} connections, "
        f"{replayed} of them replayed"
    )
    assert replayed > 0  # the reconnections did miss events live


@pytest.mark.parametrize("registrar_on", ["in-process", "process"])
async def test_a_subscriber_reconnecting_on_alternating_nodes_misses_nothing(
    nodes: Nodes, redis_server: RedisServer, prefix: str, registrar_on: str
) -> None:
    await replay_across_reconnections(
        nodes, redis_server.url, prefix, registrar_on, 400, 10, (0.1, 0.35)
    )


@pytest.mark.soak
@pytest.mark.parametrize("registrar_on", ["in-process", "process"])
async def test_soak_a_subscriber_reconnecting_many_times_misses_nothing(
    nodes: Nodes, redis_server: RedisServer, prefix: str, registrar_on: str
) -> None:
    await replay_across_reconnections(
        nodes, redis_server.url, prefix, registrar_on, 4000, 120, (0.05, 0.5)
    )


# 2. live across nodes
async def test_live_events_reach_every_node_s_subscribers_in_order_once(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    a2 = await nodes.a(url, prefix)
    b = await nodes.b(url)
    types = ["live/*", "x/?/z"]
    feeds: list[Feed] = []
    for node in (a, a2, b, b):
        tab = await nodes.tab(node)
        feed = nodes.feed(tab)
        answer = await tab.ok("subscribe", types=types)
        assert answer["recovered"] is None
        feeds.append(feed)
    kinds = ["live/a", "live/b/c", "x/q/z", "x/q/z/w", "other", "xx/q/z"]
    registrars = [Registrar(await nodes.tab(node), kinds) for node in (b, b, a, a2)]
    async with asyncio.timeout(LONG):
        await asyncio.gather(
            *(r.run(150, sizes=(1, 2, 6), seed=n) for n, r in enumerate(registrars))
        )
    expected = matching(registrars, types)
    for feed in feeds:
        await feed.has(expected, PROMPT)
    await asyncio.sleep(0.2)  # room for a duplicate to show
    for feed in feeds:
        assert feed.missed == 0
        assert not any(g.replay for g in feed.got)
        assert strictly_increasing(feed.ids())
        assert feed.ids() == expected
        assert {g.type.rsplit("/", 1)[0] for g in feed.got} <= {"live", "live/b", "x/q"}
        split = check_batches(feed.got, registrars, types)
        print(f"{len(expected)} events, {split} batches split across frames")
    # the server API of a node in this process sees the same, in order
    subscription = await registry(a).events.subscribe([("live", "*")])
    more = await register(
        registrars[0].tab, [json_event("live/a", n) for n in range(3)]
    )
    got = [await asyncio.wait_for(anext(subscription), PROMPT) for _ in more]
    assert [str(e.id) for e in got] == [e["id"] for e in more]
    subscription.close()


# 3. Redis restarted empty
async def subscribe_when_back(tab: WireTab, **args: Any) -> dict[str, Any]:
    """Subscribe; retry while the log is unavailable (Redis coming back)."""
    deadline = time.monotonic() + LONG
    while True:
        frame = await tab.call("subscribe", **args)
        if frame["op"] == "result":
            answer: dict[str, Any] = frame["data"]
            return answer
        assert frame["code"] == "unavailable", frame
        assert time.monotonic() < deadline, frame
        await asyncio.sleep(0.1)  # nothing announces that Redis is back


@pytest.mark.parametrize("before", ["delivered-before", "none-delivered-before"])
async def test_redis_restarted_empty_tells_subscribers_and_goes_on_in_a_new_epoch(
    nodes: Nodes, own_redis_server: RedisServer, prefix: str, before: str
) -> None:
    """Subscribers on A and B; Redis restarts empty. With
    ``none-delivered-before`` the log's events were registered before A and B
    started, so their fan-out never delivered one before the restart."""
    url = own_redis_server.url
    seed = await nodes.a(url, prefix, command_timeout=1.0)
    registrar = Registrar(await nodes.tab(seed), ["r/a"])
    if before == "none-delivered-before":
        await registrar.run(5)
    a = await nodes.a(url, prefix, command_timeout=1.0)
    b = await nodes.b(url)
    subscribers: list[tuple[WireTab, Feed, dict[str, Any]]] = []
    for node in (a, b):
        tab = await nodes.tab(node)
        feed = nodes.feed(tab)
        subscribers.append((tab, feed, await tab.ok("subscribe", types=["r/*"])))
    old_epoch = subscribers[0][2]["epoch"]
    assert subscribers[1][2]["epoch"] == old_epoch
    if before == "delivered-before":
        await registrar.run(5)
        for _, feed, _ in subscribers:
            await feed.has(matching([registrar], ["r/*"]))
    last_seen = text(matching([registrar], ["r/*"])[-1])
    own_redis_server.restart()  # empty: the log and its epoch are gone
    # a tab resuming now, before any new event, is told at once
    early: list[Feed] = []
    for node in (a, b):
        tab = await nodes.tab(node)
        early.append(nodes.feed(tab))
        answer = await subscribe_when_back(
            tab, types=["r/*"], since=last_seen, epoch=old_epoch
        )
        assert answer["recovered"] is False, answer
        assert answer["reason"]
        assert answer["epoch"] != old_epoch
        assert answer["position"] is None  # the new log is empty
    new_epoch = answer["epoch"]
    after = Registrar(registrar.tab, ["r/b"])
    after.batches.append(await register(after.tab, [json_event("r/b", 0)], LONG))
    new_ids = matching([after], ["r/*"])
    for _, feed, answer in subscribers:
        await feed.has(new_ids)
        assert feed.lost, (
            f"the new epoch's event came to subscription {answer['subscription']} "
            f"(of epoch {old_epoch}) with no events_lost frame before it"
        )
        (lost,) = feed.lost
        assert lost["subscription"] == answer["subscription"]
        assert lost["epoch"] == new_epoch
        assert lost["reason"]
        # the new events came after the events_lost frame, of its epoch
        assert [g.epoch for g in feed.got if g.id in new_ids] == [new_epoch]
    for feed in early:
        await feed.has(new_ids)
        assert feed.ids() == new_ids
        assert not feed.got[0].replay
        assert not feed.lost, (
            f"a subscription made in epoch {new_epoch} was told it lost it: {feed.lost}"
        )
    # a tab resuming from the old epoch later is told too, and goes on live
    for node in (a, b):
        tab = await nodes.tab(node)
        feed = nodes.feed(tab)
        answer = await tab.ok(
            "subscribe", types=["r/*"], since=last_seen, epoch=old_epoch
        )
        assert answer["recovered"] is False, answer
        assert answer["reason"]
        assert answer["epoch"] == new_epoch
        assert answer["position"] == text(matching([after], ["r/*"])[-1])
        more = await register(after.tab, [json_event("r/c", 1)])
        await feed.has([eid(more[0]["id"])], PROMPT)
        assert feed.ids() == [eid(more[0]["id"])]
        assert not feed.got[0].replay
        after.batches.append(more)
    for feed in [s[1] for s in subscribers] + early:
        await feed.has(matching([after], ["r/*"]), PROMPT)
        assert strictly_increasing(feed.ids())


# 4. a node's follower connection cut
async def follower_connection(
    admin: aioredis.Redis, prefix: str, node: str, other_than: int | None = None
) -> int:
    """The client id of ``node``'s follower connection (wait, bounded, for one
    other than ``other_than``)."""
    name = f"{{{prefix}}}:events:{node}"
    found: list[int] = []

    async def connected() -> bool:
        for client in await admin.client_list():
            if client.get("name") == name and int(client["id"]) != other_than:
                found.append(int(client["id"]))
                return True
        return False

    await until(connected, PROMPT)
    return found[-1]


async def test_a_node_whose_follower_connection_is_killed_catches_up(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    a2 = await nodes.a(url, prefix)
    b = await nodes.b(url)
    feeds: list[Feed] = []
    for node in (a, b):
        tab = await nodes.tab(node)
        feeds.append(nodes.feed(tab))
        await tab.ok("subscribe", types=["k/*"])
    registrar = Registrar(await nodes.tab(a2), ["k/a", "k/b", "n/a"])
    admin = aioredis.Redis.from_url(url)
    kills = 0
    try:
        running = asyncio.create_task(registrar.run(300, pause=0.015))
        async with asyncio.timeout(LONG):
            while not running.done():
                for node in (a, b):
                    before = await follower_connection(admin, prefix, node_id(node))
                    await admin.client_kill_filter(_id=str(before))
                    kills += 1
                    # it connects again (and reads on from where it was)
                    await follower_connection(admin, prefix, node_id(node), before)
                    await asyncio.sleep(0.15)  # let some events come live
            await running
            expected = matching([registrar], ["k/*"])
            for feed in feeds:
                await feed.has(expected)
    finally:
        await admin.aclose()
    await asyncio.sleep(0.2)  # room for a duplicate to show
    assert kills >= 4
    for feed in feeds:
        assert feed.ids() == expected
        assert not feed.lost
        assert feed.missed == 0


async def test_redis_restarted_with_its_data_kept_loses_no_event(
    nodes: Nodes, prefix: str
) -> None:
    server = RedisServer(config={"appendonly": "yes", "appendfsync": "always"})
    server.start()
    try:
        url = server.url
        a = await nodes.a(url, prefix, command_timeout=1.0)
        b = await nodes.b(url)
        feeds: list[Feed] = []
        answers = []
        for node in (a, b):
            tab = await nodes.tab(node)
            feeds.append(nodes.feed(tab))
            answers.append(await tab.ok("subscribe", types=["k/*"]))
        registrar = Registrar(await nodes.tab(a), ["k/a"])
        registrar.batches.append(await register(registrar.tab, [json_event("k/a", 0)]))
        for feed in feeds:
            await feed.has(matching([registrar], ["k/*"]))
        server.stop()
        await asyncio.sleep(0.5)  # Redis is down a while
        server.start()
        # registered before the nodes follow again: they catch up
        async with asyncio.timeout(LONG):
            for n in range(1, 30):
                batch = [json_event("k/a", n), json_event("k/b", n)]
                registrar.batches.append(await register(registrar.tab, batch, LONG))
            expected = matching([registrar], ["k/*"])
            for feed in feeds:
                await feed.has(expected)
        await asyncio.sleep(0.2)  # room for a duplicate to show
        for feed in feeds:
            assert feed.ids() == expected
            assert not feed.lost
        # the log is the same one: a resume from before the outage recovers
        tab = await nodes.tab(b)
        feed = nodes.feed(tab)
        answer = await tab.ok(
            "subscribe",
            types=["k/*"],
            since=text(expected[0]),
            epoch=answers[0]["epoch"],
        )
        assert answer["recovered"] is True, answer
        await feed.has(expected[1:], PROMPT)
        assert feed.ids() == expected[1:]
        assert all(g.replay for g in feed.got)
    finally:
        await nodes.close()
        server.cleanup()


# 5. retention, across nodes
@pytest.mark.parametrize("by", ["count", "age"])
async def test_a_resume_from_before_the_retention_is_not_recovered_on_any_node(
    nodes: Nodes, redis_server: RedisServer, prefix: str, by: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    retention = (
        EventRetention(max_count=30, max_age=None)
        if by == "count"
        else EventRetention(max_count=10_000, max_age=0.5)
    )
    registry(a).backend.event_store.retention = retention
    a2 = await nodes.a(url, prefix)
    b = await nodes.b(url)
    tab = await nodes.tab(a)
    if by == "count":
        old = await register(tab, [json_event("t/a", n) for n in range(60)])
        kept = old[30:]
    else:
        old = await register(tab, [json_event("t/a", n) for n in range(10)])
        await asyncio.sleep(retention.max_age or 0)  # age: nothing to await
        await asyncio.sleep(0.1)
        kept = await register(tab, [json_event("t/a", n) for n in range(10, 15)])
    first_kept = kept[0]["id"]
    epoch = (await tab.ok("subscribe", types=["t/*"]))["epoch"]
    for node in (a2, b):
        too_old = await nodes.tab(node)
        answer = await too_old.ok(
            "subscribe", types=["t/*"], since=old[2]["id"], epoch=epoch
        )
        assert answer["recovered"] is False, answer
        assert "retention" in answer["reason"]
        assert answer["position"] == kept[-1]["id"]
        # the log still holds everything after the last trimmed id
        resumed = await nodes.tab(node)
        feed = nodes.feed(resumed)
        at_edge = old[len(old) - 1]["id"] if by == "age" else old[29]["id"]
        answer = await resumed.ok(
            "subscribe", types=["t/*"], since=at_edge, epoch=epoch
        )
        assert answer["recovered"] is True, answer
        await feed.has([eid(e["id"]) for e in kept], PROMPT)
        assert feed.ids() == [eid(e["id"]) for e in kept]
        assert all(g.replay for g in feed.got)
        # a query there sees only what is kept
        series = await resumed.ok(
            "query_timeseries", event_types=["t/*"], order="ascending"
        )
        assert [e["id"] for e in series["events"]] == [e["id"] for e in kept]
        assert first_kept == series["events"][0]["id"]


async def test_a_node_that_fell_behind_the_retention_tells_its_subscribers(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    """Node B is stalled while node A registers more than the retention keeps:
    B's follower cannot hand on what was trimmed. Its subscriber must not be
    sent a gap as if nothing were missing."""
    url = redis_server.url
    a = await nodes.a(url, prefix)
    registry(a).backend.event_store.retention = EventRetention(20, None)
    b = await nodes.b(url)
    tab = await nodes.tab(b)
    feed = nodes.feed(tab)
    await tab.ok("subscribe", types=["g/*"])
    registrar = Registrar(await nodes.tab(a), ["g/a"])
    registrar.batches.append(await register(registrar.tab, [json_event("g/a", 0)]))
    await feed.has(matching([registrar], ["g/*"]))
    b.process.send_signal(signal.SIGSTOP)
    try:
        for n in range(1, 81):
            registrar.batches.append(
                await register(registrar.tab, [json_event("g/a", n)])
            )
            await asyncio.sleep(0.005)  # spread: B's XREAD may take one each
    finally:
        b.process.send_signal(signal.SIGCONT)
    expected = matching([registrar], ["g/*"])
    await feed.has(expected[-1:])
    await asyncio.sleep(0.2)  # anything else it would be sent
    ids = feed.ids()
    assert strictly_increasing(ids)
    missing = sorted(set(expected) - set(ids))
    told = bool(feed.lost) or feed.missed > 0
    assert not missing or told, (
        f"B's subscriber silently missed {len(missing)} of {len(expected)} events "
        f"(trimmed before B's follower read them), with no events_lost or missed"
    )


# 6. queries across nodes
async def test_queries_see_what_the_other_node_registered(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    on_a, on_b = await nodes.tab(a), await nodes.tab(b)
    from_b = await register(
        on_b,
        [
            {"type": "q/a", "source_timestamp": 10.0},
            {"type": "q/b", "source_timestamp": 30.0},
        ],
    )
    from_a = await register(on_a, [{"type": "q/c", "source_timestamp": 20.0}])
    from_b += await register(on_b, [json_event("q/a", "last"), json_event("z", 0)])
    by_id = {e["id"]: e for e in from_a + from_b}
    for tab in (on_a, on_b):
        latest = await tab.ok("query_latest", event_types=["q/*"])
        assert latest["more_follows"] is False
        assert {e["type"]: e["id"] for e in latest["events"]} == {
            "q/a": from_b[2]["id"],
            "q/b": from_b[1]["id"],
            "q/c": from_a[0]["id"],
        }
        assert [e for e in latest["events"] if e["type"] == "q/a"] == [from_b[2]]
        every = await tab.ok("query_timeseries", order="ascending")
        ids = [e["id"] for e in every["events"]]
        assert ids == sorted(by_id, key=eid)
        assert every["events"] == [by_id[i] for i in ids]
        by_source = await tab.ok(
            "query_timeseries",
            event_types=["q/*"],
            order_by="source_timestamp",
            source_t_from=15.0,
            order="ascending",
        )
        assert [e["type"] for e in by_source["events"]] == ["q/c", "q/b"]
        page = await tab.ok(
            "query_timeseries", event_types=["q/*"], max_results=2, order="ascending"
        )
        assert page["more_follows"] is True
        rest = await tab.ok(
            "query_timeseries",
            event_types=["q/*"],
            order="ascending",
            last_event_id=page["events"][-1]["id"],
        )
        assert [e["id"] for e in page["events"] + rest["events"]] == [
            i for i in ids if not by_id[i]["type"].startswith("z")
        ]
    latest_a = await registry(a).events.query_latest()
    assert {str(e.id) for e in latest_a.events} >= {from_b[1]["id"], from_b[3]["id"]}


# 7. a node killed or stalled
async def test_a_killed_node_leaves_the_other_node_s_subscribers_whole(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    a2 = await nodes.a(url, prefix)
    b = await nodes.b(url)
    feeds: list[Feed] = []
    for node in (a, a, b, b):
        tab = await nodes.tab(node)
        feeds.append(nodes.feed(tab))
        await tab.ok("subscribe", types=["s/*"])
    on_a, on_b = feeds[:2], feeds[2:]
    here = Registrar(await nodes.tab(a2), ["s/x", "s/y"])
    there = Registrar(await nodes.tab(b), ["s/z"])
    running_here = asyncio.create_task(here.run(200, pause=0.01))
    running_there = asyncio.create_task(there.run(1000, seed=1))
    async with asyncio.timeout(LONG):
        await on_a[0].wait(lambda: len(on_a[0].got) >= 100)
        b.process.send_signal(signal.SIGKILL)
        await b.process.wait()
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await running_there  # B's registrar ends with its node
        assert not running_here.done()  # A's went on meanwhile
        await running_here
        assert not here.tab.closed.is_set()
        expected = matching([here, there], ["s/*"])
        for feed in on_a:
            await feed.has(expected)
        for feed in on_b:
            await asyncio.wait_for(feed.tab.closed.wait(), PROMPT)
    await asyncio.sleep(0.2)  # room for a duplicate to show
    for feed in on_a:
        ids = feed.ids()
        assert strictly_increasing(ids)
        # at most the batch B was registering when it died came unanswered
        extra = [g for g in feed.got if g.id not in set(expected)]
        assert len(extra) <= 5, extra
        assert all(g.type == "s/z" for g in extra), extra
        assert [i for i in ids if i in set(expected)] == expected
        assert not feed.lost
        assert feed.missed == 0
    for feed in on_b:
        assert strictly_increasing(feed.ids())
        assert set(feed.ids()) <= set(expected)
    # A goes on registering and delivering after B is reaped
    more = await register(here.tab, [json_event("s/x", "after")])
    await on_a[0].has([eid(more[0]["id"])], PROMPT)


async def test_a_stalled_node_catches_up_when_it_resumes(
    nodes: Nodes, redis_server: RedisServer, prefix: str
) -> None:
    url = redis_server.url
    a = await nodes.a(url, prefix)
    b = await nodes.b(url)
    feeds: list[Feed] = []
    for node in (a, b, b):
        tab = await nodes.tab(node)
        feeds.append(nodes.feed(tab))
        await tab.ok("subscribe", types=["p/*"])
    on_a, on_b = feeds[0], feeds[1:]
    registrar = Registrar(await nodes.tab(a), ["p/a", "p/b", "o/a"])
    await registrar.run(20)
    for feed in feeds:
        await feed.has(matching([registrar], ["p/*"]))
    b.process.send_signal(signal.SIGSTOP)
    stalled_at = time.monotonic()
    try:
        # past B's node TTL: A reaps it meanwhile
        while time.monotonic() - stalled_at < NODE_TTL * 1.5:
            before = len(registrar.events())
            await registrar.run(5)
            # A's subscriber is not held up by the stalled node
            wanted = matching([registrar], ["p/*"])
            await on_a.has(wanted, PROMPT)
            assert len(registrar.events()) > before
        assert all(len(f.got) < len(on_a.got) for f in on_b)
    finally:
        b.process.send_signal(signal.SIGCONT)
    await registrar.run(20, seed=3)
    expected = matching([registrar], ["p/*"])
    async with asyncio.timeout(LONG):
        for feed in feeds:
            await feed.has(expected)
    await asyncio.sleep(0.2)  # room for a duplicate to show
    for feed in feeds:
        assert feed.ids() == expected
        assert not feed.lost
        assert feed.missed == 0
        assert not any(g.replay for g in feed.got)
