"""Fixtures: real redis-server processes on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

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
