"""The event bus under attack and misuse: poison payloads, floods, faults.

Each test pins down a promise of docs/events.rst that a review found broken
(and that is fixed) or that held up. Real servers and sockets, bounded waits.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import ProtocolLimits, RedisSessionWSRegistry, SessionWSRegistry
from aiohttp_session_ws.backends.memory_events import MemoryEventStore
from aiohttp_session_ws.events import (
    EventId,
    EventPayloadJson,
    QueryTimeseriesParams,
    RegisterEvent,
)

from .apps import Client, build_app, registry_of
from .redis_server import RedisServer
from .waiting import until
from .wire import TIMEOUT, WireTab, allow_all, open_tab


def reg(text: str, data: Any = None) -> RegisterEvent:
    return RegisterEvent(tuple(text.split("/")), payload=EventPayloadJson(data))


async def node_with(aiohttp_client: AiohttpClient, **options: Any) -> Client:
    options.setdefault("authorize", allow_all)
    return await aiohttp_client(build_app(SessionWSRegistry(**options)))


async def raw_call(tab: WireTab, text: str, request_id: int) -> dict[str, Any]:
    """Send a frame written by hand (JSON with NaN, escapes...); its reply."""
    tab._waiting[request_id] = asyncio.get_running_loop().create_future()
    await tab.ws.send_str(text)
    return await tab.reply(request_id)


async def event_frames_until(
    tab: WireTab, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The events of ``events`` frames until ``count`` came (bounded)."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            frame = await tab.frames.get()
            if frame.get("op") == "events":
                found.extend(frame["events"])
    return found


# --- poison payloads: JSON the client may send but the server cannot encode


@pytest.mark.parametrize(
    "data",
    ["NaN", "Infinity", "1e400", '"\\ud800"'],
    ids=["nan", "infinity", "overflow-to-inf", "lone-surrogate"],
)
async def test_a_client_cannot_register_a_payload_the_server_cannot_send(
    aiohttp_client: AiohttpClient, data: str
) -> None:
    """A payload must be refused at register, or be deliverable to everyone.

    Python's json.loads takes NaN/Infinity/1e400/lone surrogates; the
    server's encoder refuses them (allow_nan=False, UTF-8): the event would
    sit in the log and break every fan-out, replay and query that meets it.
    """
    node = await node_with(aiohttp_client)
    watcher = await open_tab(node, "/live")
    other = await open_tab(node, "/live")
    attacker = await open_tab(node, "/live")
    sub = await watcher.ok("subscribe", types=["p/*"])
    await other.ok("subscribe", types=["p/*"])
    reply = await raw_call(
        attacker,
        '{"op":"register_events","id":1,"events":[{"type":"p/x",'
        '"payload":{"type":"json","data":' + data + "}}]}",
        1,
    )
    problems: list[str] = []
    if reply["op"] == "error":
        assert reply["code"] == "bad_frame", reply
    else:
        problems.append("registered")
    await attacker.ok("register_events", events=[{"type": "p/y"}])
    got = await event_frames_until(watcher, 1)
    if [e["type"] for e in got] != ["p/y"]:
        problems.append(f"live: {got}")
    latest = await watcher.call("query_latest")
    if latest["op"] != "result":
        problems.append(f"query_latest: {latest.get('code')}")
    series = await watcher.call("query_timeseries")
    if series["op"] != "result":
        problems.append(f"query_timeseries: {series.get('code')}")
    replay = await open_tab(node, "/live")
    await replay.ok("subscribe", types=["p/*"], since="0-0", epoch=sub["epoch"])
    try:
        got = await event_frames_until(replay, 1, timeout=1.0)
    except TimeoutError:
        problems.append("replay from 0-0 never sent p/y (gap, recovered=True)")
    assert not problems, problems


async def test_a_poison_event_from_server_code_does_not_silence_the_bus(
    aiohttp_client: AiohttpClient,
) -> None:
    """Server code registers a NaN (memory backend: no encoding at register).

    Either register raises (as the Redis backend's json.dumps would for a
    set), or the event reaches every subscriber, replay and query.
    """
    node = await node_with(aiohttp_client)
    registry = registry_of(node)
    tab = await open_tab(node, "/live")
    sub = await tab.ok("subscribe", types=["s/*"])
    try:
        await registry.events.register([reg("s/bad", {"x": float("nan")})])
    except (ValueError, TypeError):
        raised = True
    else:
        raised = False
    await registry.events.register([reg("s/good", 1)])
    got = await event_frames_until(tab, 1)
    assert got[-1]["type"] == "s/good"
    assert raised, "a payload no client can be sent was registered"
    # a replay over it
    late = await open_tab(node, "/live")
    await late.ok("subscribe", types=["s/*"], since="0-0", epoch=sub["epoch"])
    got = await event_frames_until(late, 1)
    assert got[-1]["type"] == "s/good"


# --- replay size and cost


class CountingReads:
    """Wraps a store's read: what each call was asked and gave."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.inner = store.read
        self.calls: list[tuple[EventId | None, int, int]] = []
        store.read = self.read

    async def read(self, after: EventId | None, limit: int) -> Any:
        result = await self.inner(after, limit)
        self.calls.append((after, limit, len(result.events)))
        return result


async def test_a_prompt_reader_gets_a_replay_of_a_few_megabytes(
    aiohttp_client: AiohttpClient,
) -> None:
    """A client that reads at once must get its replay (docs: a client that
    *cannot keep up* with its replay overflows). 2,000 retained events of
    ~3 KB (6 MB, within the default retention of 10,000): the memory
    backend's replay never yields, so every page piles up in the queue
    (max_queue_bytes 4 MB) and the connection is closed with 1013."""
    node = await node_with(aiohttp_client)
    registry = registry_of(node)
    blob = "x" * 3000
    for _ in range(4):
        await registry.events.register([reg("big/a", blob)] * 500)
    tab = await open_tab(node, "/live")
    first = await tab.ok("subscribe", types=["nothing"])
    sub = await tab.ok("subscribe", types=["big/*"], since="0-0", epoch=first["epoch"])
    assert sub["recovered"] is True
    try:
        got = await event_frames_until(tab, 2000, timeout=4)
    except TimeoutError:
        got = []
    assert len(got) == 2000, (
        f"closed={tab.closed.is_set()} code={tab.ws.close_code} "
        f"drops={registry.counters.overflow_closes}"
    )


async def test_a_replay_stops_reading_once_its_connection_is_gone(
    aiohttp_client: AiohttpClient,
) -> None:
    """A replay to a connection closed for overflow (1013) must not read and
    encode the rest of the retention: each such subscribe costs the whole
    log otherwise (up to 10,000 events, decoded and encoded)."""
    node = await node_with(
        aiohttp_client, limits=ProtocolLimits(max_queue_bytes=64 * 1024)
    )
    registry = registry_of(node)
    for _ in range(10):
        await registry.events.register([reg("big/a", "y" * 200)] * 500)
    reads = CountingReads(registry.backend.event_store)
    tab = await open_tab(node, "/live")
    epoch = (await registry.events.subscribe([("big", "*")])).epoch
    await tab.ok("subscribe", types=["big/*"], since="0-0", epoch=epoch)
    await tab.close()  # gone while its replay runs
    await until(lambda: registry.stats().event_subscriptions <= 1)
    pages = [c for c in reads.calls if c[0] is not None]
    assert len(pages) <= 3, f"{len(pages)} pages read for a gone peer"


async def test_a_subscribe_without_since_reads_no_history(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    """A live-only subscribe needs the log's position and epoch, not events;
    _start reads PAGE (500) events (with payloads) from Redis each time."""
    registry = RedisSessionWSRegistry(
        redis_server.url, prefix=prefix, authorize=allow_all
    )
    node = await aiohttp_client(build_app(registry))
    await registry.events.register([reg("h/a", "z" * 2000)] * 500)
    reads = CountingReads(registry.backend.event_store)
    tab = await open_tab(node, "/live")
    await tab.ok("subscribe", types=["h/*"])
    await registry.events.subscribe([("h", "*")])
    assert [c for c in reads.calls if c[2]] == [], reads.calls


async def test_query_timeseries_cost_is_bounded_by_what_it_returns(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    """max_results=1 and a type that matches nothing still reads and decodes
    the whole retention (10,000 events, 20 round trips) per query."""
    registry = RedisSessionWSRegistry(
        redis_server.url, prefix=prefix, authorize=allow_all
    )
    await aiohttp_client(build_app(registry))
    for _ in range(10):
        await registry.events.register([reg("q/a", "w" * 100)] * 1000)
    # the first query reads the log into the node's mirror; later ones do not
    await registry.events.query_timeseries(QueryTimeseriesParams(max_results=1))
    reads = CountingReads(registry.backend.event_store)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await registry.events.query_timeseries(
        QueryTimeseriesParams(event_types=[("none",)], max_results=1)
    )
    took = loop.time() - start
    assert result.events == []
    read = sum(c[2] for c in reads.calls)
    assert read <= 1000, f"one query read {read} events in {took:.3f}s"


# --- resume points that are not in the log


async def test_a_since_in_the_future_on_an_empty_log_is_not_recovered(
    aiohttp_client: AiohttpClient,
) -> None:
    """An id beyond the log's last is "not in the log": on a non-empty log it
    is refused; on an empty one it is taken as recovered, and every live
    event with a smaller id (all of them, for years) is silently dropped."""
    node = await node_with(aiohttp_client)
    tab = await open_tab(node, "/live")
    probe = await tab.ok("subscribe", types=["nothing"])
    sub = await tab.ok(
        "subscribe", types=["f/*"], since="99999999999999-0", epoch=probe["epoch"]
    )
    await tab.ok("register_events", events=[{"type": "f/a"}])
    try:
        got = await event_frames_until(tab, 1, timeout=1.0)
    except TimeoutError:
        got = []
    assert (sub["recovered"], len(got)) == (False, 1), sub


async def test_a_since_without_epoch_after_the_log_was_lost_is_not_recovered(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    """The log is lost (its keys gone, as after a restart empty) and a new
    one begun; a resume from an old id without ``epoch`` is answered
    recovered=True although the old log's later events are gone."""
    registry = RedisSessionWSRegistry(
        redis_server.url, prefix=prefix, authorize=allow_all
    )
    node = await aiohttp_client(build_app(registry))
    old = await registry.events.register([reg("l/a"), reg("l/b")], with_response=True)
    assert old is not None
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = await admin.keys(f"{{{prefix}}}:events*")
        await admin.delete(*keys)
    finally:
        await admin.aclose()
    await registry.events.register([reg("l/c")])
    tab = await open_tab(node, "/live")
    sub = await tab.ok("subscribe", types=["l/*"], since=str(old[0].id))
    assert sub["recovered"] is False, sub


async def test_an_epoch_change_between_replay_pages_is_noticed(
    aiohttp_client: AiohttpClient,
) -> None:
    """The log is lost while a replay reads it page by page: the pages after
    are of another log, and the subscription must not stay recovered."""
    node = await node_with(aiohttp_client)
    registry = registry_of(node)
    await registry.events.register([reg("e/a")] * 600)
    store = registry.backend.event_store
    assert isinstance(store, MemoryEventStore)
    log = store.log
    reads = CountingReads(store)
    inner = reads.read

    async def read(after: EventId | None, limit: int) -> Any:
        if len(reads.calls) == 1:
            log.epoch = "a-new-log"  # lost between the first page and the next
        return await inner(after, limit)

    store.read = read  # type: ignore[method-assign]
    subscription = await registry.events.subscribe(
        [("e", "*")], since=EventId(0, 0), epoch=log.epoch
    )
    async with asyncio.timeout(TIMEOUT):  # the replay runs as it is read
        async for _ in subscription:
            if subscription.recovered is False:
                break
    assert (subscription.recovered, subscription.epoch) == (False, "a-new-log"), (
        subscription.recovered,
        subscription.epoch,
    )
    subscription.close()


async def test_a_server_replay_larger_than_max_buffer_can_be_consumed(
    aiohttp_client: AiohttpClient,
) -> None:
    """subscribe() runs the whole replay before it returns, so a consumer
    cannot read while it runs: a replay of more than max_buffer events fails
    the subscription with SubscriptionOverflowError before its first event
    (docs: "a consumer that falls more than max_buffer events behind")."""
    node = await node_with(aiohttp_client)
    registry = registry_of(node)
    await registry.events.register([reg("m/a")] * 300)
    epoch = (await registry.events.subscribe([("m", "*")])).epoch
    subscription = await registry.events.subscribe(
        [("m", "*")], since=EventId(0, 0), epoch=epoch, max_buffer=100
    )
    got = 0
    async with asyncio.timeout(TIMEOUT):
        async for _ in subscription:
            got += 1
            if got == 300:
                break
    assert got == 300


# --- what held


async def test_held_the_policy_sees_every_type_and_bad_data_is_refused(
    aiohttp_client: AiohttpClient,
) -> None:
    from aiohttp import web

    from aiohttp_session_ws import Action

    def policy(request: web.Request, action: Action) -> bool:
        return action.event_type is not None and action.event_type.startswith("ok")

    node = await aiohttp_client(build_app(SessionWSRegistry(authorize=policy)))
    tab = await open_tab(node, "/live")
    batch = [{"type": "ok/a"}, {"type": "secret/b"}, {"type": "ok/c"}]
    assert (await tab.call("register_events", events=batch))["code"] == "forbidden"
    assert (await tab.call("query_timeseries"))["code"] == "forbidden"
    assert (await tab.call("subscribe", types=["ok/a", "?/*"]))["code"] == "forbidden"
    for bad in [
        {"type": "ok/a", "payload": {"type": "binary", "name": "x", "data": "!!"}},
        {"type": "ok/" + "s/" * 40 + "x"},
        {"type": "ok/a", "source_timestamp": True},
        {"type": "ok/\u0001"},
    ]:
        assert (await tab.call("register_events", events=[bad]))["code"] == "bad_frame"
    too_many = [{"type": "ok/a"}] * 1001
    assert (await tab.call("register_events", events=too_many))["code"] in (
        "limit",
        "bad_frame",
    )
    done = await tab.ok("register_events", events=[{"type": "ok/a"}] * 5, response=True)
    ids = [EventId.parse(e["id"]) for e in done["events"]]
    assert all(b == EventId(a.ms, a.seq + 1) for a, b in itertools.pairwise(ids))
    assert len({e["timestamp"] for e in done["events"]}) == 1
    latest = await tab.ok("query_latest", event_types=["ok/*"])
    assert [e["id"] for e in latest["events"]] == [done["events"][-1]["id"]]
    assert await tab.ok("ping") == {}
