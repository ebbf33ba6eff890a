"""The Python client's event bus (``session.events``), against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SessionWSRegistry, session_ws_endpoint
from aiohttp_session_ws.backends.base import EventRetention
from aiohttp_session_ws.client import (
    ConnectionLostError,
    ReceivedEvent,
    Session,
    SessionState,
    connect,
)
from aiohttp_session_ws.events import (
    Event,
    EventId,
    EventPayloadBinary,
    EventPayloadJson,
    Order,
    QueryTimeseriesParams,
    RegisterEvent,
)
from aiohttp_session_ws.events.service import (
    SubscriptionOverflowError as ServerOverflowError,
)
from aiohttp_session_ws.events_client import (
    HISTORY_LOST,
    ClientEventSubscription,
    SubscriptionOverflowError,
)
from aiohttp_session_ws.protocol import (
    SUBPROTOCOL,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
)

from .apps import TIMEOUT, Client, build_app, registry_of

Opener = Callable[..., Awaitable[Session]]

GATE: web.AppKey[asyncio.Event] = web.AppKey("gate")
"""/gated serves upgrades only while this is set."""


async def gated(request: web.Request) -> web.StreamResponse:
    """The endpoint, once the app's gate is open."""
    await request.app[GATE].wait()
    return await session_ws_endpoint(request)


def make_app(limits: ProtocolLimits | None = None) -> web.Application:
    registry = SessionWSRegistry(authorize=lambda r, a: True, limits=limits)
    app = build_app(registry, routes=[web.get("/gated", gated)])
    app[GATE] = asyncio.Event()
    app[GATE].set()
    return app


@pytest.fixture
async def server(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(make_app())


@pytest.fixture
async def open_session(
    aiohttp_client: AiohttpClient, server: Client
) -> AsyncIterator[Opener]:
    """Open a client session of a new browser (its own cookie jar) of ``server``."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_(path: str = "/live", **options: Any) -> Session:
            browser = await aiohttp_client(server.server)
            session = await connect(
                browser.make_url(path), session=browser.session, **options
            )
            stack.push_async_callback(session.close)
            return session

        yield open_


def reg(text: str, data: Any = None) -> RegisterEvent:
    return RegisterEvent(tuple(text.split("/")), payload=EventPayloadJson(data))


def data(event: Event) -> Any:
    """The data of an event's JSON payload."""
    assert isinstance(event.payload, EventPayloadJson)
    return event.payload.data


def last_id(subscription: ClientEventSubscription) -> EventId | None:
    """``subscription.last_id``, read anew (mypy would keep what it read before)."""
    return subscription.last_id


async def take(subscription: ClientEventSubscription, count: int) -> list[Event]:
    """The next ``count`` events of the subscription (bounded)."""
    async with asyncio.timeout(TIMEOUT):
        return [await anext(subscription) for _ in range(count)]


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds, looking again each loop turn."""
    async with asyncio.timeout(TIMEOUT):
        while not check():  # noqa: ASYNC110 (state the client's reader changes)
            await asyncio.sleep(0.001)


def grown(items: list[EventId], size: int) -> bool:
    return len(items) >= size


def reached(seen: list[EventId], target: EventId) -> bool:
    return bool(seen) and seen[-1] >= target


def states_of(session: Session) -> asyncio.Queue[SessionState]:
    states: asyncio.Queue[SessionState] = asyncio.Queue()
    session.add_state_listener(lambda old, new: states.put_nowait(new))
    return states


async def test_subscribe_register_and_receive_in_order(open_session: Opener) -> None:
    reader, writer = await open_session(), await open_session()
    subscription = await reader.events.subscribe(["chat/*"])
    assert subscription.recovered is None
    assert subscription.reason is None
    assert isinstance(subscription.epoch, str)
    assert last_id(subscription) is None
    assert subscription.subscription_id is not None
    await writer.events.register(
        [reg("chat/room1", "hi"), reg("other", 0), reg("chat/room2", "ho")]
    )
    await writer.events.register([reg("chat", "bare")])  # `*` matches no segment
    got = await take(subscription, 3)
    assert [(e.type, e.payload) for e in got] == [
        (("chat", "room1"), EventPayloadJson("hi")),
        (("chat", "room2"), EventPayloadJson("ho")),
        (("chat",), EventPayloadJson("bare")),
    ]
    assert [e.id for e in got] == sorted({e.id for e in got})
    assert last_id(subscription) == got[-1].id
    assert not subscription.replayed
    assert subscription.replayed_count == 0
    assert subscription.recovered is None


async def test_wildcards(open_session: Opener) -> None:
    session = await open_session()
    one = await session.events.subscribe(["a/?/c"])
    star = await session.events.subscribe([("a", "*")])
    every = await session.events.subscribe(["*"])
    both = await session.events.subscribe(["x", "a/b/?"])
    texts = ["a/b/c", "a", "a/x/c", "a/b/d", "b", "x", "a/b/c/d"]
    await session.events.register([reg(t) for t in texts])

    async def types(subscription: ClientEventSubscription, count: int) -> list[str]:
        return ["/".join(e.type) for e in await take(subscription, count)]

    assert await types(one, 2) == ["a/b/c", "a/x/c"]
    assert await types(star, 5) == ["a/b/c", "a", "a/x/c", "a/b/d", "a/b/c/d"]
    assert await types(every, 7) == texts
    assert await types(both, 3) == ["a/b/c", "a/b/d", "x"]
    with pytest.raises(ValueError, match="last segment"):
        await session.events.subscribe(["a/*/b"])
    with pytest.raises(TypeError):
        await session.events.subscribe("a/*")


async def test_register_with_response(open_session: Opener) -> None:
    session = await open_session()
    assert await session.events.register([reg("r/a", 1)]) is None
    done = await session.events.register(
        [
            reg("r/a", {"x": [1, 2]}),
            RegisterEvent(
                ("r", "b"),
                source_timestamp=12.5,
                payload=EventPayloadBinary("image/png", b"\x89PNG\x00"),
            ),
            RegisterEvent(("r", "c")),
        ],
        response=True,
    )
    assert done is not None
    assert [e.type for e in done] == [("r", "a"), ("r", "b"), ("r", "c")]
    assert done[0].payload == EventPayloadJson({"x": [1, 2]})
    assert done[1].payload == EventPayloadBinary("image/png", b"\x89PNG\x00")
    assert done[1].source_timestamp == 12.5
    assert done[2].payload is None
    assert [e.id.seq - done[0].id.seq for e in done] == [0, 1, 2]
    assert len({e.id.ms for e in done}) == 1
    assert len({e.timestamp for e in done}) == 1
    with pytest.raises(ValueError, match="segment"):
        await session.events.register([RegisterEvent(("a", "*"))])
    with pytest.raises(TypeError):
        await session.events.register([("a",)])  # type: ignore[list-item]


async def test_queries(open_session: Opener) -> None:
    session = await open_session()
    done = await session.events.register(
        [reg("q/a", 1), reg("q/b", 2), reg("q/a", 3), reg("z", 4)], response=True
    )
    assert done is not None
    latest = await session.events.query_latest(["q/*"])
    assert [e.id for e in latest.events] == [done[1].id, done[2].id]
    assert latest.more_follows is False
    everything = await session.events.query_latest()
    assert [e.id for e in everything.events] == [done[1].id, done[2].id, done[3].id]
    page = await session.events.query_timeseries(
        QueryTimeseriesParams(
            event_types=[("q", "a")], order=Order.ASCENDING, max_results=1
        )
    )
    assert [e.id for e in page.events] == [done[0].id]
    assert page.more_follows is True
    rest = await session.events.query_timeseries(
        QueryTimeseriesParams(
            event_types=[("q", "a")],
            order=Order.ASCENDING,
            last_event_id=page.events[0].id,
        )
    )
    assert [e.id for e in rest.events] == [done[2].id]
    assert rest.more_follows is False
    newest = await session.events.query_timeseries(QueryTimeseriesParams())
    assert [e.id for e in newest.events] == [e.id for e in reversed(done)]
    with pytest.raises(ValueError, match="last segment"):  # checked here
        await session.events.query_latest(["a/*/b"])
    with pytest.raises(ProtocolError) as caught:  # checked there
        await session.request("query_latest", event_types=["a/*/b"])
    assert caught.value.code == ErrorCode.BAD_FRAME


async def test_refusals_of_the_policy(aiohttp_client: AiohttpClient) -> None:
    registry = SessionWSRegistry(
        authorize=lambda r, a: a.event_type is None or a.event_type.startswith("open")
    )
    node = await aiohttp_client(build_app(registry))
    async with connect(node.make_url("/live"), session=node.session) as session:
        for call in (
            session.events.subscribe(["secret/*"]),
            session.events.register([reg("secret/x")]),
            session.events.query_latest(),
        ):
            with pytest.raises(ProtocolError) as caught:
                await call
            assert caught.value.code == ErrorCode.FORBIDDEN
        subscription = await session.events.subscribe(["open/*"])
        assert session.events.subscriptions == [subscription]


async def test_since_replays_then_goes_live(open_session: Opener) -> None:
    session = await open_session()
    first = await session.events.subscribe(["s"])
    done = await session.events.register([reg("s", n) for n in range(4)], response=True)
    assert done is not None
    await take(first, 4)
    later = await session.events.subscribe(
        ["s"], since=str(done[1].id), epoch=first.epoch
    )
    assert later.recovered is True
    await session.events.register([reg("s", 4)])
    received: list[ReceivedEvent] = []
    async with asyncio.timeout(TIMEOUT):
        async for item in later.received():
            received.append(item)
            if len(received) == 3:
                break
    assert [(r.event.payload, r.replayed) for r in received] == [
        (EventPayloadJson(2), True),
        (EventPayloadJson(3), True),
        (EventPayloadJson(4), False),
    ]
    assert later.replayed_count == 2
    assert later.replayed is False
    other_epoch = await session.events.subscribe(
        ["s"], since=done[0].id, epoch="another"
    )
    assert other_epoch.recovered is False
    assert other_epoch.reason is not None
    assert "epoch" in other_epoch.reason
    heard: list[str] = []
    other_epoch.on_not_recovered(heard.append)  # told at once: not recovered
    assert heard == [other_epoch.reason]


async def test_replay_across_many_reconnections(
    server: Client, open_session: Opener
) -> None:
    """Another session registers steadily; the reader reconnects 10 times.

    While the reader waits at a closed gate, the writer (reconnected through
    the open endpoint) registers more: the reader gets them replayed.
    """
    registry = registry_of(server)
    reader = await open_session(
        "/gated", reconnect=True, reconnect_delay=0.01, reconnect_max_delay=0.02
    )
    writer = await open_session(
        "/live", reconnect=True, reconnect_delay=0.01, reconnect_max_delay=0.02
    )
    reader_states = states_of(reader)
    subscription = await reader.events.subscribe(["tick"])
    seen: list[EventId] = []
    replayed = 0
    registered: list[EventId] = []  # the writer's registrations that were answered
    connected = asyncio.Event()
    connected.set()
    writer.add_state_listener(
        lambda old, new: (
            connected.set() if new is SessionState.CONNECTED else connected.clear()
        )
    )

    async def write() -> None:
        for n in range(100_000):
            await connected.wait()
            try:
                done = await writer.events.register([reg("tick", n)], response=True)
            except ConnectionLostError:
                continue  # registered or not: the log says
            assert done is not None
            registered.append(done[0].id)
            await asyncio.sleep(0.025)  # a steady rate, under the rate limit

    async def read() -> None:
        nonlocal replayed
        async for event in subscription:
            seen.append(event.id)
            replayed += subscription.replayed

    writing = asyncio.create_task(write())
    reading = asyncio.create_task(read())
    try:
        async with asyncio.timeout(10):
            for _ in range(10):
                await until(lambda: bool(seen))
                server.app[GATE].clear()
                await registry.close_all()  # 1001: both reconnect
                assert await reader_states.get() is SessionState.RECONNECTING
                await until(partial(grown, registered, len(registered) + 5))
                server.app[GATE].set()
                assert await reader_states.get() is SessionState.CONNECTED
                await until(partial(reached, seen, registered[-1]))
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
    # every event of the log, once, in order
    logged: list[EventId] = []
    params = QueryTimeseriesParams(event_types=[("tick",)], order=Order.ASCENDING)
    while True:
        page = await registry.events.query_timeseries(params)
        logged.extend(e.id for e in page.events)
        if not page.more_follows:
            break
        params = QueryTimeseriesParams(
            event_types=[("tick",)], order=Order.ASCENDING, last_event_id=logged[-1]
        )
    await until(lambda: bool(seen) and seen[-1] == logged[-1])
    reading.cancel()
    assert seen == logged
    assert all(a < b for a, b in itertools.pairwise(seen))
    assert subscription.resubscriptions == 10
    assert subscription.recovered is True
    assert replayed >= 10 * 5  # what came while the reader was away
    assert subscription.replayed_count == replayed


async def test_a_missed_frame_is_filled_by_a_resubscription(
    aiohttp_client: AiohttpClient,
) -> None:
    """The server drops event frames of a slow connection; the client fills the gap.

    Frames over 16 kB always wait in the connection's queue, which holds 2
    here: ten of them fanned out at once leave 2, the first with ``missed``.
    """
    node = await aiohttp_client(make_app(ProtocolLimits(max_queue=2)))
    registry = registry_of(node)
    async with connect(node.make_url("/live"), session=node.session) as session:
        subscription = await session.events.subscribe(["big"])
        old = subscription.subscription_id
        blob = "x" * 20_000
        for n in range(10):  # no await suspends: the fan-out runs after
            await registry.events.register([reg("big", [n, blob])])
        got = await take(subscription, 10)
        assert [data(e)[0] for e in got] == list(range(10))
        assert session.missed >= 1
        assert subscription.resubscriptions >= 1
        assert subscription.subscription_id != old
        assert subscription.replayed_count >= 8
        assert subscription.recovered is True
        # the old server subscription is gone
        await until(lambda: registry.events.stats()["event_subscriptions"] == 1)


async def test_not_recovered_when_the_history_is_gone(
    server: Client, open_session: Opener
) -> None:
    registry = registry_of(server)
    registry.backend.event_store.retention = EventRetention(max_count=3, max_age=None)
    reader = await open_session("/gated", reconnect=True, reconnect_delay=0.01)
    states = states_of(reader)
    subscription = await reader.events.subscribe(["h"])
    reasons: asyncio.Queue[str] = asyncio.Queue()
    subscription.on_not_recovered(reasons.put_nowait)
    await registry.events.register([reg("h", 0)])
    (first,) = await take(subscription, 1)
    server.app[GATE].clear()
    await registry.close_all()
    assert await asyncio.wait_for(states.get(), TIMEOUT) is SessionState.RECONNECTING
    await registry.events.register([reg("h", n) for n in range(1, 8)])  # keeps 3
    server.app[GATE].set()
    reason = await asyncio.wait_for(reasons.get(), TIMEOUT)
    assert "retention" in reason
    assert subscription.recovered is False
    assert subscription.reason == reason
    assert subscription.last_id is None  # reset: only live events follow
    assert subscription.last_id != first.id
    await registry.events.register([reg("h", 8)])
    (live,) = await take(subscription, 1)
    assert live.payload == EventPayloadJson(8)
    assert not subscription.replayed
    assert subscription.last_id == live.id


async def test_close_unsubscribes_and_ends_the_iterator(
    server: Client, open_session: Opener
) -> None:
    registry = registry_of(server)
    session = await open_session()
    async with await session.events.subscribe(["c"]) as subscription:
        assert registry.events.stats()["event_subscriptions"] == 1
        assert session.events.subscriptions == [subscription]
    assert subscription.closed
    assert subscription.subscription_id is None
    assert registry.events.stats()["event_subscriptions"] == 0
    assert session.events.subscriptions == []
    await subscription.close()  # again: nothing
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(subscription), TIMEOUT)
    # the session's close ends the others
    other = await session.events.subscribe(["c"])
    await session.events.register([reg("c", 1)])
    await until(lambda: other.last_id is not None)
    await session.close()
    assert other.closed
    assert [e.payload for e in await take(other, 1)] == [EventPayloadJson(1)]
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(other), TIMEOUT)
    with pytest.raises(ConnectionLostError):
        await session.events.subscribe(["c"])


async def test_a_reader_too_far_behind_is_told(
    server: Client, open_session: Opener
) -> None:
    session = await open_session()
    subscription = await session.events.subscribe(["o"], max_buffer=2)
    await session.events.register([reg("o", n) for n in range(5)])
    await until(lambda: subscription.closed)
    assert [e.payload for e in await take(subscription, 2)] == [
        EventPayloadJson(0),
        EventPayloadJson(1),
    ]
    with pytest.raises(SubscriptionOverflowError) as caught:
        await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert isinstance(caught.value, ServerOverflowError)
    assert subscription.error is caught.value
    await until(lambda: registry_of(server).events.stats()["event_subscriptions"] == 0)


async def test_on_event_callbacks(open_session: Opener) -> None:
    session = await open_session()
    plain: list[ReceivedEvent] = []
    awaited: asyncio.Queue[ReceivedEvent] = asyncio.Queue()

    async def slow(received: ReceivedEvent) -> None:
        await asyncio.sleep(0)
        awaited.put_nowait(received)

    sync = await session.events.subscribe(["cb"], on_event=plain.append)
    await session.events.subscribe(["cb"], on_event=slow)
    await session.events.register([reg("cb", n) for n in range(3)])
    async with asyncio.timeout(TIMEOUT):
        got = [await awaited.get() for _ in range(3)]
    assert [r.event.payload for r in got] == [EventPayloadJson(n) for n in range(3)]
    await until(lambda: len(plain) == 3)
    assert [r.event.id for r in plain] == [r.event.id for r in got]
    with pytest.raises(RuntimeError):
        await anext(sync)


# against a fake server: frames the real one sends only when things go wrong
class Fake:
    """A websocket endpoint that sends a hello, then answers each frame by a script."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answer: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda f: [
            {"op": "result", "id": f["id"], "data": {}}
        ]

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=[SUBPROTOCOL])
        await ws.prepare(request)
        hello = {"op": "hello", "version": 1, "session": "s", "connection": "c"}
        await ws.send_str(json.dumps(hello))
        async for msg in ws:
            frame = json.loads(msg.data)
            self.received.put_nowait(frame)
            for reply in self.answer(frame):  # back to back
                await ws.send_str(json.dumps(reply))
        return ws


@pytest.fixture
async def fake(aiohttp_client: AiohttpClient) -> tuple[Fake, Client]:
    endpoint = Fake()
    app = web.Application()
    app.router.add_get("/fake", endpoint.handler)
    return endpoint, await aiohttp_client(app)


def wire_event(event_id: str, n: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "f",
        "timestamp": 1.0,
        "source_timestamp": None,
        "payload": {"type": "json", "data": n},
    }


def events_frame(
    subscription: int, *events: dict[str, Any], **more: Any
) -> dict[str, Any]:
    return {
        "op": "events",
        "subscription": subscription,
        "events": list(events),
        **more,
    }


def subscribed(frame: dict[str, Any], subscription: int, **more: Any) -> dict[str, Any]:
    data = {
        "subscription": subscription,
        "epoch": "e1",
        "position": None,
        "recovered": None,
        "reason": None,
        **more,
    }
    return {"op": "result", "id": frame["id"], "data": data}


async def test_a_missed_frame_makes_it_resubscribe_from_its_last_id(
    fake: tuple[Fake, Client],
) -> None:
    endpoint, client = fake

    def answer(frame: dict[str, Any]) -> list[dict[str, Any]]:
        if frame["op"] == "subscribe" and "since" not in frame:
            return [
                subscribed(frame, 1, position="5-0"),
                events_frame(1, wire_event("5-1", 1)),
                # two frames dropped: this one follows the gap
                events_frame(1, wire_event("5-4", 4), missed=2),
                events_frame(1, wire_event("5-5", 5)),  # of the old one: ignored
            ]
        if frame["op"] == "subscribe":
            return [
                subscribed(frame, 2, position="5-5", recovered=True),
                events_frame(
                    2,
                    *(wire_event(f"5-{n}", n) for n in (1, 2, 3, 4, 5)),
                    replay=True,
                ),
                events_frame(1, wire_event("5-6", 6)),  # still of the old one
                events_frame(2, wire_event("5-6", 6)),
            ]
        return [{"op": "result", "id": frame["id"], "data": {"removed": True}}]

    endpoint.answer = answer
    async with (
        asyncio.timeout(TIMEOUT),
        connect(client.make_url("/fake"), session=client.session) as session,
    ):
        subscription = await session.events.subscribe(["f"])
        got = await take(subscription, 6)
        frames = [await endpoint.received.get() for _ in range(3)]
    assert [e.payload for e in got] == [EventPayloadJson(n) for n in range(1, 7)]
    assert [f["op"] for f in frames] == ["subscribe", "unsubscribe", "subscribe"]
    assert frames[1]["subscription"] == 1
    assert (frames[2]["since"], frames[2]["epoch"]) == ("5-1", "e1")
    assert subscription.replayed_count == 4
    assert subscription.recovered is True
    assert session.missed == 2


async def test_events_lost_resets_the_last_id(fake: tuple[Fake, Client]) -> None:
    endpoint, client = fake

    def answer(frame: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            subscribed(frame, 3, position="9-0"),
            events_frame(3, wire_event("9-1", 1)),
            {"op": "events_lost", "subscription": 3, "epoch": "e2", "reason": None},
            events_frame(3, wire_event("1-0", 2)),  # a new epoch: smaller ids
            events_frame(3, wire_event("1-0", 2)),  # a duplicate
        ]

    endpoint.answer = answer
    async with (
        asyncio.timeout(TIMEOUT),
        connect(client.make_url("/fake"), session=client.session) as session,
    ):
        subscription = await session.events.subscribe(["f"])
        heard: list[str] = []
        subscription.on_not_recovered(heard.append)
        got = await take(subscription, 2)
        assert subscription.recovered is False
        assert subscription.reason == HISTORY_LOST
        assert subscription.epoch == "e2"
        assert subscription.last_id == EventId(1, 0)
        assert subscription.resume_id == EventId(1, 0)
    assert [e.payload for e in got] == [EventPayloadJson(1), EventPayloadJson(2)]
    assert heard == [HISTORY_LOST]
