"""Session-bound websockets for aiohttp: track and close every websocket of a login."""

from .backends import Backend, MemoryBackend, MemoryHub
from .registry import (
    DEFAULT_ID_FACTORY,
    DEFAULT_SESSION_KEY,
    ConnectionRecord,
    SessionWSRegistry,
)
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

__version__ = "2.0.0.dev0"

__all__ = [
    "DEFAULT_ID_FACTORY",
    "DEFAULT_SESSION_KEY",
    "REGISTRY_APP_KEY",
    "REGISTRY_KEY",
    "Backend",
    "ConnectionRecord",
    "MemoryBackend",
    "MemoryHub",
    "SessionWSRegistry",
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
