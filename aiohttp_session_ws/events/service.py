"""The event bus: register, subscribe (with replay), query (see :doc:`/events`).

The backend keeps one ordered log for the cluster and hands this node every
new event once, in id order; this service fans each one out to the
subscriptions that match it (found through an index, not a scan), encoded
once per node.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from ..backends.base import Backend, BackendUnavailableError, EventRead
from ..peers import Peer
from ..protocol import encode
from ..tasks import TaskOwner
from .model import (
    Event,
    EventId,
    EventPayloadJson,
    EventType,
    RegisterEvent,
    check_event_type,
    event_to_json,
)
from .queries import (
    QueryLatestParams,
    QueryResult,
    QueryTimeseriesParams,
    run_latest,
    run_timeseries,
)
from .subscriptions import EventTypeCollection, Subscription

logger = logging.getLogger("aiohttp_session_ws.events")

PAGE = 500
"""Events read from the log at once, in a replay."""
MAX_BUFFER = 10_000
"""Events a server subscription holds for a slow consumer before it fails."""
MAX_REGISTER = 1000
"""Events of one register call at most."""
QUERY_CAP = 1000
"""Events one query returns at most (``more_follows`` says there are more)."""
SESSION_EVENT_PREFIX: EventType = ("session_ws", "session")
"""The events of the session lifecycle: ``session_ws/session/started`` and
``session_ws/session/ended`` (see :doc:`/events`)."""

EventCallback = Callable[[Event], "Awaitable[None] | None"]
"""Called with each event of a subscription (sync or async)."""


class EventsError(Exception):
    """An event operation failed: :attr:`reason` says why."""


class EventsUnavailableError(EventsError, ConnectionError):
    """The event log cannot be reached (Redis is down)."""


class SubscriptionOverflowError(EventsError):
    """A server subscription's consumer fell more than ``max_buffer`` behind."""


class _Subscriber:
    """One subscription as the fan-out sees it: what it has had, what waits."""

    __slots__ = ("buffer", "epoch", "last", "replaying", "subscription")

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.epoch: str | None = None  # of the log it follows
        self.last: EventId | None = None
        self.replaying = True
        self.buffer: list[tuple[Event, bytes | None]] = []

    async def take(
        self, events: list[tuple[Event, bytes | None]], *, replay: bool
    ) -> bool:
        """Deliver events newer than :attr:`last`, in order.

        False if it cannot take more (it is gone).
        """
        raise NotImplementedError

    async def lost(self, epoch: str, reason: str) -> None:
        """The log was lost: what comes next is of a new epoch."""
        raise NotImplementedError

    async def replay_stopped(self, reason: str) -> None:
        """The replay could not send everything: the consumer must know."""
        raise NotImplementedError


class EventSubscription(_Subscriber):
    """A server-side subscription: iterate it, or give it a callback.

    Created by :meth:`Events.subscribe`. :attr:`recovered` tells whether the
    events after ``since`` could all be replayed.
    """

    __slots__ = (
        "_callback",
        "_changed",
        "_closed",
        "_error",
        "_events",
        "_max",
        "_room",
        "_service",
        "_task",
        "position",
        "reason",
        "recovered",
    )

    def __init__(
        self,
        service: Events,
        subscription: Subscription,
        max_buffer: int,
        callback: EventCallback | None,
    ) -> None:
        super().__init__(subscription)
        self._service = service
        self._max = max_buffer
        self._callback = callback
        self._events: collections.deque[Event] = collections.deque()
        self._changed = asyncio.Event()
        self._room = asyncio.Event()  # the consumer took an event
        self._closed = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self.recovered: bool | None = None
        """True: every event after ``since`` came; False: not (see
        :attr:`reason`); None: no ``since`` was given."""
        self.reason: str | None = None
        """Why it did not recover."""
        self.position: EventId | None = None
        """The log's last id when it was subscribed (resume from it)."""

    async def take(
        self, events: list[tuple[Event, bytes | None]], *, replay: bool
    ) -> bool:
        """Queue the new events for the consumer."""
        if self._closed:
            return False
        for event, _ in events:
            if self.last is None or event.id > self.last:
                self.last = event.id
                self._events.append(event)
        self._changed.set()
        if self._callback is not None and self._task is None:
            self._task = self._service._tasks.spawn(
                self._feed(), name="events-callback"
            )
        if replay:  # a replay waits for the consumer (live events would not)
            return await self._wait_for_room()
        if len(self._events) > self._max:
            self._fail(
                SubscriptionOverflowError(
                    f"the subscription's consumer is over {self._max} events behind"
                )
            )
            return False
        return True

    async def _wait_for_room(self) -> bool:
        while len(self._events) > self._max and not self._closed:
            self._room.clear()
            await self._room.wait()
        return not self._closed

    async def replay_stopped(self, reason: str) -> None:
        """Note that the replay was cut short (:attr:`recovered` turns False)."""
        self.recovered, self.reason = False, reason

    async def lost(self, epoch: str, reason: str) -> None:
        """Note that the log was lost (:attr:`recovered` turns False)."""
        self.last = None
        self.epoch = epoch
        self.recovered, self.reason = False, reason
        logger.warning("An event subscription lost events: %s", reason)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.close()

    async def _feed(self) -> None:
        """Run the callback over what waits, in order, in its own task."""
        try:
            while self._events and not self._closed:
                event = self._events.popleft()
                self._room.set()
                assert self._callback is not None
                try:
                    result = self._callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("An event callback failed")
        finally:
            self._task = None
            if self._events and not self._closed:
                self._task = self._service._tasks.spawn(
                    self._feed(), name="events-callback"
                )

    def close(self) -> None:
        """End the subscription (again: nothing); a running callback is cancelled."""
        if not self._closed:
            self._closed = True
            self._service._drop(self)
            self._changed.set()
            self._room.set()
            if self._task is not None:
                self._task.cancel()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        self._room.set()
        return self._events.popleft()

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ConnectionSubscription(_Subscriber):
    """A client connection's subscription: events go out as ``events`` frames."""

    __slots__ = ("id", "peer")

    def __init__(
        self, peer: Peer, subscription_id: int, subscription: Subscription
    ) -> None:
        super().__init__(subscription)
        self.peer = peer
        self.id = subscription_id

    async def take(
        self, events: list[tuple[Event, bytes | None]], *, replay: bool
    ) -> bool:
        """Send one ``events`` frame of the new events (encoded once per node)."""
        fresh = []
        for event, encoded in events:
            if self.last is not None and event.id <= self.last:
                continue
            if encoded is None:
                try:
                    encoded = encode(event_to_json(event))
                except (TypeError, ValueError):  # never registered so: skip it
                    logger.error("Skipped an event that JSON cannot carry")
                    continue
            fresh.append(encoded)
        if not fresh:
            return True
        self.last = events[-1][0].id
        head = b'{"op":"events","subscription":%d,%s"events":[' % (
            self.id,
            b'"replay":true,' if replay else b"",
        )
        frame = head + b",".join(fresh) + b"]}"
        if replay:
            # not droppable: a dropped replay frame would make the client
            # replay again, and again; and the next page waits until the
            # client has read this one (a client that reads too slowly
            # overflows its queue and is closed, 1013)
            if not await self.peer.send(frame):
                return False
            return await self.peer.drained()
        # droppable: a client that missed frames resubscribes from its last
        # id, and gets them from the history
        return await self.peer.deliver(frame)

    async def replay_stopped(self, reason: str) -> None:
        """Tell the client to resubscribe from its last id.

        An empty frame saying frames were missed, as the slow-consumer
        policy does.
        """
        logger.warning("A client's replay stopped: %s", reason)
        await self.peer.send(
            b'{"missed":1,"op":"events","subscription":%d,"events":[]}' % self.id
        )

    async def lost(self, epoch: str, reason: str) -> None:
        """Tell the client with an ``events_lost`` frame."""
        self.last = None
        frame = encode(
            {
                "op": "events_lost",
                "subscription": self.id,
                "epoch": epoch,
                "reason": reason,
            }
        )
        await self.peer.send(frame)


class Events:
    """The event service (``registry.events``), see :doc:`/events`."""

    def __init__(self, backend: Backend, tasks: TaskOwner) -> None:
        self._backend = backend
        self._tasks = tasks
        self._index: EventTypeCollection[_Subscriber] = EventTypeCollection()
        self._epoch: str | None = None
        self._ids = itertools.count(1)
        self._of_peer: dict[Peer, dict[int, ConnectionSubscription]] = {}
        self._subscribers: set[_Subscriber] = set()
        self._incoming: collections.deque[tuple[str, list[Event]]] = collections.deque()
        self._fanning: asyncio.Task[None] | None = None
        self._epochs: dict[str, int] = {}  # epoch -> the order met
        # the retained log as this node follows it, for queries (None: unknown)
        self._mirror: collections.deque[Event] | None = None
        self._mirror_epoch: str | None = None
        self._mirror_meanwhile: list[Event] | None = None

    # registering
    async def register(
        self, events: Iterable[RegisterEvent], with_response: bool = False
    ) -> list[Event] | None:
        """Register events: ids and one timestamp are given by the server.

        The events of one call get consecutive ids. Returns them with
        ``with_response`` (else ``None``).

        :raises ValueError: an event type is invalid, or over
            :data:`MAX_REGISTER` events.
        :raises EventsUnavailableError: the log cannot be reached.
        """
        batch = list(events)
        if len(batch) > MAX_REGISTER:
            raise ValueError(f"at most {MAX_REGISTER} events in one register call")
        for event in batch:
            if isinstance(event, RegisterEvent) and isinstance(
                event.payload, EventPayloadJson
            ):
                try:
                    encode(event.payload.data)  # what every subscriber is sent
                except (TypeError, ValueError):
                    raise ValueError(
                        "an event payload must be JSON that can be sent: no "
                        "NaN, infinity, lone surrogate or other type"
                    ) from None
            if not isinstance(event, RegisterEvent):
                raise TypeError(
                    f"register takes RegisterEvent, not {type(event).__name__}"
                )
            check_event_type(event.type)
        if not batch:
            return [] if with_response else None
        try:
            registered = await self._backend.event_store.register(batch)
        except BackendUnavailableError as exc:
            raise EventsUnavailableError(
                f"the event log cannot be reached ({exc})"
            ) from None
        return registered if with_response else None

    # subscribing
    async def subscribe(
        self,
        query_types: Iterable[EventType],
        since: EventId | None = None,
        epoch: str | None = None,
        *,
        on_event: EventCallback | None = None,
        max_buffer: int = MAX_BUFFER,
    ) -> EventSubscription:
        """Subscribe in server code: iterate the result, or pass ``on_event``.

        With ``since`` (and the ``epoch`` it came from), the retained events
        after it come first, then live ones, with no gap and no duplicate;
        :attr:`EventSubscription.recovered` says whether that was possible.
        A slow ``on_event`` never stalls the other subscribers: it runs in
        its own task.

        :raises ValueError: a query type is invalid.
        :raises EventsUnavailableError: the log cannot be reached.
        """
        subscription = Subscription(query_types)
        subscriber = EventSubscription(self, subscription, max_buffer, on_event)
        recovered, reason, read = await self._start(subscriber, since, epoch)
        subscriber.recovered, subscriber.reason = recovered, reason
        subscriber.epoch = read.epoch
        subscriber.position = read.last
        if recovered:  # replayed in the background, as the consumer reads
            self._tasks.spawn(
                self._replay(subscriber, since, read), name="events-replay"
            )
        else:
            await self._replay(subscriber, None, read)
        return subscriber

    async def subscribe_connection(
        self,
        peer: Peer,
        query_types: Iterable[EventType],
        since: EventId | None,
        epoch: str | None,
        max_subscriptions: int,
    ) -> tuple[ConnectionSubscription, bool | None, str | None, EventRead]:
        """Start a client connection's subscription (op ``subscribe``).

        Its replay is still to run (:meth:`replay`).
        """
        mine = self._of_peer.setdefault(peer, {})
        if len(mine) >= max_subscriptions:
            raise LookupError(f"this connection has {max_subscriptions} subscriptions")
        subscriber = ConnectionSubscription(
            peer, next(self._ids), Subscription(query_types)
        )
        mine[subscriber.id] = subscriber
        try:
            recovered, reason, read = await self._start(subscriber, since, epoch)
        except BaseException:
            mine.pop(subscriber.id, None)
            raise
        return subscriber, recovered, reason, read

    async def _start(
        self, subscriber: _Subscriber, since: EventId | None, epoch: str | None
    ) -> tuple[bool | None, str | None, EventRead]:
        """Index the subscriber (buffering), and read where the log stands."""
        self._index.add(subscriber.subscription, subscriber)
        self._subscribers.add(subscriber)
        # until the read, take the node's epoch: it will be checked on delivery
        subscriber.epoch = self._epoch
        try:
            # no since: the log's state only, no history to read
            read = await self._backend.event_store.read(
                since, 0 if since is None else PAGE
            )
        except BackendUnavailableError as exc:
            self._drop(subscriber)
            raise EventsUnavailableError(
                f"the event log cannot be reached ({exc})"
            ) from None
        subscriber.epoch = read.epoch or subscriber.epoch
        self._age(read.epoch)
        if since is None:
            subscriber.last = read.last  # live from here
            return None, None, read
        if epoch is None:
            subscriber.last = read.last
            return (
                False,
                "no epoch came with the id: it cannot be told to be this log's",
                read,
            )
        if epoch != read.epoch:
            subscriber.last = read.last
            return (
                False,
                "the event history was lost (the log has a new epoch: Redis "
                "restarted empty?)",
                read,
            )
        if read.trimmed is not None and read.trimmed > since:
            subscriber.last = read.last
            return False, "the events after that id are older than the retention", read
        if (read.last is None and since != EventId(0, 0)) or (
            read.last is not None and since > read.last
        ):
            subscriber.last = read.last
            return False, "that id is not in the log (another epoch?)", read
        subscriber.last = since
        return True, None, read

    async def replay(
        self, subscriber: _Subscriber, since: EventId | None, read: EventRead
    ) -> None:
        """Send the retained events after ``since``, then go live.

        From ``read`` on; then what came live meanwhile.
        """
        await self._replay(subscriber, since, read)

    async def _replay(
        self, subscriber: _Subscriber, since: EventId | None, read: EventRead
    ) -> None:
        try:
            if since is not None:
                page = read
                while True:
                    if page.epoch != read.epoch:  # the log was lost meanwhile
                        await subscriber.lost(
                            page.epoch, "the event history was lost during the replay"
                        )
                        break
                    matches = subscriber.subscription.matches
                    found: list[tuple[Event, bytes | None]] = [
                        (e, None) for e in page.events if matches(e.type)
                    ]
                    if found and not await subscriber.take(found, replay=True):
                        break  # its connection is gone: read no more
                    if len(page.events) < PAGE:
                        break
                    page = await self._backend.event_store.read(
                        page.events[-1].id, PAGE
                    )
        except BackendUnavailableError:
            logger.warning("A replay stopped: the event log cannot be reached")
            await subscriber.replay_stopped(
                "the replay stopped: the event log cannot be reached"
            )
        finally:
            buffered, subscriber.buffer = subscriber.buffer, []
            subscriber.replaying = False
            if buffered:
                await subscriber.take(buffered, replay=False)

    def unsubscribe_connection(self, peer: Peer, subscription_id: int) -> bool:
        """End a client's subscription (op ``unsubscribe``)."""
        found = self._of_peer.get(peer, {}).pop(subscription_id, None)
        if found is None:
            return False
        self._drop(found)
        return True

    def connection_closed(self, peer: Peer) -> None:
        """A connection closed: its subscriptions end."""
        for subscriber in self._of_peer.pop(peer, {}).values():
            self._drop(subscriber)

    def _drop(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._index.remove(subscriber)

    # the log's new events
    def on_events(self, epoch: str, events: list[Event]) -> None:
        """The backend's hook: queue the new events for the fan-out, in order."""
        self._incoming.append((epoch, events))
        if self._fanning is None and not self._tasks.closed:
            self._fanning = self._tasks.spawn(self._fan_out(), name="events-fan-out")

    async def _fan_out(self) -> None:
        """Deliver the queued batches, one after the other (order kept)."""
        try:
            while self._incoming:
                epoch, events = self._incoming.popleft()
                try:
                    await self._deliver(epoch, events)
                except Exception:  # one bad batch must not strand the rest
                    logger.exception("Delivering %d event(s) failed", len(events))
        finally:
            self._fanning = None

    def _age(self, epoch: str | None) -> int:
        """The order in which this node met the epochs (later: larger)."""
        if not epoch:
            return -1
        return self._epochs.setdefault(epoch, len(self._epochs))

    async def _deliver(self, epoch: str, events: list[Event]) -> None:
        age = self._age(epoch)
        if epoch != self._epoch:
            # each subscription knows the epoch it was given: tell those of
            # an older log (not the ones made in this one, nor those that
            # already moved on to a newer one)
            for subscriber in list(self._subscribers):
                if subscriber.epoch and self._age(subscriber.epoch) < age:
                    await subscriber.lost(
                        epoch, "the event history was lost (a new epoch)"
                    )
                if self._age(subscriber.epoch) <= age:
                    subscriber.epoch = epoch
            if self._epoch is not None and self._age(self._epoch) > age:
                return  # late events of an older log: nobody follows it now
        self._epoch = epoch
        self._keep_mirror(epoch, events)
        if len(events) == 1:  # the usual case: no grouping to do
            await self._deliver_one(events[0])
            return
        targets: dict[_Subscriber, list[tuple[Event, bytes | None]]] = {}
        encoded: dict[EventId, bytes] = {}
        for event in events:
            for subscriber in self._index.get(event.type):
                frame = None
                if isinstance(subscriber, ConnectionSubscription):  # once per node
                    frame = encoded.get(event.id)
                    if frame is None:
                        frame = encoded[event.id] = encode(event_to_json(event))
                targets.setdefault(subscriber, []).append((event, frame))
        for subscriber, found in targets.items():
            if subscriber.replaying:
                subscriber.buffer.extend(found)
            else:
                await subscriber.take(found, replay=False)

    async def _deliver_one(self, event: Event) -> None:
        """One event to its subscribers, encoded once; one frame each."""
        subscribers = self._index.get(event.type)
        if not subscribers:
            return
        encoded: bytes | None = None
        event_id = event.id
        for subscriber in subscribers:
            if subscriber.replaying:
                subscriber.buffer.append((event, None))
            elif type(subscriber) is ConnectionSubscription:
                # ConnectionSubscription.take, inlined: the fan-out's loop
                last = subscriber.last
                if last is not None and event_id <= last:
                    continue
                subscriber.last = event_id
                if encoded is None:
                    try:
                        encoded = encode(event_to_json(event))
                    except (TypeError, ValueError):  # never registered so
                        logger.error("Skipped an event that JSON cannot carry")
                        return
                await subscriber.peer.deliver(
                    b'{"op":"events","subscription":%d,"events":[%s]}'
                    % (subscriber.id, encoded)
                )
            else:
                await subscriber.take([(event, None)], replay=False)

    def on_events_gap(self, reason: str) -> None:
        """The backend's hook: this node missed events.

        Every subscriber learns it: clients resubscribe from their last id
        (and are told whether that recovered), server subscriptions turn
        not recovered.
        """
        if not self._tasks.closed:
            self._tasks.spawn(self._gap(reason), name="events-gap")

    async def _gap(self, reason: str) -> None:
        self._mirror = None  # it misses events: read it again when asked
        for subscriber in list(self._subscribers):
            await subscriber.replay_stopped(reason)

    # querying
    async def query_latest(
        self, params: QueryLatestParams | None = None
    ) -> QueryResult:
        """The latest event of each type (of the given query types)."""
        try:
            latest = await self._backend.event_store.latest()
        except BackendUnavailableError as exc:
            raise EventsUnavailableError(
                f"the event log cannot be reached ({exc})"
            ) from None
        return run_latest(latest, params or QueryLatestParams())

    async def query_timeseries(self, params: QueryTimeseriesParams) -> QueryResult:
        """The retained events that ``params`` select (hat-event's time series)."""
        try:
            events = await self._all_retained()
        except BackendUnavailableError as exc:
            raise EventsUnavailableError(
                f"the event log cannot be reached ({exc})"
            ) from None
        return run_timeseries(events, params, QUERY_CAP)

    async def _all_retained(self) -> Sequence[Event]:
        """The retained events, from this node's mirror of the log.

        The mirror is read from the log once (and again after a gap or a new
        epoch), then kept by the node's own follower: a query costs the
        filtering of the mirror, not a read of the whole retention.
        """
        if self._mirror is None:
            await self._load_mirror()
        mirror = self._mirror if self._mirror is not None else collections.deque()
        self._trim_mirror()
        return list(mirror)

    async def _load_mirror(self) -> None:
        found: list[Event] = []
        after: EventId | None = None
        store = self._backend.event_store
        limit = store.retention.max_count + PAGE  # bounded by retention
        self._mirror_meanwhile = []
        epoch = None
        try:
            while len(found) < limit:
                page = await store.read(after, PAGE)
                epoch = epoch or page.epoch
                if page.epoch != epoch:
                    return  # the log changed under the read: next query again
                found.extend(page.events)
                if len(page.events) < PAGE:
                    break
                after = page.events[-1].id
            meanwhile = self._mirror_meanwhile or []
            last = found[-1].id if found else None
            found.extend(e for e in meanwhile if last is None or e.id > last)
            self._mirror = collections.deque(found)
            self._mirror_epoch = epoch
        finally:
            self._mirror_meanwhile = None

    def _keep_mirror(self, epoch: str, events: list[Event]) -> None:
        """The follower's events, into the mirror (when it is known)."""
        if self._mirror_meanwhile is not None:
            self._mirror_meanwhile.extend(events)
        mirror = self._mirror
        if mirror is None:
            return
        if epoch != self._mirror_epoch:
            self._mirror = None  # another log: read it again when asked
            return
        last = mirror[-1].id if mirror else None
        mirror.extend(e for e in events if last is None or e.id > last)
        self._trim_mirror()

    def _trim_mirror(self) -> None:
        mirror = self._mirror
        if mirror is None:
            return
        retention = self._backend.event_store.retention
        while len(mirror) > retention.max_count:
            mirror.popleft()
        if retention.max_age is not None:
            oldest = time.time() - retention.max_age
            while mirror and mirror[0].timestamp < oldest:
                mirror.popleft()

    def stop(self) -> None:
        """End every server subscription (the registry's stop)."""
        for subscriber in list(self._subscribers):
            if isinstance(subscriber, EventSubscription):
                subscriber.close()

    def stats(self) -> dict[str, Any]:
        """The subscriptions of this node (cheap)."""
        return {"event_subscriptions": len(self._subscribers)}
