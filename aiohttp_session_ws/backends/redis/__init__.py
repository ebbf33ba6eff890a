"""The cluster backend on Redis (needs the ``redis`` extra).

:class:`RedisBackend` keeps presence, liveness and the node bus
(:mod:`.backend`); :class:`RedisSessionStore` the live sessions' handles and
properties (:mod:`.sessions`); the Lua of both is in the ``.lua`` files
beside them (:mod:`.scripts`).
"""

try:
    import redis.asyncio  # noqa: F401 (the check that redis-py is installed)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    from ..._extras import redis_missing

    raise redis_missing("The Redis backend") from exc

from .backend import DEFAULT_PREFIX, POOL_SIZE, WRITE_BATCH, RedisBackend
from .sessions import RedisSessionStore

__all__ = [
    "DEFAULT_PREFIX",
    "POOL_SIZE",
    "WRITE_BATCH",
    "RedisBackend",
    "RedisSessionStore",
]
