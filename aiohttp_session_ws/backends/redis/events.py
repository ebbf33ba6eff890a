"""The event log of a Redis cluster: one stream, and a follower on each node.

``register`` is one script (``events_register.lua``): the batch's ids are
consecutive (``<ms>-<seq>``, ms from Redis ``TIME``, or the last id's when
the clock is not ahead of it), it has one timestamp, the latest event of
each type is kept beside the log, and retention trims the log in the same
step. ``read`` is one script too (``events_read.lua``): a page of the log
with its epoch, the largest id trimmed and the last id. The keys are listed
in :mod:`.scripts`.

Each node follows the log on a connection of its own (a blocking ``XREAD``
holds it): from the log's last id when the node starts (what came before is
history), handing each new event to :attr:`~..base.NodeHooks.on_events`
once, in id order. After a lost connection it reads on from the last id it
handed on, so it catches up with no gap and no repeat; a log with another
epoch (Redis restarted empty, or flushed) is followed from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from ...events.model import (
    Event,
    EventId,
    EventType,
    RegisterEvent,
    format_event_type,
    parse_event_type,
    payload_from_json,
    payload_to_json,
)
from ..base import BackendUnavailableError, EventRead, EventStore
from . import scripts

if TYPE_CHECKING:
    from .backend import RedisBackend

logger = logging.getLogger("aiohttp_session_ws.redis")

FOLLOW_BLOCK = 5.0
"""Seconds a follower's ``XREAD`` waits for new events before it looks
again (and checks that the log is still the same)."""

FOLLOW_BATCH = 1000
"""Events a follower reads at most per ``XREAD``."""

_START = "0-0"
"""An id before every id of a log (the start of a new one)."""


class RedisEventStore(EventStore):
    """The cluster's event log in Redis, and this node's follower of it."""

    follow_block: float = FOLLOW_BLOCK
    follow_batch: int = FOLLOW_BATCH

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        register = backend.client.register_script
        self._register = register(scripts.EVENTS_REGISTER)
        self._read = register(scripts.EVENTS_READ)
        self._key = f"{backend._tag}:events"
        self._latest_key = f"{backend._tag}:events:latest"
        # the log this node follows: its epoch, and the last id handed on
        # (None: not known yet, as at start)
        self._epoch: str | None = None
        self._position: str | None = None
        self._started: asyncio.Future[None] | None = None
        self._delay = backend.reconnect_delay
        self._lost = False
        self.connection_name = f"{backend._tag}:events"
        """The client name of the follower's connection (unless the client's
        options name its connections), with ``:<node>`` after it."""

    # the store
    async def register(self, events: Sequence[RegisterEvent]) -> list[Event]:
        """Append in one script; the events come back with ids and timestamp.

        A call whose reply was lost and that the client retried at once adds
        nothing the second time (a token marks it).
        """
        if not events:
            return []
        retention = self.retention
        max_age = retention.max_age
        args: list[str | int] = [
            secrets.token_hex(8),
            secrets.token_hex(16),
            int(max(self._backend.command_timeout, 1.0) * 4000),
            max(int(retention.max_count), 0),
            "" if max_age is None else max(int(max_age * 1e6), 0),
        ]
        for event in events:
            source = event.source_timestamp
            args += [
                format_event_type(event.type),
                "" if source is None else repr(float(source)),
                json.dumps(payload_to_json(event.payload), separators=(",", ":")),
            ]
        ms, seq, timestamp, _ = await self._backend._run(self._register, *args)
        first, at = EventId(int(ms), int(seq)), float(timestamp)
        return [
            Event(
                EventId(first.ms, first.seq + n),
                event.type,
                at,
                event.source_timestamp,
                event.payload,
            )
            for n, event in enumerate(events)
        ]

    async def read(self, after: EventId | None, limit: int) -> EventRead:
        """A page of the log with its state, in one script.

        A log without an epoch yet (Redis new or emptied) gets one.
        """
        return await self._read_log(after, limit, secrets.token_hex(8))

    async def _read_log(
        self, after: EventId | None, limit: int, epoch: str
    ) -> EventRead:
        """:meth:`read`; with ``epoch`` ``""`` a log without one is left so."""
        reply = await self._backend._run(
            self._read, epoch, "" if after is None else str(after), max(int(limit), 0)
        )
        epoch, trimmed, last, entries = reply
        events = [
            event
            for event in (self._decode(entry) for entry in entries)
            if event is not None
        ]
        return EventRead(events, _text(epoch), _event_id(trimmed), _event_id(last))

    async def latest(self) -> dict[EventType, Event]:
        """The latest event of each type (one ``HGETALL``)."""
        found: dict[EventType, Event] = {}
        stored = await self._backend._command(
            self._backend.client.hgetall(self._latest_key)
        )
        for type_text, value in stored.items():
            try:
                event_id, at, source, payload = _text(value).split("\n", 3)
                event = Event(
                    EventId.parse(event_id),
                    parse_event_type(_text(type_text)),
                    float(at),
                    float(source) if source else None,
                    payload_from_json(json.loads(payload)),
                )
            except (ValueError, TypeError):  # UnicodeDecodeError is one
                self._malformed(len(type_text) + len(value))
                continue
            found[event.type] = event
        return found

    # the follower
    def begin(self) -> None:
        """Follow from the log as it is when the node starts (at its start)."""
        self._epoch = self._position = None
        self._started = asyncio.get_running_loop().create_future()
        self._delay = self._backend.reconnect_delay
        self._lost = False

    async def wait_started(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the follower knows where to start."""
        if self._started is not None and not self._started.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._started), timeout)

    async def follow_once(self) -> None:
        """Follow the log until the connection fails; then back off.

        Each round first reads the log's epoch: at start it takes the log's
        last id as its starting point; after a failure it goes on from the
        last id it handed on, or from the start of a log of another epoch.
        """
        backend = self._backend
        connection: AbstractConnection | None = None
        try:
            await self._check_epoch()
            connection = self._connection()
            async with asyncio.timeout(backend.command_timeout):
                await connection.connect()  # type: ignore[no-untyped-call]
            if self._lost:
                self._lost = False
                logger.info("Node %s follows the event log again", backend.node_id)
            self._delay = backend.reconnect_delay
            while not backend._stopping.is_set():
                await self._read_once(connection)
        except (TimeoutError, RedisError, OSError, BackendUnavailableError) as exc:
            if isinstance(exc, RedisError) and _refuses(exc):
                raise  # not an outage: _keep_running logs it and backs off
            if not self._lost and not backend._stopping.is_set():
                self._lost = True
                logger.warning(
                    "Node %s lost its event log follower connection (%s); it "
                    "catches up when it is back",
                    backend.node_id,
                    str(exc) or type(exc).__name__,
                )
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        connection.disconnect(), backend.command_timeout
                    )
        if backend._stopping.is_set():
            return
        delay = self._delay
        await backend._pause(delay * random.uniform(0.5, 1.0))
        self._delay = min(delay * 2, backend.reconnect_max_delay)

    def _connection(self) -> AbstractConnection:
        """A connection of the follower's own, with the client's options.

        Its reads wait longer than a blocking ``XREAD``; it is not the
        pool's, so it never holds up a command.
        """
        pool = self._backend.client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        if not connection.client_name:
            connection.client_name = f"{self.connection_name}:{self._backend.node_id}"
        return connection

    async def _check_epoch(self) -> None:
        """Read the log's epoch (and, at start, its last id: the start point).

        It writes nothing: a log without events has no epoch (``""`` here)
        until the first register gives it one.
        """
        state = await self._read_log(None, 0, "")
        if self._position is None or self._epoch is None:
            self._epoch = state.epoch
            self._position = _START if state.last is None else str(state.last)
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
        elif state.epoch != self._epoch:
            if not self._epoch:  # the log had none (no events) when we looked
                self._epoch, self._position = state.epoch, _START
                return
            logger.warning(
                "The event log is not the one node %s followed (Redis lost it: "
                "epoch %s, now %s); following the new one from its start",
                self._backend.node_id,
                self._epoch,
                state.epoch,
            )
            self._epoch, self._position = state.epoch, _START
            self._new_epoch()
        elif state.trimmed is not None and EventId.parse(self._position) < (
            state.trimmed
        ):
            self._position = str(state.trimmed)
            self._gap(
                "this node fell behind the log's retention: events up to "
                f"{state.trimmed} were trimmed before it read them"
            )

    async def _read_once(self, connection: AbstractConnection) -> None:
        """One blocking ``XREAD`` after the last id handed on; hand on its events."""
        assert self._position is not None
        block = self.follow_block
        await connection.send_command(
            "XREAD",
            "COUNT",
            max(self.follow_batch, 1),
            "BLOCK",
            max(int(block * 1000), 1),
            "STREAMS",
            self._key,
            self._position,
        )
        reply = await connection.read_response(
            timeout=block + self._backend.command_timeout
        )
        if not reply:  # nothing new within the block: is it still our log?
            await self._check_epoch()
            return
        streams = (
            reply.values()
            if isinstance(reply, Mapping)
            else (entries for _, entries in reply)
        )
        for entries in streams:
            await self._take(entries)

    async def _take(self, entries: Sequence[Any]) -> None:
        """Hand on the events of ``entries`` (read after the position), in order."""
        events: list[Event] = []
        for entry in entries:
            marked = _fields(entry[1]) if len(entry) == 2 else None
            mark = marked.get(b"e") if marked else None
            if mark is not None and _text(mark) != self._epoch:
                # the entry is of another log (Redis lost ours) unless the
                # log's epoch says otherwise
                self._hand_on(events)
                events = []
                epoch = self._epoch
                await self._check_epoch()
                if self._epoch != epoch:
                    return  # read on from the new log's start
            before = marked.get(b"pv") if marked else None
            if (
                before is not None
                and self._position != _START
                and _text(before) != self._position
            ):
                # the log has events between our position and this entry
                # that we never read: retention trimmed them first
                self._hand_on(events)
                events = []
                self._gap(
                    "this node fell behind the log's retention: events were "
                    "trimmed before it read them"
                )
            event = self._decode(entry)
            self._position = _text(entry[0])
            if event is not None:
                events.append(event)
        self._hand_on(events)

    def _gap(self, reason: str) -> None:
        hooks = self._backend._hooks
        if hooks is None:
            return
        logger.warning("Node %s: %s", self._backend.node_id, reason)
        try:
            hooks.on_events_gap(reason)
        except Exception:
            logger.exception(
                "The on_events_gap hook failed on node %s", self._backend.node_id
            )

    def _new_epoch(self) -> None:
        """Tell the node's subscribers now that the log they followed is gone."""
        hooks = self._backend._hooks
        if hooks is None or not self._epoch:
            return
        try:
            hooks.on_events(self._epoch, [])
        except Exception:
            logger.exception(
                "The on_events hook failed on node %s", self._backend.node_id
            )

    def _hand_on(self, events: list[Event]) -> None:
        hooks = self._backend._hooks
        if not events or hooks is None or self._epoch is None:
            return
        try:
            hooks.on_events(self._epoch, events)
        except Exception:
            logger.exception(
                "The on_events hook failed on node %s", self._backend.node_id
            )

    def _decode(self, entry: Sequence[Any]) -> Event | None:
        """The event of a stream entry ``[id, [field, value, ...]]``; or None.

        A malformed one is logged (by its size only) and skipped.
        """
        try:
            raw_id, raw_fields = entry
            fields = _fields(raw_fields)
            if fields is None:
                raise ValueError("not fields")
            source = fields[b"st"]
            return Event(
                EventId.parse(_text(raw_id)),
                parse_event_type(_text(fields[b"t"])),
                float(fields[b"ts"]),
                float(source) if source else None,
                payload_from_json(json.loads(fields[b"p"])),
            )
        except (KeyError, ValueError, TypeError):  # UnicodeDecodeError is one
            self._malformed(_size(entry))
            return None

    def _malformed(self, size: int) -> None:
        logger.warning(
            "Skipped a malformed event of %d bytes in the event log %s",
            size,
            self._key,
        )


def _fields(raw: Any) -> dict[bytes, bytes] | None:
    """An entry's fields from ``[field, value, ...]`` (or a map); None if not."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, (list, tuple)) and len(raw) % 2 == 0:
        pairs = list(zip(raw[::2], raw[1::2], strict=True))
    else:
        return None
    fields: dict[bytes, bytes] = {}
    for name, value in pairs:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return None
        fields[name] = value
    return fields


def _size(value: Any) -> int:
    """The bytes in a reply (what a log may tell of bad data)."""
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_size(k) + _size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_size(item) for item in value)
    return 0


def _event_id(value: bytes | str) -> EventId | None:
    """An id from a script's text (``''`` and ``0-0``: none)."""
    text = _text(value)
    if not text or text == _START:
        return None
    return EventId.parse(text)


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _refuses(exc: RedisError) -> bool:
    from .backend import _refuses as refuses

    return refuses(exc)
