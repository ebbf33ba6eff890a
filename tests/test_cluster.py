"""A cluster across OS processes: logout, a killed node, a frozen node, Redis restarts.

Node A runs in the test's process; node B is ``python -m tests.cluster_node``.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
from aiohttp import WSCloseCode
from aiohttp.pytest_plugin import AiohttpClient

from .apps import TIMEOUT, expect_close, reconnected, registry_of
from .logwait import watch_log
from .nodes import NODE_TTL, StartNode, node_a, open_remote_ws
from .redis_server import RedisServer


async def test_logout_on_node_a_closes_the_socket_on_node_b(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    a = await node_a(aiohttp_client, redis_server.url, prefix)
    b = await start_node(redis_server.url)
    remote, _ = await open_remote_ws(browser, b, a, redis_server.url)
    async with a.get("/logout") as response:
        assert response.status == 200
    assert await expect_close(remote) == WSCloseCode.OK


async def test_a_killed_node_loses_its_presence_within_the_ttl(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    a = await node_a(aiohttp_client, redis_server.url, prefix)
    b = await start_node(redis_server.url)
    remote, session_id = await open_remote_ws(browser, b, a, redis_server.url)
    registry = registry_of(a)
    assert await registry.count_connections(session_id) == 2
    with watch_log("aiohttp_session_ws.redis", f"Node {b.node_id} stopped") as reaped:
        b.process.kill()  # SIGKILL: no goodbye
        killed_at = time.monotonic()
        await reaped.wait(timeout=NODE_TTL * 5)
    assert time.monotonic() - killed_at <= NODE_TTL * 1.5
    assert await registry.session_nodes(session_id) == {registry.node_id: 1}
    assert (await remote.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.CLOSED


async def test_a_frozen_node_costs_the_close_timeout_then_catches_up(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    a = await node_a(aiohttp_client, redis_server.url, prefix, close_timeout=0.3)
    b = await start_node(redis_server.url)
    remote, session_id = await open_remote_ws(browser, b, a, redis_server.url)
    b.process.send_signal(signal.SIGSTOP)
    try:
        with watch_log("aiohttp_session_ws.nodebus", "did not answer") as silent:
            closed = await asyncio.wait_for(
                registry_of(a).close_all_session(session_id), TIMEOUT
            )
        assert closed == 1  # A's own; B never answered
        assert b.node_id in silent.records[0].getMessage()
    finally:
        b.process.send_signal(signal.SIGCONT)
    assert await expect_close(remote) == WSCloseCode.OK


async def test_after_a_redis_restart_a_close_all_still_reaches_node_b(
    own_redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    url = own_redis_server.url
    a = await node_a(aiohttp_client, url, prefix)
    b = await start_node(url)
    remote, session_id = await open_remote_ws(browser, b, a, url)
    registry = registry_of(a)
    back = reconnected(registry)
    own_redis_server.restart()  # every key is gone; the nodes republish
    await asyncio.wait_for(back.wait(), TIMEOUT)
    assert registry.healthy
    assert await registry.close_all_session(session_id) >= 1
    assert await expect_close(remote) == WSCloseCode.OK
