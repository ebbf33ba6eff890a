"""The live sessions of a Redis cluster: public handles and user properties.

A session's lifecycle (start, grace period, end) is decided by the presence
scripts (see :mod:`.scripts`); this store reads and changes what a live
session carries. A Redis restarted empty loses every live session: the
nodes' presence rewrites start them again (each node hears of the starts
it wrote), and the handle key comes back from the nodes that knew it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from ..base import BackendUnavailableError, PropertyValues, SessionStore
from ..memory import public_handle
from . import scripts

logger = logging.getLogger("aiohttp_session_ws.redis")

RunScript = Callable[..., Awaitable[Any]]
"""Runs a registered script with the backend's keys, tag and timeout."""
RunCommand = Callable[[Awaitable[Any]], Awaitable[Any]]
"""Awaits a Redis call with the backend's timeout and outage handling."""


class RedisSessionStore(SessionStore):
    """Handles and properties of the live sessions, in Redis.

    :param handle_key: the key of the public handles; by default a random
        one that the first node stores in Redis and every node reads. Pin it
        (the same on every node) to keep handles across a Redis that
        restarts empty while no node runs.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        tag: str,
        run: RunScript,
        command: RunCommand,
        flush: Callable[[], Awaitable[None]],
        handle_key: bytes | str | None = None,
    ) -> None:
        self._client = client
        self._flush = flush
        self._tag = tag
        self._run = run
        self._command = command
        self._pinned = handle_key is not None
        self._key = handle_key.encode() if isinstance(handle_key, str) else handle_key
        self._sync_key_script = client.register_script(scripts.HANDLE_KEY)
        self._end = client.register_script(scripts.END_SESSION)
        self._set = client.register_script(scripts.SET_PROPERTIES)
        self._get = client.register_script(scripts.PROPERTIES)

    @property
    def key_known(self) -> bool:
        """Whether handles can be computed (the cluster's key is known)."""
        return self._key is not None

    async def sync_key(self) -> None:
        """Read the cluster's handle key from Redis, or put ours there.

        Called before each full presence rewrite, so that a Redis restarted
        empty gets the key back from the nodes that knew it. A pinned key
        never touches Redis.
        """
        if self._pinned:
            return
        ours = self._key or secrets.token_urlsafe(32).encode()
        stored = bytes(await self._run(self._sync_key_script, ours))
        if self._key is not None and stored != self._key:
            logger.warning(
                "Redis holds another handle key than this node knew (it "
                "restarted empty and a new node set one first): public "
                "handles change"
            )
        self._key = stored

    def handle_of(self, session_id: str) -> str:
        """The keyed hash of the session id (HMAC-SHA256, 22 characters).

        :raises BackendUnavailableError: Redis has not answered since this
            node started, so the cluster's key is not known yet.
        """
        if self._key is None:
            raise BackendUnavailableError(
                "Redis: the cluster's handle key is not known yet (Redis has "
                "not answered since this node started)"
            )
        return public_handle(self._key, session_id)

    async def session_of(self, handle: str) -> str | None:
        """Look the handle up among the live sessions."""
        found = await self._command(self._client.get(f"{self._tag}:handle:{handle}"))
        return None if found is None else _text(found)

    async def set_properties(self, session_id: str, values: PropertyValues) -> bool:
        """Set or remove properties of a live session in one script.

        This node's presence notes are written first: a session whose
        connection just opened here is alive for the call.
        """
        await self._flush()
        setting = [(k, v) for k, v in values.items() if v is not None]
        removing = [k for k, v in values.items() if v is None]
        args: list[str | int] = [session_id, len(setting)]
        for key, value in setting:
            args += [key, value]
        args += removing
        return bool(await self._run(self._set, *args))

    async def properties(self, session_id: str) -> dict[str, str] | None:
        """Read a live session's properties, or ``None`` when it is not alive."""
        await self._flush()
        alive, flat = await self._run(self._get, session_id)
        if not alive:
            return None
        return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}

    async def properties_of_many(
        self, session_ids: Sequence[str]
    ) -> list[dict[str, str] | None]:
        """Read the properties of many sessions in one pipelined round trip."""
        if not session_ids:
            return []
        await self._flush()
        pipe = self._client.pipeline(transaction=False)
        keys = [f"{self._tag}:nodes"]
        for session_id in session_ids:
            await self._get(
                keys=keys, args=[self._tag, session_id], client=pipe
            )  # queued
        replies = await self._command(pipe.execute())
        found: list[dict[str, str] | None] = []
        for alive, flat in replies:
            found.append(
                {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
                if alive
                else None
            )
        return found

    async def end(self, session_id: str) -> bool:
        """End the session now; True if it was alive."""
        await self._flush()
        return bool(await self._run(self._end, session_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
