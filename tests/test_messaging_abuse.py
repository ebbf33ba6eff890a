"""Messaging under attack and misuse: limits, floods, spoofing, faults.

Each test pins down a behaviour that a review found broken (and that is
fixed) or that held up under attack. Real servers, real sockets, bounded
waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SessionWSRegistry
from aiohttp_session_ws.ids import wire_id
from aiohttp_session_ws.protocol import ProtocolLimits

from .apps import Client, build_app, cookie_ws_id, reconnected, registry_of
from .redis_server import RedisServer
from .tcp_proxy import SilentCutProxy
from .test_messaging_cluster import (
    Cluster,
    ask,
    backend,
    barrier,
    const,
    filter_send,
    handles,
    never,
    registry,
)
from .waiting import until
from .wire import TIMEOUT, WireTab, allow_all, echo, open_tab


@pytest.fixture
async def cluster(aiohttp_client: AiohttpClient) -> AsyncIterator[Cluster]:
    found = Cluster(aiohttp_client)
    yield found
    await found.close()


def team_of(request: web.Request) -> dict[str, str]:
    return {"team": request.query.get("team", "none")}


class OneNode:
    """A single memory-backend node and tabs on it, new sessions or shared."""

    def __init__(self, aiohttp_client: AiohttpClient, client: Client) -> None:
        self._aiohttp_client = aiohttp_client
        self.client = client
        self.tabs: list[WireTab] = []
        self.browser_of: dict[WireTab, Client] = {}

    @property
    def registry(self) -> SessionWSRegistry:
        return registry_of(self.client)

    async def tab(
        self, *, like: WireTab | None = None, query: str = "", answer: Any = None
    ) -> WireTab:
        if like is not None:
            browser = self.browser_of[like]
        else:
            browser = await self._aiohttp_client(self.client.server)
        tab = await open_tab(browser, "/live" + query)
        tab.answer = answer
        self.tabs.append(tab)
        self.browser_of[tab] = browser
        return tab


@pytest.fixture
async def one(aiohttp_client: AiohttpClient) -> AsyncIterator[OneNode]:
    registry_ = SessionWSRegistry(authorize=allow_all, properties_factory=team_of)
    client = await aiohttp_client(build_app(registry_))
    node = OneNode(aiohttp_client, client)
    yield node
    for tab in node.tabs:
        with contextlib.suppress(Exception):
            await tab.close()


# ---------------------------------------------------------------------------
# findings
# ---------------------------------------------------------------------------


async def test_a_filter_send_chooses_a_session_s_connection_as_a_session_send_does(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    """A filter send chooses, per session, as a session send does: the
    sender's node first (no Redis), even with a less specific registration;
    else the most specific one elsewhere. Found by review: the docs said
    otherwise; the docs now say this."""
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    on_a = await cluster.tab(a, answer=const("a: generic 'spec'"))
    await handles(on_a, "spec", addressed=True)
    on_b = await cluster.tab(b, like=on_a, answer=const("b: specific 'spec/deep'"))
    await handles(on_b, "spec/deep", addressed=True)
    await barrier(a, b)
    sender = await cluster.tab(a)
    expected, frames, done = await filter_send(sender, filter="all", path="spec/deep")
    assert expected == 1
    assert done["unanswered"] == []
    assert [f["data"] for f in frames] == ["a: generic 'spec'"]
    answer = await sender.ok("send_to_session", path="spec/deep", session=on_a.handle)
    assert answer == "a: generic 'spec'"  # the same choice
    sender_b = await cluster.tab(b)
    expected, frames, _ = await filter_send(sender_b, filter="all", path="spec/deep")
    assert [f["data"] for f in frames] == ["b: specific 'spec/deep'"]


async def test_a_filter_matches_a_session_whose_older_handling_connection_matches(
    one: OneNode,
) -> None:
    """docs: "A filter is evaluated on each connection's properties". On one
    node only the newest handling connection of a session is evaluated, so a
    session whose older tab matches (and handles the path) is left out; on
    two nodes the same session would be matched (each node evaluates its
    own connection): the result depends on where the tabs are."""
    red = await one.tab(query="?team=red", answer=const("red tab"))
    await red.ok("add_handler", path="poll", addressed=True)
    blue = await one.tab(like=red, query="?team=blue", answer=const("blue tab"))
    await blue.ok("add_handler", path="poll", addressed=True)
    assert blue.handle == red.handle
    sender = await one.tab()
    expected, frames, _ = await filter_send(sender, filter="team eq 'red'", path="poll")
    assert expected == 1, "the session has a red tab that handles 'poll'"
    assert [f["data"] for f in frames] == ["red tab"]


async def test_a_slow_reading_handler_connection_holds_bounded_bytes(
    aiohttp_client: AiohttpClient,
) -> None:
    """A client that stops reading is sent non-droppable request frames of up
    to ``max_frame_size`` each, made from other clients' data: the queue is
    bounded by ``max_queue`` *frames* (256), so one such connection pins
    256 x 64 KiB = 16 MiB (beyond the socket buffers), and a filter send makes
    one copy of the 64 KiB frame per matched connection. The server should
    bound what one connection may hold in bytes."""
    registry_ = SessionWSRegistry(authorize=allow_all)
    client = await aiohttp_client(build_app(registry_))
    victim_browser = await aiohttp_client(client.server)
    victim = await open_tab(victim_browser, "/live")
    await victim.ok("add_handler", path="sink", addressed=True)
    # the victim stops reading: the kernel buffers fill, then the queue
    victim._reader.cancel()
    transport = victim.ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.pause_reading()
    [peer] = registry_.peers.of(cookie_ws_id(victim_browser))
    most = 0

    def queued() -> int:
        queue = peer._queue  # type: ignore[attr-defined]
        return 0 if queue is None else sum(len(frame) for frame, _ in queue)

    big = "x" * 60_000
    senders = [
        await open_tab(await aiohttp_client(client.server), "/live") for _ in range(6)
    ]
    started = time.monotonic()
    try:
        # each sender: its burst of sends, each a 60 kB request to the victim
        while time.monotonic() - started < 12 and not peer._gone:  # type: ignore[attr-defined]
            for sender in senders:
                for _ in range(16):
                    await sender.send(
                        "send_to_session",
                        path="sink",
                        session=victim.handle,
                        data=big,
                        timeout=0.2,
                    )
            for _ in range(10):
                most = max(most, queued())
                await asyncio.sleep(0.02)
            most = max(most, queued())
    finally:
        for sender in senders:
            with contextlib.suppress(Exception):
                await sender.close()
        transport.resume_reading()
        with contextlib.suppress(Exception):
            await victim.ws.close()
    assert most <= 4 * 1024 * 1024, f"one slow connection held {most:,} queued bytes"


async def test_addressed_registrations_do_not_rewrite_the_whole_list_each_time(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    """An addressed ``add_handler`` writes its own path to Redis, not the
    session's whole list (it once did: O(n^2) bytes for n registrations)."""
    a = await cluster.node(redis_server.url, prefix)
    tabs = [await cluster.tab(a)]
    for _ in range(2):
        tabs.append(await cluster.tab(a, like=tabs[0]))
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        before = int((await admin.info("stats"))["total_net_input_bytes"])
        sent = 0
        for n, tab in enumerate(t for t in tabs for _ in range(60)):
            path = f"inbox/{n:04d}/" + "p" * 230
            sent += len(path) + 60
            await handles(tab, path, addressed=True)
        after = int((await admin.info("stats"))["total_net_input_bytes"])
        session = wire_id(cookie_ws_id(cluster.browser_of[tabs[0]]))
        key = f"{{{backend(a).prefix}}}:addr:{session}:{registry(a).node_id}"
        stored = await admin.scard(key)
    finally:
        await admin.aclose()
    written = after - before
    assert stored == 180  # every path is there
    assert written < 20 * sent, (
        f"{sent:,} bytes of registrations cost {written:,} bytes of Redis writes"
    )


async def test_a_connection_cannot_register_handlers_without_bound(
    aiohttp_client: AiohttpClient,
) -> None:
    """Nothing bounds the registrations of one connection (or session): with
    a policy that allows ``add_handler`` under a prefix, a client fills the
    node's (and with Redis, every node's) tables. The rate limit only slows
    it; each tab has its own bucket."""
    registry_ = SessionWSRegistry(
        authorize=allow_all, limits=ProtocolLimits(rate=100_000.0, burst=100_000)
    )
    client = await aiohttp_client(build_app(registry_))
    tab = await open_tab(await aiohttp_client(client.server), "/live")
    refused = None
    try:
        for n in range(3000):
            frame = await tab.call(
                "add_handler", path=f"chat/{n}", addressed=n % 2 == 0
            )
            if frame["op"] == "error":
                refused = frame
                break
    finally:
        count = registry_.messaging.stats()["message_handlers"]
        await tab.close()
    assert refused is not None, f"{count} handlers of one connection, none refused"
    assert refused["code"] == "limit", (
        f"{count} handlers of one connection, none refused"
    )


async def test_a_filter_send_fails_promptly_when_its_node_loses_its_inbox(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    """docs: a request lost because "a connection cut" fails with
    session_closed/unavailable/timeout, and path/session requests fail at
    once when this node's inbox loses its link (NodeBus.frames_lost). A
    filter send waits for the other nodes' responses through the same
    inbox, but frames_lost does not touch it: a response lost in the cut is
    waited for until the send's whole timeout, then reported as merely
    "unanswered"."""
    proxy = SilentCutProxy(redis_server.port)
    await proxy.start()
    try:
        a = await cluster.node(proxy.url, prefix)
        b = await cluster.node(redis_server.url, prefix)
        target = await cluster.tab(b, answer=None)
        await handles(target, "cut", addressed=True)
        await barrier(a, b)
        back = reconnected(registry(a))
        responses = await registry(a).messaging.send_request_to_filter(
            "all", "cut", 1, timeout=8.0
        )
        assert responses.expected == 1
        request = await target.next_request()
        assert proxy.cut_subscribers() == 1  # A's inbox goes deaf
        await target.send_answer(request["conversation"], data="lost")
        await asyncio.wait_for(back.wait(), TIMEOUT)  # A knows it lost frames
        noticed = time.monotonic()
        await asyncio.wait_for(responses.wait(), 9.0)
        waited = time.monotonic() - noticed
        got = [r async for r in responses]
    finally:
        await proxy.close()
    assert got or waited < 1.0, (
        f"the filter send waited {waited:.1f} s more after its node knew its "
        f"inbox lost frames; then unanswered={sorted(responses.unanswered)}"
    )


# ---------------------------------------------------------------------------
# what held up
# ---------------------------------------------------------------------------


async def test_held_a_reconnect_storm_leaves_no_registration_behind(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    first = await cluster.tab(a)
    for round_ in range(15):
        tab = await cluster.tab(a, like=first, answer=echo)
        await handles(tab, f"storm/{round_}", addressed=True)
        await handles(tab, "storm", addressed=True)
        await handles(tab, f"path/{round_}")
        await tab.close()
    await first.close()
    messaging = registry(a).messaging
    await until(lambda: messaging.stats()["message_handlers"] == 0)
    await messaging.flush()
    await barrier(a, b)
    assert messaging._of_peer == {}
    assert messaging._addressed == {}
    assert messaging._by_path == {}
    assert messaging._turns == {}
    store = backend(a).handler_store
    assert not store._paths
    assert not store._addressed
    assert backend(b).handler_store._nodes_of == {}
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert (
            await admin.smembers(f"{{{backend(a).prefix}}}:paths:{registry(a).node_id}")
            == set()
        )
    finally:
        await admin.aclose()


async def test_held_a_filter_send_leaves_no_state_after_its_sender_leaves(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    """A filter send to handlers that never answer, whose sending tab closes
    at once: every node drops what it held by the timeout."""
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    sinks = []
    for node in (a, b, b, b):
        tab = await cluster.tab(node, answer=None)  # requests queue, unanswered
        await handles(tab, "hole", addressed=True)
        sinks.append(tab)
    await barrier(a, b)
    sender = await cluster.tab(a)
    for _ in range(5):
        await sender.send("send_to_filter", filter="all", path="hole", timeout=1.0)
    for tab in sinks:
        await tab.next_request()
    await sender.close()
    ma, mb = registry(a).messaging, registry(b).messaging

    def empty() -> bool:
        return not any(
            m._filter_sends or m._held or m._outgoing or m._conversations
            for m in (ma, mb)
        )

    try:
        await until(empty, 4.0)
    except TimeoutError:
        left = {
            name: {
                k: len(getattr(m, k))
                for k in ("_filter_sends", "_held", "_outgoing", "_conversations")
            }
            for name, m in (("a", ma), ("b", mb))
        }
        raise AssertionError(
            f"left behind 4 s after a 1 s filter send: {left}"
        ) from None


async def test_held_answers_cannot_be_spoofed_by_another_tab_of_the_same_session(
    one: OneNode,
) -> None:
    handler = await one.tab()
    twin = await one.tab(like=handler)
    assert twin.handle == handler.handle
    await handler.ok("add_handler", path="mine", addressed=True)
    sender = await one.tab()
    request_id = await sender.send(
        "send_to_session", path="mine", session=handler.handle, data=1
    )
    frame = await handler.next_request()
    await twin.send_answer(frame["conversation"], data="spoof")
    await twin.send_answer(frame["conversation"] + 1, data="spoof")
    assert await twin.ok("ping") == {}
    await handler.send_answer(frame["conversation"], data="real")
    assert (await sender.reply(request_id))["data"] == "real"
    # a second answer to the same conversation is dropped silently
    await handler.send_answer(frame["conversation"], data="again")
    assert await handler.ok("ping") == {}


async def test_held_no_log_line_holds_a_session_ws_id(
    cluster: Cluster,
    redis_server: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)

    def crash(value: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    def unjsonable(value: Any, context: Any) -> Any:
        return {1, 2}

    await registry(b).messaging.add_request_handler("crash", crash, ("*F", "*U"))
    await registry(b).messaging.add_request_handler("set", unjsonable)
    target = await cluster.tab(b, answer=never)
    await handles(target, "hole", addressed=True)
    sender = await cluster.tab(a)
    await registry(a).set_session_properties(
        cookie_ws_id(cluster.browser_of[sender]), {"team": "x"}
    )
    await barrier(a, b)
    assert (await ask(sender, "send_to_path", path="crash"))["code"] == "rejected"
    assert (await ask(sender, "send_to_path", path="set"))["code"] == "rejected"
    await filter_send(sender, filter="team eq 'x' or all", path="hole", timeout=0.5)
    await sender.ws.send_str('{"op": "answer", "conversation": "x"}')
    await sender.ws.send_str("not json")
    for _ in range(3):
        await sender.ws.send_str(
            json.dumps({"op": "send_to_path", "id": 1, "path": "a//b"})
        )
    assert await sender.ok("ping") == {}
    await target.close()
    ids = [cookie_ws_id(browser) for browser in cluster.browser_of.values()]
    text = caplog.text  # messages and tracebacks
    for session_ws_id in ids:
        assert str(session_ws_id) not in text


async def test_held_a_restrictive_policy_hides_whether_a_handle_is_live(
    aiohttp_client: AiohttpClient,
) -> None:
    def only_path_ok(request: Any, action: Any) -> bool:
        return (
            action.path == "ok"
            and action.filter is None
            and action.permission != "session_ws.view_session"
        )

    registry_ = SessionWSRegistry(authorize=only_path_ok)
    client = await aiohttp_client(build_app(registry_))
    victim = await open_tab(await aiohttp_client(client.server), "/live")
    prober = await open_tab(await aiohttp_client(client.server), "/live")
    try:
        for handle in (victim.handle, "no-such-handle", "x" * 500):
            frame = await prober.call("send_to_session", path="secret", session=handle)
            assert frame["code"] == "forbidden", frame
        frame = await prober.call("send_to_filter", filter="all", path="ok")
        assert frame["code"] == "forbidden"
        frame = await prober.call("add_handler", path="ok", properties=["*F"])
        assert frame["code"] == "forbidden"  # ok itself, but VIEW_SESSION is not
    finally:
        await victim.close()
        await prober.close()


async def test_held_a_session_may_send_to_itself(one: OneNode) -> None:
    me = await one.tab(answer=lambda f: {"data": ["me", f["session"], f["addressed"]]})
    await me.ok("add_handler", path="self", addressed=True)
    assert await me.ok("send_to_session", path="self/x", session=me.handle) == [
        "me",
        me.handle,
        True,
    ]
    expected, frames, _ = await filter_send(me, filter="all", path="self")
    assert (expected, [f["session"] for f in frames]) == (1, [me.handle])
