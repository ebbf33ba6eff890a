"""Fixtures: real redis-server processes on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from .nodes import StartNode
from .redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the tests that do not stop it."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop, restart or kill."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone, so tests sharing a server never meet."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def start_node(prefix: str) -> AsyncIterator[StartNode]:
    """Start node processes of this test's cluster; kill them all at the end."""
    starter = StartNode(prefix)
    yield starter
    await starter.kill_all()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client, for the node in the other process."""
    async with aiohttp.ClientSession() as session:
        yield session
