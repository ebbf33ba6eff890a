"""Cluster nodes for the tests: node B in its own OS process, node A in this one.

Node B is ``python -m tests.cluster_node``; the fixtures that start it are in
``conftest.py``.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import RedisSessionWSRegistry
from aiohttp_session_ws.ids import wire_id

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    logout,
    open_ws,
    registry_of,
    session_cookie_header,
)

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

    async def said(self, what: str) -> str:
        """Wait (bounded) for the node's next line starting with ``what``;
        return the rest of it."""
        assert self.process.stdout is not None

        async def next_line() -> str:
            assert self.process.stdout is not None
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise EOFError(f"the node ended before saying {what}")
                if line.startswith(what + " "):
                    return line[len(what) + 1 :].strip()

        return await asyncio.wait_for(next_line(), TIMEOUT)


class StartNode:
    """Starts node processes of one test's cluster; :meth:`kill_all` ends them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.started: list[asyncio.subprocess.Process] = []

    async def __call__(
        self, url: str, node_ttl: float = NODE_TTL, grace: float = 30.0
    ) -> NodeProcess:
        """Start a node on ``url``; return once it has joined the cluster."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.cluster_node",
            url,
            self.prefix,
            str(node_ttl),
            str(grace),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        self.started.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        ready, port, node_id = line.decode().split()
        assert ready == "READY", line
        return NodeProcess(process, int(port), node_id)

    async def kill_all(self) -> None:
        """Kill every node this test started (resuming a stopped one first)."""
        for process in self.started:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def node_a(
    aiohttp_client: AiohttpClient, url: str, prefix: str, **options: Any
) -> Client:
    """Node A, in this process, with one websocket open (the session exists)."""
    options.setdefault("node_ttl", NODE_TTL)
    registry = RedisSessionWSRegistry(
        url, prefix=prefix, reconnect_max_delay=0.5, **options
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


async def presence_written(
    url: str, prefix: str, session_id: str, node: str, *, present: bool = True
) -> None:
    """Wait (bounded) until ``node``'s presence of the session is in Redis
    (or, with ``present=False``, gone from it).

    Keyspace notifications tell when the session's hash changes, so nothing
    polls: the hash is read once at the start and again at each change.
    """
    admin = aioredis.Redis.from_url(url)
    key = f"{{{prefix}}}:session:{wire_id(session_id)}"
    try:
        await admin.config_set("notify-keyspace-events", "Kh")
        pubsub = admin.pubsub()
        await pubsub.subscribe(f"__keyspace@0__:{key}")

        async def written() -> None:
            while (await pubsub.get_message(timeout=None))["type"] != "subscribe":
                pass  # events count from the confirmed subscription on
            while bool(await admin.hexists(key, node)) != present:
                await pubsub.get_message(timeout=None)

        await asyncio.wait_for(written(), TIMEOUT)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
