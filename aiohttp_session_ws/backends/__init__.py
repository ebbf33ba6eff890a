"""Backends: where a registry keeps cluster state and how its nodes talk.

:class:`~aiohttp_session_ws.backends.redis.RedisBackend` lives in its own
module, which needs the ``redis`` extra.
"""

from .base import (
    Backend,
    BackendConfigurationError,
    BackendUnavailableError,
    FrameHandler,
    NodeHooks,
    SessionClosed,
    SessionStore,
)
from .memory import MemoryBackend, MemoryHub

__all__ = [
    "Backend",
    "BackendConfigurationError",
    "BackendUnavailableError",
    "FrameHandler",
    "MemoryBackend",
    "MemoryHub",
    "NodeHooks",
    "SessionClosed",
    "SessionStore",
]
