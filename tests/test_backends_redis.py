"""The Redis backend: several nodes in one process, each with its own connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    BackendUnavailableError,
    RedisBackend,
    RedisSessionWSRegistry,
    SessionWSRegistry,
    session_ws,
)
from aiohttp_session_ws.ids import wire_id

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    expect_close,
    handler_exits,
    logout,
    open_ws,
    reconnected,
    registry_of,
    share_session,
)
from .logwait import watch_log
from .redis_server import RedisServer

MakeNode = Callable[..., Awaitable[Client]]
ClientWS = aiohttp.ClientWebSocketResponse
REDIS_LOG = "aiohttp_session_ws.redis"


@pytest.fixture
def make_node(aiohttp_client: AiohttpClient, prefix: str) -> MakeNode:
    """Start a node (an app with its own Redis registry) of this test's cluster."""

    async def make(redis: str | aioredis.Redis, **options: Any) -> Client:
        registry = RedisSessionWSRegistry(redis, prefix=prefix, **options)
        app = build_app(registry, routes=[web.get("/logout", logout)])
        return await aiohttp_client(app)

    return make


async def one_session_on_both(
    node_a: Client, node_b: Client
) -> tuple[ClientWS, ClientWS, str]:
    """Open a tab of one session on each node; return once both are in Redis."""
    tab_a = await open_ws(node_a)
    share_session(node_a, node_b)
    tab_b = await open_ws(node_b)
    session_id = cookie_ws_id(node_a)
    await registry_of(node_a).count_connections(session_id)  # A's write is in
    assert await registry_of(node_b).count_connections(session_id) == 2
    return tab_a, tab_b, session_id


def healthy(registry: SessionWSRegistry) -> bool:
    """The registry's health, read afresh (it changes while the test awaits)."""
    return registry.healthy


async def test_presence_is_seen_from_every_node(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url)
    node_b = await make_node(redis_server.url)
    await open_ws(node_a)
    share_session(node_a, node_b)
    tabs_b = [await open_ws(node_b) for _ in range(2)]
    session_id = cookie_ws_id(node_a)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    # a node reads its own notes: B's two tabs are written before B answers
    assert await registry_b.session_nodes(session_id) == {
        registry_a.node_id: 1,
        registry_b.node_id: 2,
    }
    assert await registry_a.count_connections(session_id) == 3
    assert await registry_a.connected_sessions() == {session_id}
    await tabs_b[0].close()
    await handler_exits(node_b, 1)
    assert await registry_b.count_connections(session_id) == 2
    assert healthy(registry_a)
    assert healthy(registry_b)


async def test_logout_on_one_node_closes_the_session_everywhere(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url)
    node_b = await make_node(redis_server.url)
    tab_a = await open_ws(node_a)
    share_session(node_a, node_b)
    tabs_b = [await open_ws(node_b) for _ in range(2)]
    session_id = cookie_ws_id(node_a)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    await registry_b.count_connections(session_id)  # B's presence is written
    with watch_log("aiohttp_session_ws", "Closed 3 websocket(s)") as closed:
        async with node_a.get("/logout") as response:
            assert response.status == 200
        for tab in [tab_a, *tabs_b]:
            assert await expect_close(tab) == WSCloseCode.OK
        await closed.wait()
    await handler_exits(node_a, 1)
    await handler_exits(node_b, 2)
    assert await registry_b.count_connections(session_id) == 0
    assert await registry_a.connected_sessions() == frozenset()


NEXT_EVENT: web.AppKey[asyncio.Event] = web.AppKey("next_event", asyncio.Event)


async def push_only(request: web.Request) -> web.WebSocketResponse:
    """A notification feed: it sends, then awaits the next event; it never reads."""
    async with session_ws(request) as ws:
        await ws.send_str("tick")
        await asyncio.wait_for(request.app[NEXT_EVENT].wait(), 4 * TIMEOUT)
    return ws


async def test_a_silent_local_tab_does_not_hold_up_the_other_nodes(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    """Local and remote sockets close at once: B need not wait for A's close."""
    registry = RedisSessionWSRegistry(redis_server.url, prefix=prefix)
    app_a = build_app(registry, routes=[web.get("/logout", logout)])
    app_a.router.add_get("/feed", push_only)
    app_a[NEXT_EVENT] = next_event = asyncio.Event()
    node_a = await aiohttp_client(app_a)
    node_b = await aiohttp_client(
        build_app(RedisSessionWSRegistry(redis_server.url, prefix=prefix))
    )
    tab_a = await node_a.ws_connect("/feed")
    assert (await tab_a.receive(timeout=TIMEOUT)).data == "tick"
    share_session(node_a, node_b)
    tab_b = await open_ws(node_b)
    assert await registry.count_connections(cookie_ws_id(node_a)) == 2
    # tab A's client is silent (asleep, or its network gone): A's close frame
    # gets no answer, and A's close() waits for one up to 10 s
    async with node_a.get("/logout") as response:
        assert response.status == 200
    assert await expect_close(tab_b) == WSCloseCode.OK
    assert await expect_close(tab_a) == WSCloseCode.OK
    next_event.set()


async def test_nodes_without_the_session_are_not_asked(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url)
    node_b = await make_node(redis_server.url)
    bystander = await make_node(redis_server.url)
    await open_ws(bystander)  # a session of its own
    _, tab_b, session_id = await one_session_on_both(node_a, node_b)
    asked: list[dict[str, Any]] = []

    async def record(body: dict[str, Any]) -> int:
        asked.append(body)
        return 0

    registry_of(bystander)._bus.handle("close_session", record)
    assert await registry_of(node_a).close_all_session(session_id) == 2
    await expect_close(tab_b)
    assert asked == []


async def test_a_malformed_frame_is_dropped_and_the_node_keeps_serving(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url)
    node_b = await make_node(redis_server.url)
    _, tab_b, session_id = await one_session_on_both(node_a, node_b)
    backend_b = registry_of(node_b).backend
    assert isinstance(backend_b, RedisBackend)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        with watch_log("aiohttp_session_ws.nodebus", "malformed") as dropped:
            await admin.publish(backend_b.inbox, b"\xff not json")
            await dropped.wait()
    finally:
        await admin.aclose()
    assert await registry_of(node_a).close_all_session(session_id) == 2
    await expect_close(tab_b)


async def test_an_app_supplied_client_is_used_and_left_open(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    app_client = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(redis_server.url)
    )
    try:
        node_a = await make_node(app_client)
        node_b = await make_node(redis_server.url)
        _, tab_b, session_id = await one_session_on_both(node_a, node_b)
        registry_a = registry_of(node_a)
        assert await registry_a.connected_sessions() == {session_id}
        assert await registry_a.close_all_session(session_id) == 2
        await expect_close(tab_b)
        await node_a.close()  # the app stops; the client is the app's own
        assert await app_client.ping()
    finally:
        await app_client.aclose()


async def test_a_client_that_decodes_responses_is_refused(
    redis_server: RedisServer,
) -> None:
    # one frame of invalid UTF-8 on the inbox would fail inside redis-py
    text_client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisBackend(text_client)
    finally:
        await text_client.aclose()


async def test_shutdown_leaves_nothing_behind(
    redis_server: RedisServer, make_node: MakeNode, prefix: str
) -> None:
    node = await make_node(redis_server.url)
    tab = await open_ws(node)
    backend = registry_of(node).backend
    assert isinstance(backend, RedisBackend)
    inbox = backend.inbox
    session = wire_id(cookie_ws_id(node))
    handle = backend.session_store.handle_of(session)
    await node.server.close()  # the app shuts down; the browser stays
    assert await expect_close(tab) == WSCloseCode.GOING_AWAY
    admin = aioredis.Redis.from_url(redis_server.url)
    tag = f"{{{prefix}}}"
    try:
        # a graceful leave: the session waits out its grace period (a rolling
        # restart must not end it), and the cluster keeps its handle key
        assert set(await admin.keys(f"{tag}:*")) == {
            f"{tag}:handle_key".encode(),
            f"{tag}:grace".encode(),
            f"{tag}:alive:{session}".encode(),
            f"{tag}:handle:{handle}".encode(),
        }
        assert await admin.pubsub_numsub(inbox) == [(inbox.encode(), 0)]
    finally:
        await admin.aclose()
    ours = [t for t in asyncio.all_tasks() if t.get_name().startswith("redis-")]
    assert ours == []


async def test_a_dead_node_is_removed_and_a_live_one_rejoins(
    redis_server: RedisServer, make_node: MakeNode, prefix: str
) -> None:
    node_a = await make_node(redis_server.url, node_ttl=1.0)
    node_b = await make_node(redis_server.url, node_ttl=1.0)
    _, _, session_id = await one_session_on_both(node_a, node_b)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    back = reconnected(registry_b)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        with (
            watch_log(REDIS_LOG, "stopped heartbeating") as reaped,
            watch_log(REDIS_LOG, "presumed dead); rejoining") as presumed_dead,
        ):
            # B's lease runs out, as if it had been frozen: a survivor reaps it
            await admin.zadd(f"{{{prefix}}}:nodes", {registry_b.node_id: 0})
            await reaped.wait(timeout=TIMEOUT)
            await presumed_dead.wait(timeout=TIMEOUT)
    finally:
        await admin.aclose()
    await asyncio.wait_for(back.wait(), TIMEOUT)  # B republished its presence
    assert await registry_a.session_nodes(session_id) == {
        registry_a.node_id: 1,
        registry_b.node_id: 1,
    }


async def test_redis_outage_local_work_goes_on_and_closes_catch_up(
    own_redis_server: RedisServer, make_node: MakeNode
) -> None:
    url = own_redis_server.url
    node_a = await make_node(url, reconnect_max_delay=0.2)
    node_b = await make_node(url, reconnect_max_delay=0.2)
    early_a, tab_b, session_id = await one_session_on_both(node_a, node_b)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    back_a, back_b = reconnected(registry_a), reconnected(registry_b)
    failed_callback = asyncio.Event()

    async def broken_callback() -> None:
        failed_callback.set()
        raise RuntimeError("the app's callback fails")

    registry_a.on_reconnect.insert(0, broken_callback)
    with watch_log(REDIS_LOG, "lost Redis") as lost:
        own_redis_server.stop()
        await lost.wait(count=2)
    assert healthy(registry_a) is False
    late_a = await open_ws(node_a)  # a socket opens during the outage
    with pytest.raises(BackendUnavailableError):
        await registry_a.count_connections(session_id)
    with watch_log("aiohttp_session_ws", "the other nodes follow") as queued:
        assert await registry_a.close_all_session(session_id) == 2
        await queued.wait()
    for tab in (early_a, late_a):
        assert await expect_close(tab) == WSCloseCode.OK
    await handler_exits(node_a, 2)  # the handlers ended cleanly
    await tab_b.send_str("still here")  # B serves its socket meanwhile
    assert (await tab_b.receive(timeout=TIMEOUT)).data == "still here"

    with watch_log("aiohttp_session_ws", "on_reconnect callback failed") as logged:
        own_redis_server.start()
        await asyncio.wait_for(back_a.wait(), TIMEOUT)
        await asyncio.wait_for(back_b.wait(), TIMEOUT)
        await logged.wait()
    assert failed_callback.is_set()
    assert await expect_close(tab_b) == WSCloseCode.OK  # the held-back close
    assert healthy(registry_a)
    assert healthy(registry_b)


async def test_presence_written_after_a_close_still_closes(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url)
    node_b = await make_node(redis_server.url, reconnect_delay=1.0)
    await open_ws(node_a)
    share_session(node_a, node_b)
    session_id = cookie_ws_id(node_a)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    back_a, back_b = reconnected(registry_a), reconnected(registry_b)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        with watch_log(REDIS_LOG, "lost Redis") as lost:
            await admin.client_kill_filter(_type="pubsub")
            await lost.wait(count=2)
    finally:
        await admin.aclose()
    await asyncio.wait_for(back_a.wait(), TIMEOUT)
    # B is away for a while: its new socket's presence is not in Redis yet
    tab_b = await open_ws(node_b)
    assert await registry_a.close_all_session(session_id) >= 1
    await asyncio.wait_for(back_b.wait(), TIMEOUT)
    assert await expect_close(tab_b) == WSCloseCode.OK


async def test_a_close_all_that_timed_out_is_sent_again(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    node_a = await make_node(redis_server.url, node_ttl=1.0, command_timeout=0.2)
    node_b = await make_node(redis_server.url)
    _, tab_b, session_id = await one_session_on_both(node_a, node_b)
    registry_a = registry_of(node_a)
    back = reconnected(registry_a)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.client_pause(400, all=False)  # writes wait: A's close times out
        with watch_log("aiohttp_session_ws", "the other nodes follow") as queued:
            assert await registry_a.close_all_session(session_id) == 1
            await queued.wait()
    finally:
        await admin.aclose()
    await asyncio.wait_for(back.wait(), TIMEOUT)  # Redis answers: sent again
    assert await expect_close(tab_b) == WSCloseCode.OK


async def test_a_node_starts_without_redis_and_joins_later(
    own_redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    own_redis_server.stop()
    registry = RedisSessionWSRegistry(
        own_redis_server.url,
        prefix=prefix,
        command_timeout=0.5,
        reconnect_max_delay=0.2,
    )
    back = reconnected(registry)
    with watch_log(REDIS_LOG, "unreachable") as unreachable:
        client = await aiohttp_client(build_app(registry))
    assert unreachable.records
    assert healthy(registry) is False
    await open_ws(client)
    own_redis_server.start()
    await asyncio.wait_for(back.wait(), TIMEOUT)
    assert healthy(registry)
    assert await registry.count_connections(cookie_ws_id(client)) == 1


async def test_stop_with_redis_down_says_the_others_will_reap(
    own_redis_server: RedisServer, prefix: str
) -> None:
    registry = RedisSessionWSRegistry(
        own_redis_server.url, prefix=prefix, command_timeout=0.5
    )
    await registry.start()
    own_redis_server.stop()
    with watch_log(REDIS_LOG, "drop it within node_ttl") as warned:
        await registry.stop()
    assert warned.records


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("prefix", ""),
        ("prefix", "a{b}"),
        ("node_ttl", 0),
        ("missed_close_window", -1),
        ("reconnect_delay", 0),
        ("reconnect_max_delay", 0),
        ("command_timeout", 0),
    ],
)
def test_options_are_validated(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        RedisBackend("redis://127.0.0.1:1/0", **{option: value})  # type: ignore[arg-type]


def test_unknown_attributes_still_raise() -> None:
    import aiohttp_session_ws

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = aiohttp_session_ws.no_such_name


async def test_a_burst_of_requests_waits_for_a_pooled_connection(
    redis_server: RedisServer, make_node: MakeNode
) -> None:
    """More concurrent reads than the pool holds queue up; no false outage."""
    node = await make_node(redis_server.url)
    registry = registry_of(node)
    burst = 300  # above redis-py 8's default pool size of 100 connections
    counts = await asyncio.wait_for(
        asyncio.gather(*(registry.count_connections(f"s{n}") for n in range(burst))),
        TIMEOUT,
    )
    assert counts == [0] * burst
    assert registry.healthy
