"""The event bus on one node (memory backend): register, subscribe, replay, query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import Action, SessionWSRegistry
from aiohttp_session_ws.backends.base import EventRetention
from aiohttp_session_ws.events import (
    Event,
    EventId,
    EventPayloadBinary,
    EventPayloadJson,
    QueryLatestParams,
    QueryTimeseriesParams,
    RegisterEvent,
)
from aiohttp_session_ws.events.service import SubscriptionOverflowError

from .apps import Client, build_app, registry_of
from .wire import TIMEOUT, WireTab, allow_all, open_tab

Tabs = Callable[..., Awaitable[WireTab]]


@pytest.fixture
async def node(aiohttp_client: AiohttpClient) -> Client:
    registry = SessionWSRegistry(authorize=allow_all, session_events=True)
    return await aiohttp_client(build_app(registry))


@pytest.fixture
def tab(aiohttp_client: AiohttpClient, node: Client) -> Tabs:
    async def open_one() -> WireTab:
        return await open_tab(await aiohttp_client(node.server), "/live")

    return open_one


def reg(text: str, data: Any = None) -> RegisterEvent:
    return RegisterEvent(tuple(text.split("/")), payload=EventPayloadJson(data))


async def events_frames(tab: WireTab, count: int) -> list[dict[str, Any]]:
    """The next ``events`` frames' events, until ``count`` events came."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while len(found) < count:
            frame = await tab.frames.get()
            if frame.get("op") == "events":
                found.extend(frame["events"])
    return found


async def test_a_register_call_gets_consecutive_ids_and_one_timestamp(
    node: Client,
) -> None:
    events = registry_of(node).events
    done = await events.register(
        [reg("a/b", 1), reg("a/c", 2), reg("a/b", 3)], with_response=True
    )
    assert done is not None
    assert [e.payload for e in done] == [EventPayloadJson(n) for n in (1, 2, 3)]
    ids = [e.id for e in done]
    assert ids == sorted(ids)
    assert [i.seq - ids[0].seq for i in ids] == [0, 1, 2]
    assert {i.ms for i in ids} == {ids[0].ms}
    assert len({e.timestamp for e in done}) == 1
    assert await events.register([reg("a/b")]) is None
    later = await events.register([reg("a/b")], with_response=True)
    assert later is not None
    assert later[0].id > ids[-1]
    with pytest.raises(ValueError, match="segment"):
        await events.register([RegisterEvent(("a", "*"))])


async def test_server_subscriptions_get_matching_events_in_order(node: Client) -> None:
    events = registry_of(node).events
    wide = await events.subscribe([("a", "*")])
    narrow = await events.subscribe([("a", "?", "x")])
    seen: list[Event] = []
    called = asyncio.Event()

    async def slow(event: Event) -> None:  # never stalls the others
        seen.append(event)
        called.set()
        await asyncio.Event().wait()

    await events.subscribe([("*",)], on_event=slow)
    await events.register([reg("a/b/x", 1), reg("b", 2), reg("a", 3), reg("a/c/x", 4)])
    got = [await asyncio.wait_for(anext(wide), TIMEOUT) for _ in range(3)]
    assert [e.payload for e in got] == [EventPayloadJson(n) for n in (1, 3, 4)]
    got = [await asyncio.wait_for(anext(narrow), TIMEOUT) for _ in range(2)]
    assert [e.payload for e in got] == [EventPayloadJson(n) for n in (1, 4)]
    await asyncio.wait_for(called.wait(), TIMEOUT)
    assert len(seen) == 1
    wide.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(wide), TIMEOUT)


async def test_a_consumer_that_falls_too_far_behind_is_told(node: Client) -> None:
    events = registry_of(node).events
    subscription = await events.subscribe([("f",)], max_buffer=3)
    await events.register([reg("f") for _ in range(5)])

    async def drain() -> None:
        async for _ in subscription:
            pass

    with pytest.raises(SubscriptionOverflowError):
        await asyncio.wait_for(drain(), TIMEOUT)


async def test_replay_after_an_id_has_no_gap_and_no_duplicate(node: Client) -> None:
    events = registry_of(node).events
    first = await events.register([reg("r", n) for n in range(5)], with_response=True)
    assert first is not None
    epoch = (await events.subscribe([("r",)])).epoch
    subscription = await events.subscribe([("r",)], since=first[1].id, epoch=epoch)
    assert subscription.recovered is True
    await events.register([reg("r", n) for n in range(5, 8)])
    got = [await asyncio.wait_for(anext(subscription), TIMEOUT) for _ in range(6)]
    assert [e.payload for e in got] == [EventPayloadJson(n) for n in range(2, 8)]
    ids = [e.id for e in got]
    assert ids == sorted(set(ids))


async def test_a_lost_history_or_an_old_id_is_not_recovered(
    node: Client,
) -> None:
    events = registry_of(node).events
    store = registry_of(node).backend.event_store
    store.retention = EventRetention(max_count=3, max_age=None)
    old = await events.register([reg("o", n) for n in range(6)], with_response=True)
    assert old is not None
    epoch = (await events.subscribe([("o",)])).epoch
    too_old = await events.subscribe([("o",)], since=old[0].id, epoch=epoch)
    assert too_old.recovered is False
    assert too_old.reason is not None
    assert "retention" in too_old.reason
    other_epoch = await events.subscribe([("o",)], since=old[-1].id, epoch="nope")
    assert other_epoch.recovered is False
    assert other_epoch.reason is not None
    assert "epoch" in other_epoch.reason
    no_epoch = await events.subscribe([("o",)], since=old[-1].id)
    assert no_epoch.recovered is False
    fresh = await events.subscribe([("o",)])
    assert fresh.recovered is None
    assert fresh.position == old[-1].id


async def test_queries_latest_and_timeseries(node: Client) -> None:
    events = registry_of(node).events
    await events.register([reg("q/a", 1), reg("q/b", 2), reg("q/a", 3)])
    latest = await events.query_latest(QueryLatestParams([("q", "*")]))
    assert sorted((e.type, e.payload) for e in latest.events) == [
        (("q", "a"), EventPayloadJson(3)),
        (("q", "b"), EventPayloadJson(2)),
    ]
    series = await events.query_timeseries(
        QueryTimeseriesParams(event_types=[("q", "a")], max_results=1)
    )
    assert [e.payload for e in series.events] == [EventPayloadJson(3)]
    assert series.more_follows


async def test_session_starts_and_ends_are_events(node: Client, tab: Tabs) -> None:
    events = registry_of(node).events
    subscription = await events.subscribe([("session_ws", "session", "*")])
    one = await tab()
    started = await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert started.type == ("session_ws", "session", "started")
    assert isinstance(started.payload, EventPayloadJson)
    assert started.payload.data["session"] == one.handle


# the ops
async def test_a_tab_subscribes_registers_and_replays(node: Client, tab: Tabs) -> None:
    one, two = await tab(), await tab()
    sub = await one.ok("subscribe", types=["chat/*"])
    assert sub["recovered"] is None
    await two.ok(
        "register_events",
        events=[
            {"type": "chat/room1", "payload": {"type": "json", "data": "hi"}},
            {"type": "other", "payload": None},
            {
                "type": "chat/room2",
                "source_timestamp": 12.5,
                "payload": {"type": "binary", "name": "text/plain", "data": "aGk="},
            },
        ],
    )
    got = await events_frames(one, 2)
    assert [e["type"] for e in got] == ["chat/room1", "chat/room2"]
    assert got[1]["source_timestamp"] == 12.5
    assert got[1]["payload"] == {"type": "binary", "name": "text/plain", "data": "aGk="}
    # a new tab resumes after the first event: it gets the second, marked replay
    three = await tab()
    request_id = await three.send(
        "subscribe", types=["chat/*"], since=got[0]["id"], epoch=sub["epoch"]
    )
    result = await three.reply(request_id)
    assert result["data"]["recovered"] is True
    frame = await asyncio.wait_for(three.frames.get(), TIMEOUT)
    assert frame["replay"] is True
    assert [e["id"] for e in frame["events"]] == [got[1]["id"]]
    assert (await one.ok("unsubscribe", subscription=sub["subscription"])) == {
        "removed": True
    }


async def test_event_queries_over_the_wire(node: Client, tab: Tabs) -> None:
    one = await tab()
    done = await one.ok(
        "register_events",
        events=[{"type": "w/a"}, {"type": "w/b"}, {"type": "w/a"}],
        response=True,
    )
    assert len(done["events"]) == 3
    latest = await one.ok("query_latest", event_types=["w/*"])
    assert sorted(e["id"] for e in latest["events"]) == sorted(
        [done["events"][1]["id"], done["events"][2]["id"]]
    )
    page = await one.ok(
        "query_timeseries", event_types=["w/a"], max_results=1, order="ascending"
    )
    assert page["more_follows"] is True
    assert page["events"][0]["id"] == done["events"][0]["id"]
    rest = await one.ok(
        "query_timeseries",
        event_types=["w/a"],
        order="ascending",
        last_event_id=page["events"][0]["id"],
    )
    assert [e["id"] for e in rest["events"]] == [done["events"][2]["id"]]
    assert rest["more_follows"] is False


async def test_bad_event_requests_get_clear_errors(node: Client, tab: Tabs) -> None:
    one = await tab()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("register_events", {"events": [{"type": "a/*"}]}),
        ("register_events", {"events": [{"type": "a", "payload": {"type": "x"}}]}),
        ("register_events", {"events": [{"nope": 1}]}),
        ("subscribe", {"types": ["a/*/b"]}),
        ("subscribe", {"types": "a"}),
        ("subscribe", {"types": ["a"], "since": "zz"}),
        ("query_timeseries", {"order": "sideways"}),
    ]
    for op, args in cases:
        assert (await one.call(op, **args))["code"] == "bad_frame", (op, args)
    assert await one.ok("ping") == {}


async def test_event_ops_pass_the_policy(aiohttp_client: AiohttpClient) -> None:
    asked: list[Action] = []

    def policy(request: web.Request, action: Action) -> bool:
        asked.append(action)
        return action.event_type is not None and action.event_type.startswith("open")

    node = await aiohttp_client(build_app(SessionWSRegistry(authorize=policy)))
    one = await open_tab(node, "/live")
    error = await one.call("register_events", events=[{"type": "secret/x"}])
    assert error["code"] == "forbidden"
    assert (asked[-1].permission, asked[-1].event_type) == (
        "session_ws.register_event",
        "secret/x",
    )
    assert (await one.call("subscribe", types=["secret/*"]))["code"] == "forbidden"
    assert (await one.call("query_latest"))["code"] == "forbidden"  # all types
    assert (await one.ok("subscribe", types=["open/*"]))["subscription"] >= 1
    denied = await aiohttp_client(build_app(SessionWSRegistry()))
    other = await open_tab(denied, "/live")
    assert (await other.call("subscribe", types=["open/*"]))["code"] == "forbidden"


def test_event_ids_read_and_write_as_text() -> None:
    assert str(EventId(17, 3)) == "17-3"
    assert EventId.parse("17-3") == EventId(17, 3)
    assert EventId(17, 3) < EventId(17, 4) < EventId(18, 0)
    for bad in ["", "17", "a-b", "17-", "-3", "1" * 50 + "-1"]:
        with pytest.raises(ValueError, match="event id"):
            EventId.parse(bad)
    assert EventPayloadBinary("x", b"\x00").data == b"\x00"
