"""Session-bound websockets for aiohttp: track, push to and close those of a login."""

from typing import TYPE_CHECKING, Any

from .authorization import Action, aiohttp_security_policy, deny_all
from .backends import (
    Backend,
    BackendConfigurationError,
    BackendUnavailableError,
    MemoryBackend,
    MemoryHub,
)
from .browser import add_browser_client
from .endpoint import serve_protocol, session_ws_endpoint, session_ws_protocol
from .peers import Peer
from .protocol import (
    SUBPROTOCOL,
    Arg,
    CloseCode,
    ErrorCode,
    Op,
    ProtocolError,
    ProtocolLimits,
    Request,
)
from .registry import (
    DEFAULT_ID_FACTORY,
    DEFAULT_SESSION_KEY,
    ConnectionRecord,
    SessionWSRegistry,
)
from .stats import Stats
from .web import (
    REGISTRY_APP_KEY,
    REGISTRY_KEY,
    delete_session_ws_id,
    ensure_session_ws_id,
    get_registry,
    get_session_ws_id,
    new_session_ws_id,
    schedule_close_all_session_ws,
    session_ws,
    session_ws_middleware,
    setup,
    setup_session_ws,
)

if TYPE_CHECKING:
    from .backends.redis import RedisBackend
    from .redis_registry import RedisSessionWSRegistry

__version__ = "2.0.0.dev0"

_LAZY = {
    "RedisBackend": "aiohttp_session_ws.backends.redis",
    "RedisSessionWSRegistry": "aiohttp_session_ws.redis_registry",
}


def __getattr__(name: str) -> Any:
    """Import the Redis names on first use: redis-py is an optional dependency."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ID_FACTORY",
    "DEFAULT_SESSION_KEY",
    "REGISTRY_APP_KEY",
    "REGISTRY_KEY",
    "SUBPROTOCOL",
    "Action",
    "Arg",
    "Backend",
    "BackendConfigurationError",
    "BackendUnavailableError",
    "CloseCode",
    "ConnectionRecord",
    "ErrorCode",
    "MemoryBackend",
    "MemoryHub",
    "Op",
    "Peer",
    "ProtocolError",
    "ProtocolLimits",
    "RedisBackend",
    "RedisSessionWSRegistry",
    "Request",
    "SessionWSRegistry",
    "Stats",
    "add_browser_client",
    "aiohttp_security_policy",
    "deny_all",
    "serve_protocol",
    "session_ws_endpoint",
    "session_ws_protocol",
    "delete_session_ws_id",
    "ensure_session_ws_id",
    "get_registry",
    "get_session_ws_id",
    "new_session_ws_id",
    "schedule_close_all_session_ws",
    "session_ws",
    "session_ws_middleware",
    "setup",
    "setup_session_ws",
]
