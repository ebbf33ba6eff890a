"""A registry whose cluster state lives in Redis: one line to run on several nodes."""

from __future__ import annotations

from typing import Any

from ._extras import redis_missing

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise redis_missing("RedisSessionWSRegistry") from exc

from .backends.redis import DEFAULT_PREFIX, RedisBackend
from .registry import SessionWSRegistry


class RedisSessionWSRegistry(SessionWSRegistry):
    """:class:`SessionWSRegistry` on a :class:`~aiohttp_session_ws.RedisBackend`.

    ``RedisSessionWSRegistry("redis://127.0.0.1:6379/0")`` is
    ``SessionWSRegistry(backend=RedisBackend("redis://127.0.0.1:6379/0"))``.
    The Redis options go to the backend (see
    :class:`~aiohttp_session_ws.RedisBackend`), the rest to the registry.
    """

    backend: RedisBackend

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_ttl: float = 10.0,
        missed_close_window: float = 300.0,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        command_timeout: float = 5.0,
        handle_key: bytes | str | None = None,
        **registry_options: Any,
    ) -> None:
        backend = RedisBackend(
            redis,
            prefix=prefix,
            node_ttl=node_ttl,
            missed_close_window=missed_close_window,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            command_timeout=command_timeout,
            handle_key=handle_key,
        )
        super().__init__(backend=backend, **registry_options)
