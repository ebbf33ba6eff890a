"""The event log of the memory backend: one ring per hub."""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Iterable, Sequence

from ..events.model import Event, EventId, EventType, RegisterEvent
from .base import EventRead, EventStore

Follower = Callable[[str, list[Event]], None]
"""Takes the events a register call appended, with the log's epoch."""


class MemoryEventLog:
    """The events of one :class:`~aiohttp_session_ws.backends.MemoryHub`."""

    def __init__(self, followers: Callable[[], Iterable[Follower]]) -> None:
        self._followers = followers
        self.epoch = secrets.token_hex(8)
        self.events: collections.deque[Event] = collections.deque()
        self.latest: dict[EventType, Event] = {}
        self.last: EventId | None = None
        self.trimmed: EventId | None = None

    def register(
        self, events: Sequence[RegisterEvent], store: EventStore
    ) -> list[Event]:
        """Append in one step (one event loop: atomic); tell every node."""
        if not events:
            return []
        now = time.time()
        ms = int(now * 1000)
        last = self.last
        if last is not None and ms <= last.ms:
            ms, first = last.ms, last.seq + 1
        else:
            first = 0
        added = [
            Event(EventId(ms, first + n), e.type, now, e.source_timestamp, e.payload)
            for n, e in enumerate(events)
        ]
        self.events.extend(added)
        self.last = added[-1].id
        for event in added:
            self.latest[event.type] = event
        self._trim(store, now)
        loop = asyncio.get_running_loop()
        for follower in self._followers():
            loop.call_soon(follower, self.epoch, added)
        return added

    def _trim(self, store: EventStore, now: float) -> None:
        retention = store.retention
        events = self.events
        oldest = None if retention.max_age is None else now - retention.max_age
        while events and (
            len(events) > retention.max_count
            or (oldest is not None and events[0].timestamp < oldest)
        ):
            self.trimmed = events.popleft().id

    def read(self, after: EventId | None, limit: int) -> EventRead:
        """The retained events after ``after``, at most ``limit``."""
        found: list[Event] = []
        for event in self.events:  # bounded by retention
            if len(found) >= limit:
                break
            if after is None or event.id > after:
                found.append(event)
        return EventRead(found, self.epoch, self.trimmed, self.last)


class MemoryEventStore(EventStore):
    """One node's view of its hub's :class:`MemoryEventLog`."""

    def __init__(self, log: MemoryEventLog) -> None:
        self.log = log

    async def register(self, events: Sequence[RegisterEvent]) -> list[Event]:
        """Append, at once."""
        return self.log.register(events, self)

    async def read(self, after: EventId | None, limit: int) -> EventRead:
        """Read the ring."""
        return self.log.read(after, limit)

    async def latest(self) -> dict[EventType, Event]:
        """The latest per type."""
        return dict(self.log.latest)
