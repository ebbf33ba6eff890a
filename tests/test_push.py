"""Push across the cluster: node B in its own process, node A here, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SUBPROTOCOL, RedisSessionWSRegistry
from aiohttp_session_ws.ids import wire_id

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    registry_of,
    session_cookie_header,
)
from .nodes import NODE_TTL, NodeProcess, StartNode, presence_written
from .redis_server import RedisServer


async def redis_client(aiohttp_client: AiohttpClient, url: str, prefix: str) -> Client:
    registry = RedisSessionWSRegistry(
        url, prefix=prefix, node_ttl=NODE_TTL, reconnect_max_delay=0.5
    )
    return await aiohttp_client(build_app(registry))


async def live_tab(client: Client) -> aiohttp.ClientWebSocketResponse:
    """A protocol connection of the client's session, past its hello."""
    ws = await client.ws_connect("/live", protocols=(SUBPROTOCOL,))
    assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["op"] == "hello"
    return ws


async def remote_tab(
    browser: aiohttp.ClientSession, node: NodeProcess, login: Client, url: str
) -> aiohttp.ClientWebSocketResponse:
    """A protocol connection of ``login``'s session on ``node``, once in Redis."""
    ws = await browser.ws_connect(
        node.url("/live"),
        protocols=(SUBPROTOCOL,),
        headers=session_cookie_header(login),
    )
    assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["op"] == "hello"
    registry = registry_of(login)
    assert isinstance(registry, RedisSessionWSRegistry)
    await presence_written(
        url, registry.backend.prefix, cookie_ws_id(login), node.node_id
    )
    return ws


async def test_a_push_reaches_the_session_on_another_node(
    aiohttp_client: AiohttpClient,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    node_a = await redis_client(aiohttp_client, redis_server.url, prefix)
    await node_a.get("/")  # the session exists
    node_b = await start_node(redis_server.url)
    local = await live_tab(node_a)
    tab_b = await remote_tab(browser, node_b, node_a, redis_server.url)
    registry = registry_of(node_a)
    assert isinstance(registry, RedisSessionWSRegistry)
    await registry.backend._caught_up()  # node B's "I hold it too" note came
    session_ws_id = cookie_ws_id(node_a)
    assert await registry.send_to_session(session_ws_id, {"text": "hi"}) == 2
    for ws in (local, tab_b):
        frame = json.loads((await ws.receive(timeout=TIMEOUT)).data)
        assert frame == {"op": "push", "data": {"text": "hi"}}
    assert await registry.broadcast("everyone") == 2
    for ws in (local, tab_b):
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["data"] == (
            "everyone"
        )
    # a session nobody holds: no node is asked
    assert await registry.send_to_session("nobody", "x") == 0
    await tab_b.close()
    await local.close()


async def test_while_redis_is_down_a_push_reaches_the_local_connections(
    aiohttp_client: AiohttpClient,
    own_redis_server: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node_a = await redis_client(aiohttp_client, own_redis_server.url, prefix)
    tab = await live_tab(node_a)
    registry = registry_of(node_a)
    own_redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws"):
        reached = await asyncio.wait_for(
            registry.send_to_session(cookie_ws_id(node_a), "still here"), TIMEOUT
        )
    assert reached == 1
    assert "this node's connections" in caplog.text
    assert json.loads((await tab.receive(timeout=TIMEOUT)).data)["data"] == (
        "still here"
    )
    # the protocol keeps answering what needs no Redis
    await tab.send_str(json.dumps({"op": "ping", "id": 1}))
    assert json.loads((await tab.receive(timeout=TIMEOUT)).data)["op"] == "result"
    await tab.send_str(json.dumps({"op": "properties", "id": 2}))
    reply = json.loads((await tab.receive(timeout=TIMEOUT)).data)
    assert reply["code"] == "unavailable"
    await tab.close()
    own_redis_server.start()


class CommandCount:
    """Counts the Redis calls a backend makes (scripts and commands)."""

    def __init__(self, registry: RedisSessionWSRegistry) -> None:
        self.calls = 0
        backend = registry.backend
        command = backend._command

        async def counted(call: Any) -> Any:
            self.calls += 1
            return await command(call)

        backend._command = counted  # type: ignore[method-assign]


async def test_a_session_no_other_node_holds_is_pushed_without_redis(
    aiohttp_client: AiohttpClient,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    node_a = await redis_client(aiohttp_client, redis_server.url, prefix)
    tab = await live_tab(node_a)
    registry = registry_of(node_a)
    assert isinstance(registry, RedisSessionWSRegistry)
    session_ws_id = cookie_ws_id(node_a)
    await registry.session_nodes(session_ws_id)  # this node's presence is written
    counter = CommandCount(registry)
    assert await registry.send_to_session(session_ws_id, 1) == 1
    assert counter.calls == 0
    # node B begins to hold the session: its write tells node A
    node_b = await start_node(redis_server.url)
    tab_b = await remote_tab(browser, node_b, node_a, redis_server.url)
    await registry.backend._caught_up()
    calls = counter.calls
    assert await registry.send_to_session(session_ws_id, 2) == 2
    assert counter.calls == calls + 1  # one pipelined publish
    for ws in (tab, tab_b):
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["data"] == (
            1 if ws is tab else 2
        )
    assert json.loads((await tab.receive(timeout=TIMEOUT)).data)["data"] == 2
    # and stops holding it: the note reaches node A, which stops asking
    await tab_b.close()
    await presence_written(
        redis_server.url, prefix, session_ws_id, node_b.node_id, present=False
    )
    await registry.backend._caught_up()
    calls = counter.calls
    assert await registry.send_to_session(session_ws_id, 3) == 1
    assert counter.calls == calls
    await tab.close()


async def test_holders_learned_before_the_first_subscription_are_not_trusted(
    aiohttp_client: AiohttpClient,
    own_redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    """Notes of other holders sent before the node subscribed are lost."""
    url = own_redis_server.url
    own_redis_server.stop()
    registry = RedisSessionWSRegistry(
        url,
        prefix=prefix,
        node_ttl=NODE_TTL,
        command_timeout=1.0,
        reconnect_max_delay=0.5,
        handle_key="pinned",
    )
    backend = registry.backend
    make_pubsub = backend._subscriber.pubsub

    def slow_pubsub() -> Any:  # the presence write wins the race to Redis
        pubsub = make_pubsub()
        subscribe = pubsub.subscribe

        async def late(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.8)  # stands in for a slow connect
            return await subscribe(*args, **kwargs)

        pubsub.subscribe = late  # type: ignore[method-assign]
        return pubsub

    backend._subscriber.pubsub = slow_pubsub  # type: ignore[method-assign,assignment]
    node_a = await aiohttp_client(build_app(registry))
    tab_a = await live_tab(node_a)
    session_ws_id = cookie_ws_id(node_a)
    own_redis_server.start()
    await presence_written(url, prefix, session_ws_id, registry.node_id)
    node_b = await start_node(url)
    tab_b = await remote_tab(browser, node_b, node_a, url)

    async def healthy() -> None:
        while not registry.healthy:
            with contextlib.suppress(Exception):
                await backend._caught_up()

    await asyncio.wait_for(healthy(), TIMEOUT * 3)
    await backend._caught_up()
    assert await registry.send_to_session(session_ws_id, "both") == 2
    await tab_a.close()
    await tab_b.close()


async def test_a_reload_during_a_presence_write_keeps_the_other_holders(
    aiohttp_client: AiohttpClient,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    """The last connection closes and another opens while a write is on its way."""
    url = redis_server.url
    node_a = await redis_client(aiohttp_client, url, prefix)
    registry = registry_of(node_a)
    assert isinstance(registry, RedisSessionWSRegistry)
    backend = registry.backend
    await node_a.get("/")
    session_ws_id = cookie_ws_id(node_a)
    wire = wire_id(session_ws_id)
    node_b = await start_node(url)
    ran, reply_held, writes_done = (
        asyncio.Event(),
        asyncio.Event(),
        asyncio.Queue[int](),
    )
    run, remove = backend._run, backend.remove_connection

    async def slow_reply(script: Any, *args: Any) -> Any:
        reply = await run(script, *args)
        if script is backend._write and wire in args:
            if not reply_held.is_set():
                ran.set()  # it ran in Redis: A holds the session, nobody else
                await reply_held.wait()
            writes_done.put_nowait(1)
        return reply

    removed = asyncio.Event()

    def noting_removal(session_id: str, connection_id: str) -> None:
        remove(session_id, connection_id)
        if session_id not in backend._local:
            removed.set()

    backend._run = slow_reply  # type: ignore[method-assign]
    backend.remove_connection = noting_removal  # type: ignore[method-assign]
    first = await live_tab(node_a)
    await asyncio.wait_for(ran.wait(), TIMEOUT)
    tab_b = await remote_tab(browser, node_b, node_a, url)  # its note reaches A
    await backend._caught_up()
    await first.close()  # a reload, while the write's answer is on its way
    await asyncio.wait_for(removed.wait(), TIMEOUT)
    second = await live_tab(node_a)
    reply_held.set()
    await asyncio.wait_for(writes_done.get(), TIMEOUT)  # the held one
    await asyncio.wait_for(writes_done.get(), TIMEOUT)  # the reload's
    await backend._caught_up()
    assert not backend.holds_alone(wire)
    assert await registry.send_to_session(session_ws_id, "both") == 2
    await second.close()
    await tab_b.close()


async def test_an_id_that_only_equals_a_connected_one_is_refused(
    aiohttp_client: AiohttpClient,
) -> None:
    from aiohttp_session_ws import SessionWSRegistry

    registry = SessionWSRegistry(id_factory=lambda request: 1)
    client = await aiohttp_client(build_app(registry))
    tab = await live_tab(client)
    assert await registry.send_to_session(1, "one") == 1
    for wrong in (True, 1.0):
        with pytest.raises(TypeError):
            await registry.send_to_session(wrong, "x")
    await tab.close()
