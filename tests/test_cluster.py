"""A cluster across OS processes: logout, a killed node, a frozen node, Redis restarts.

Node A runs in the test's process; node B is ``python -m tests.cluster_node``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import RedisSessionWSRegistry

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    expect_close,
    logout,
    open_ws,
    reconnected,
    registry_of,
    session_cookie_header,
)
from .logwait import watch_log
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
NODE_TTL = 1.0


@dataclass
class NodeProcess:
    """Node B: its process, port and node id."""

    process: asyncio.subprocess.Process
    port: int
    node_id: str

    def url(self, path: str) -> str:
        """The URL of ``path`` on this node."""
        return f"http://127.0.0.1:{self.port}{path}"


StartNode = Callable[[str], Awaitable[NodeProcess]]


@pytest.fixture
async def start_node(prefix: str) -> AsyncIterator[StartNode]:
    """Start node processes of this test's cluster; kill them all at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(url: str) -> NodeProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.cluster_node",
            url,
            prefix,
            str(NODE_TTL),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        started.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        ready, port, node_id = line.decode().split()
        assert ready == "READY", line
        return NodeProcess(process, int(port), node_id)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client, for the node in the other process."""
    async with aiohttp.ClientSession() as session:
        yield session


async def node_a(
    aiohttp_client: AiohttpClient, url: str, prefix: str, **options: float
) -> Client:
    """Node A, in this process, with one websocket open (the session exists)."""
    registry = RedisSessionWSRegistry(
        url, prefix=prefix, node_ttl=NODE_TTL, reconnect_max_delay=0.5, **options
    )
    client = await aiohttp_client(
        build_app(registry, routes=[web.get("/logout", logout)])
    )
    await open_ws(client)
    return client


async def open_remote_ws(
    browser: aiohttp.ClientSession, node: NodeProcess, client: Client, url: str
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """Open a websocket of ``client``'s session on ``node``; return it and the
    session id once it echoes and ``node`` has written its presence to Redis."""
    ws = await browser.ws_connect(
        node.url("/ws"), headers=session_cookie_header(client)
    )
    await ws.send_str("ping")
    assert (await ws.receive(timeout=TIMEOUT)).data == "ping"
    session_id = cookie_ws_id(client)
    registry = registry_of(client)
    assert isinstance(registry, RedisSessionWSRegistry)
    await presence_written(url, registry.backend.prefix, session_id, node.node_id)
    return ws, session_id


async def presence_written(url: str, prefix: str, session_id: str, node: str) -> None:
    """Wait (bounded) until ``node``'s presence of the session is in Redis.

    Keyspace notifications tell when the session's hash changes, so nothing
    polls: the hash is read once at the start and again at each change.
    """
    admin = aioredis.Redis.from_url(url)
    key = f"{{{prefix}}}:session:{session_id}"
    try:
        await admin.config_set("notify-keyspace-events", "Kh")
        pubsub = admin.pubsub()
        await pubsub.subscribe(f"__keyspace@0__:{key}")

        async def written() -> None:
            while (await pubsub.get_message(timeout=None))["type"] != "subscribe":
                pass  # events count from the confirmed subscription on
            while not await admin.hexists(key, node):
                await pubsub.get_message(timeout=None)

        await asyncio.wait_for(written(), TIMEOUT)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()


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
