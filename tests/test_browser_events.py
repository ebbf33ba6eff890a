"""The event bus of the browser client, session-ws.js, in a real headless Chromium.

Tabs of separate browser contexts are separate sessions: one subscribes,
the other registers; the subscriber loses its connection (a server-side
close, 1001) while events go on being registered, reconnects, and has every
event once, in order, the replayed ones marked; with a tiny retention it is
told that it did not recover. The server is a real aiohttp app (memory
backend) whose code registers events too (``registry.events``). Playwright
drives Debian's ``chromium`` (``executable_path``, no browser download); one
browser serves the module, so the async tests share the module's loop.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSCloseCode, web
from playwright.async_api import Browser

from aiohttp_session_ws import (
    Action,
    SessionWSRegistry,
)
from aiohttp_session_ws.backends.base import EventRetention
from aiohttp_session_ws.events import EventPayloadJson, RegisterEvent

from . import browser_pages as pages
from .chromium import launched

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEST_PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>session-ws.js events test page</title>
<script type="module">
import * as client from "/session-ws/session-ws.js";
window.client = client;
window.got = [];  // the events of window.sub, as read by for await
window.notRecovered = [];  // the reasons onNotRecovered heard
window.settled = (promise) => promise.then(
  (value) => ({value}),
  (e) => ({name: e.name, code: e.code ?? null, message: e.message}));
window.plain = (e) => ({id: e.id, type: e.type, data: e.payload?.data ?? null,
                        replayed: e.replayed});
</script>
"""

OPEN_PREFIXES = ("chat/", "other/")
"""The event types the test policy allows: it refuses every other one."""


def allow_open(request: web.Request, action: Action) -> bool:
    """The test policy: events below ``chat/`` and ``other/`` (and ``chat/*``)."""
    return (action.event_type or "").startswith(OPEN_PREFIXES)


class Server(pages.Server):
    """The test app, running; server code registers events too."""

    def socket_of(self, handle: str) -> web.WebSocketResponse:
        """The open protocol websocket of the session with that handle."""
        [ws] = [w for w in self.sockets[self.session_of(handle)] if not w.closed]
        return ws

    async def drop(self, handle: str) -> None:
        """Close the session's connection as a server shutdown does (1001).

        Its reconnections are refused until :attr:`refuse` is False again.
        """
        self.refuse = True
        await self.socket_of(handle).close(code=WSCloseCode.GOING_AWAY)

    async def register(self, *texts: str) -> list[str]:
        """Register ``chat/server`` events from server code; their ids."""
        done = await self.registry.events.register(
            [
                RegisterEvent(("chat", "server"), payload=EventPayloadJson(t))
                for t in texts
            ],
            with_response=True,
        )
        assert done is not None
        return [str(e.id) for e in done]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    """The test app on a free port."""
    registry = SessionWSRegistry(authorize=allow_open)
    async with pages.running(Server, registry, TEST_PAGE) as running:
        assert isinstance(running, Server)
        yield running


class Tab(pages.Tab):
    """A page of a fresh browser context: a session of its own."""

    async def connect(self, **options: Any) -> str:
        """Connect as ``window.s`` (reconnecting at once); return its handle."""
        return await super().connect(
            reconnect=True, reconnectDelay=20, reconnectMaxDelay=100, **options
        )

    async def got(self) -> list[dict[str, Any]]:
        """The events the page's subscription has read so far."""
        result: list[dict[str, Any]] = await self.run("() => got")
        return result


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser, server: Server) -> AsyncIterator[list[Tab]]:
    """Two tabs of two sessions on the test app, connected."""
    async with pages.opened_tabs(browser, server, Tab) as opened:
        for tab in opened:
            await tab.connect()
        yield opened


SUBSCRIBE = """async (types) => {
  window.sub = await s.events.subscribe(types);
  sub.onNotRecovered((reason) => notRecovered.push(reason));
  (async () => { for await (const e of sub) got.push(plain(e)); })();
  return {recovered: sub.recovered, reason: sub.reason, epoch: sub.epoch,
          position: sub.position, id: sub.id};
}"""
"""Subscribe as ``window.sub``: its events go to ``got``, its not-recovered
reasons to ``notRecovered``."""

REGISTER = """async (items) => {
  const done = await s.events.register(
    items.map(([type, data]) => ({type, payload: {type: "json", data}})),
    {response: true});
  return done.map(plain);
}"""
"""Register ``[type, data]`` events (JSON payloads); the registered ones."""


def ids_in_order(ids: list[str]) -> bool:
    """Whether the ids increase strictly, compared as (ms, n)."""
    keys = [tuple(int(part) for part in i.split("-")) for i in ids]
    return all(a < b for a, b in itertools.pairwise(keys))


async def test_a_tab_that_lost_its_connection_gets_every_event_once_in_order(
    tabs: list[Tab], server: Server
) -> None:
    reader, writer = tabs
    first = await reader.run(SUBSCRIBE, ["chat/*"])
    assert first["recovered"] is None  # no since: live from here
    assert first["reason"] is None
    assert isinstance(first["epoch"], str)
    assert isinstance(first["id"], int)

    # live: the events of chat/*, and none of other/*
    live = await writer.run(REGISTER, [["chat/a", 1], ["other/x", 0], ["chat/b", 2]])
    await reader.until("got.length === 2")
    assert [e["data"] for e in await reader.got()] == [1, 2]
    assert [e["replayed"] for e in await reader.got()] == [False, False]
    assert await reader.run("() => sub.lastId") == live[2]["id"]

    # the reader drops (1001) and stays away while events go on
    await server.drop(reader.handle)
    await reader.until("s.state === 'reconnecting'")
    away = await writer.run(REGISTER, [["chat/a", 3], ["other/y", 0], ["chat/c", 4]])
    away_ids = [e["id"] for e in away if e["type"].startswith("chat/")]
    away_ids += await server.register("5", "6")
    server.refuse = False

    # back: the ones it missed come replayed, then live ones
    await reader.until("s.state === 'connected' && got.length === 6")
    after = await writer.run(REGISTER, [["chat/d", 7]])
    await reader.until("got.length === 7")
    got = await reader.got()
    assert [e["data"] for e in got] == [1, 2, 3, 4, "5", "6", 7]
    assert [e["id"] for e in got[2:6]] == away_ids
    assert [e["replayed"] for e in got] == [False, False, True, True, True, True, False]
    ids = [e["id"] for e in got]
    assert len(set(ids)) == len(ids)
    assert ids_in_order(ids)
    assert ids[-1] == after[0]["id"]
    state = await reader.run(
        "() => ({recovered: sub.recovered, reason: sub.reason, lastId: sub.lastId,"
        " epoch: sub.epoch, closed: sub.closed})"
    )
    assert state == {
        "recovered": True,
        "reason": None,
        "lastId": ids[-1],
        "epoch": first["epoch"],
        "closed": False,
    }
    assert await reader.run("() => notRecovered") == []
    # one subscription on the server for the reader: the old one went with its socket
    assert server.registry.events.stats()["event_subscriptions"] == 1

    # close() unsubscribes: no more events, and the iteration ends
    await reader.run("() => sub.close()")
    assert server.registry.events.stats()["event_subscriptions"] == 0
    await writer.run(REGISTER, [["chat/e", 8]])
    await asyncio.sleep(0.1)
    assert len(await reader.got()) == 7
    assert await reader.run("() => sub.next()") == {"done": True, "value": None}


async def test_a_tab_whose_history_was_lost_is_told_and_goes_on_live(
    tabs: list[Tab], server: Server
) -> None:
    server.registry.backend.event_store.retention = EventRetention(
        max_count=3, max_age=None
    )
    reader, writer = tabs
    await reader.run(SUBSCRIBE, ["chat/*"])
    await writer.run(REGISTER, [["chat/a", 1]])
    await reader.until("got.length === 1")
    await server.drop(reader.handle)
    await reader.until("s.state === 'reconnecting'")
    await writer.run(REGISTER, [[f"chat/{n}", n] for n in range(2, 8)])  # over 3
    server.refuse = False
    await reader.until("s.state === 'connected' && notRecovered.length === 1")
    [reason] = await reader.run("() => notRecovered")
    assert "retention" in reason
    assert await reader.run("() => [sub.recovered, sub.reason]") == [False, reason]
    # the events between are gone; live ones go on
    await writer.run(REGISTER, [["chat/z", 8]])
    await reader.until("got.length === 2")
    got = await reader.got()
    assert [(e["data"], e["replayed"]) for e in got] == [(1, False), (8, False)]
    # a listener added now hears it at once: the last subscribe did not recover
    assert (
        await reader.run(
            "() => new Promise((resolve) => sub.onNotRecovered((r) => resolve(r)))"
        )
        == reason
    )


async def test_dropped_frames_are_filled_in_by_subscribing_again(
    tabs: list[Tab], server: Server
) -> None:
    """A frame that says ``missed``: the client resubscribes from its last id."""
    reader, writer = tabs
    sub = await reader.run(SUBSCRIBE, ["chat/*"])
    await writer.run(REGISTER, [["chat/a", 1]])
    await reader.until("got.length === 1")
    # the server stops sending this subscription's frames, as if dropped...
    [peer] = [p for p in server.registry.peers if p.handle == reader.handle]
    assert server.registry.events.unsubscribe_connection(peer, sub["id"])
    await writer.run(REGISTER, [["chat/b", 2], ["chat/c", 3]])
    await asyncio.sleep(0.1)
    assert len(await reader.got()) == 1
    # ...and the next frame says so: the gap is filled, in order, once each
    ws = server.socket_of(reader.handle)
    await ws.send_str(json.dumps({"op": "push", "data": None, "missed": 2}))
    await reader.until("got.length === 3")
    await writer.run(REGISTER, [["chat/d", 4]])
    await reader.until("got.length === 4")
    got = await reader.got()
    assert [(e["data"], e["replayed"]) for e in got] == [
        (1, False),
        (2, True),
        (3, True),
        (4, False),
    ]
    assert await reader.run("() => sub.id") != sub["id"]
    assert await reader.run("() => [sub.recovered, s.missed]") == [True, 2]
    # frames of the old id are ignored now
    await ws.send_str(
        json.dumps(
            {
                "op": "events",
                "subscription": sub["id"],
                "events": [
                    {"id": "99999999999999-0", "type": "chat/x", "timestamp": 1.0}
                ],
            }
        )
    )
    await writer.run(REGISTER, [["chat/e", 5]])
    await reader.until("got.length === 5")
    assert (await reader.got())[-1]["data"] == 5


async def test_a_lost_log_is_told_and_the_new_epoch_follows(
    tabs: list[Tab], server: Server
) -> None:
    reader, writer = tabs
    sub = await reader.run(SUBSCRIBE, ["chat/*"])
    await writer.run(REGISTER, [["chat/a", 1]])
    await reader.until("got.length === 1")
    current = await reader.run("() => sub.id")
    ws = server.socket_of(reader.handle)
    await ws.send_str(
        json.dumps(
            {
                "op": "events_lost",
                "subscription": current,
                "epoch": "another",
                "reason": "Redis restarted empty",
            }
        )
    )
    await reader.until("notRecovered.length === 1")
    assert await reader.run("() => [notRecovered[0], sub.recovered, sub.epoch]") == [
        "Redis restarted empty",
        False,
        "another",
    ]
    assert await reader.run("() => sub.lastId") is None
    assert sub["epoch"] != "another"


async def test_since_queries_and_payloads(tabs: list[Tab], server: Server) -> None:
    reader, writer = tabs
    done = await writer.run(
        """async () => {
          const done = await s.events.register([
            {type: "chat/q/a", payload: {type: "json", data: {n: 1}}},
            {type: "chat/q/b", sourceTimestamp: 12.5,
             payload: {type: "binary", name: "text/plain",
                       data: new TextEncoder().encode("hi")}},
            {type: "chat/q/a"},
          ], {response: true});
          return done.map((e) => ({id: e.id, type: e.type, payload: e.payload,
            source: e.sourceTimestamp, timestamp: e.timestamp,
            text: e.payload?.type === "binary"
              ? new TextDecoder().decode(e.payload.data) : null}));
        }"""
    )
    assert [e["type"] for e in done] == ["chat/q/a", "chat/q/b", "chat/q/a"]
    assert done[0]["payload"] == {"type": "json", "data": {"n": 1}}
    assert (done[1]["source"], done[1]["text"]) == (12.5, "hi")
    assert done[2]["payload"] is None
    assert len({e["timestamp"] for e in done}) == 1
    assert ids_in_order([e["id"] for e in done])
    assert await writer.run("() => s.events.register([{type: 'chat/q/c'}])") is None

    # a subscription from an id (and the log's epoch): the events after it,
    # replayed
    replayed = await reader.run(
        """async (since) => {
          const seen = [];
          const live = await s.events.subscribe(["chat/q/*"]);
          const epoch = live.epoch;
          await live.close();
          const sub = await s.events.subscribe(["chat/q/*"], {
            since, epoch, onEvent: (e) => seen.push(plain(e))});
          while (seen.length < 3) await new Promise((r) => setTimeout(r, 10));
          await sub.close();
          return {seen, recovered: sub.recovered};
        }""",
        done[0]["id"],
    )
    assert replayed["recovered"] is True
    assert [(e["type"], e["replayed"]) for e in replayed["seen"]] == [
        ("chat/q/b", True),
        ("chat/q/a", True),
        ("chat/q/c", True),
    ]

    latest = await reader.run(
        """async () => {
          const r = await s.events.queryLatest(["chat/q/*"]);
          return {types: r.events.map((e) => e.type).sort(), more: r.moreFollows};
        }"""
    )
    assert latest == {"types": ["chat/q/a", "chat/q/b", "chat/q/c"], "more": False}
    page = await reader.run(
        """async (after) => {
          const one = await s.events.queryTimeseries({
            eventTypes: ["chat/q/a"], order: "ascending", maxResults: 1});
          const rest = await s.events.queryTimeseries({
            eventTypes: ["chat/q/a"], order: "ascending",
            lastEventId: one.events[0].id});
          return [one.events.map((e) => e.id), one.moreFollows,
                  rest.events.map((e) => e.id), rest.moreFollows];
        }"""
    )
    assert page == [[done[0]["id"]], True, [done[2]["id"]], False]

    # ids compare as numbers, not as text
    assert await reader.run(
        "() => [client.compareEventIds('9-0', '10-0') < 0,"
        " client.compareEventIds('10-2', '10-10') < 0,"
        " client.compareEventIds('7-1', '7-1')]"
    ) == [True, True, 0]

    # errors: the policy, a bad type, an unknown option
    errors = await reader.run(
        """async () => [
          await settled(s.events.subscribe(["secret/*"])),
          await settled(s.events.register([{type: "chat/*"}])),
          await settled(s.events.subscribe(["chat/*"], {sinse: "1-0"})),
          await settled(s.events.queryTimeseries({eventTypes: ["chat/*"], order: "x"})),
        ]"""
    )
    assert [e.get("code") or e["name"] for e in errors] == [
        "forbidden",
        "bad_frame",
        "TypeError",
        "bad_frame",
    ]


async def test_subscriptions_end_when_the_session_closes(
    tabs: list[Tab], server: Server
) -> None:
    reader, _ = tabs
    await reader.run(SUBSCRIBE, ["chat/*"])
    ended = await reader.run(
        """async () => {
          const waiting = sub.next();
          await s.close();
          return [await waiting, sub.closed];
        }"""
    )
    assert ended == [{"done": True, "value": None}, True]
