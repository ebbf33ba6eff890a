"""The event bus in the Python client: ``session.events``.

A :class:`~aiohttp_session_ws.client.Session` feeds its :class:`ClientEvents`
the server's ``events`` and ``events_lost`` frames, tells it about every
frame that says the server dropped frames (``missed``), when a connection
ends, when a reconnection's ``hello`` came, and when the session closes for
good. Each :class:`ClientEventSubscription` remembers the last event id it
delivered (and the log's epoch) and subscribes again from it after a
reconnection or a ``missed`` frame, so that an app gets every event once, in
order, without code of its own. :doc:`/client-python` explains it;
:doc:`/events` is the server side.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from .events.model import (
    Event,
    EventId,
    RegisterEvent,
    check_event_type,
    event_from_json,
    format_event_type,
    payload_to_json,
)
from .events.queries import (
    QueryResult,
    QueryTimeseriesParams,
    result_from_json,
    timeseries_params_to_json,
)
from .events.service import SubscriptionOverflowError as _ServerOverflowError
from .events.subscriptions import check_query_type, parse_query_type
from .protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from .client import Session

__all__ = [
    "HISTORY_LOST",
    "MAX_BUFFER",
    "ClientEventSubscription",
    "ClientEvents",
    "EventCallback",
    "NotRecoveredCallback",
    "ReceivedEvent",
    "SubscriptionOverflowError",
]

logger = logging.getLogger(__name__)

MAX_BUFFER = 10_000
"""Events a subscription holds for a slow reader before it fails."""

HISTORY_LOST = "the event history was lost"
"""The reason of an ``events_lost`` frame that gives none."""

_BEGINNING = EventId(0, 0)
"""The ``since`` that asks for every retained event of an epoch: the resume
point of a subscription that found the log empty, or learnt that it was
lost."""

_RETRY_DELAY = 0.5
_RETRY_MAX_DELAY = 10.0
"""Seconds between resubscriptions refused with ``unavailable`` (doubling)."""


class ReceivedEvent(NamedTuple):
    """An event a subscription delivered, and whether it was replayed.

    ``async for event, replayed in subscription.received():``
    """

    event: Event
    replayed: bool
    """True: it was registered before the (re)subscription that sent it, and
    came from the log's history; False: it came live."""


EventCallback = Callable[[ReceivedEvent], "Awaitable[None] | None"]
"""Called with each :class:`ReceivedEvent` of a subscription (sync or async)."""

NotRecoveredCallback = Callable[[str], "Awaitable[None] | None"]
"""Called with the reason when a subscription could not recover every event."""


class SubscriptionOverflowError(_ServerOverflowError):
    """A client subscription's reader fell more than ``max_buffer`` events behind.

    The subscription is closed; its iterator raises this once it has
    yielded what it held. A subclass of the server's
    :exc:`~aiohttp_session_ws.events.service.SubscriptionOverflowError`.
    """


def _query_text(query_type: str | Sequence[str]) -> str:
    """A query type (``"a/?/*"`` or ``("a", "?", "*")``) as wire text, checked."""
    if isinstance(query_type, str):
        parse_query_type(query_type)
        return query_type
    return format_event_type(check_query_type(query_type))


def _query_texts(types: Iterable[str | Sequence[str]]) -> list[str]:
    if isinstance(types, str):
        raise TypeError(
            f"types is a list of query types, not the str {types!r:.60} "
            "(write [" + repr(types)[:60] + "])"
        )
    return [_query_text(t) for t in types]


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _call(
    session: Session, callback: Callable[[Any], Any], arg: Any, what: str
) -> None:
    """Call ``callback(arg)``; await what it returns in a task the session owns."""
    try:
        result = callback(arg)
    except Exception:
        logger.exception("%s %r failed", what, callback)
        return
    if inspect.isawaitable(result):
        session._spawn(_logged(result, callback, what), name=f"session-ws {what}")


async def _logged(awaitable: Awaitable[Any], callback: Any, what: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("%s %r failed", what, callback)


class ClientEventSubscription:
    """A subscription of the client: iterate it (events), or give it ``on_event``.

    Made by :meth:`ClientEvents.subscribe`. ``async for event in
    subscription`` yields :class:`~aiohttp_session_ws.events.Event` objects
    (:attr:`replayed` then says whether the last one was replayed);
    ``async for event, replayed in subscription.received()`` yields
    :class:`ReceivedEvent` pairs. It goes on across reconnections, with no
    gap and no duplicate as long as the server's history allows
    (:attr:`recovered`), and ends when it is closed or the session is.
    """

    def __init__(
        self,
        events: ClientEvents,
        types: list[str],
        max_buffer: int,
        on_event: EventCallback | None,
    ) -> None:
        if not _int(max_buffer) or max_buffer < 1:
            raise ValueError(f"max_buffer must be positive, not {max_buffer!r}")
        self.types: tuple[str, ...] = tuple(types)
        """The query types, as text (``"a/?/*"``)."""
        self.recovered: bool | None = None
        """``None``: nothing was to recover yet (no ``since`` was given, and no
        resubscription happened); True: every event since ``since`` (or since
        the subscription) came; False: some could not (:attr:`reason` says
        why), and it stays False."""
        self.reason: str | None = None
        """Why events could not be recovered, the last time that happened."""
        self.epoch: str | None = None
        """The log's epoch the events of :attr:`last_id` belong to."""
        self.last_id: EventId | None = None
        """The id of the last event delivered (``None``: none yet, or none
        since the history was lost); never an older one is delivered."""
        self.position: EventId | None = None
        """Where the log stood at the last (re)subscription (``None``: empty)."""
        self.subscription_id: int | None = None
        """The server's id of the current subscription (``None`` while there
        is none: reconnecting, resubscribing, or closed)."""
        self.replayed = False
        """Whether the event the iterator yielded last was replayed."""
        self.replayed_count = 0
        """Events delivered that were replayed (not live)."""
        self.resubscriptions = 0
        """How many times it subscribed again (after reconnections and
        ``missed`` frames)."""
        self._events = events
        self._max = max_buffer
        self._on_event = on_event
        self._sync_callback = on_event is not None and not _is_async(on_event)
        self._items: collections.deque[ReceivedEvent] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._not_recovered: list[NotRecoveredCallback] = []
        self._resume: EventId | None = None
        """The ``since`` to subscribe again with: the last id delivered, or
        the point the last (re)subscription started from."""
        self._dirty = False
        """It must subscribe again (a reconnection, or a ``missed`` frame)."""
        self._resubscriber: asyncio.Task[None] | None = None
        self._retired: list[tuple[object, int]] = []
        """Old server subscriptions to unsubscribe: (websocket, id)."""

    # state
    @property
    def closed(self) -> bool:
        """Whether it ended: :meth:`close`, an error, or the session closed."""
        return self._closed

    @property
    def error(self) -> BaseException | None:
        """What ended it, if something went wrong (the iterator raises it)."""
        return self._error

    @property
    def resume_id(self) -> EventId | None:
        """The ``since`` it would subscribe again with.

        ``0-0`` asks for every retained event of its epoch.
        """
        return self._resume

    def on_not_recovered(self, callback: NotRecoveredCallback) -> Callable[[], None]:
        """Call ``callback(reason)`` each time events could not be recovered.

        That is when a resubscription (after a reconnection or a ``missed``
        frame) is answered ``recovered: false`` (the history is older than
        the retention, or was lost), and when an ``events_lost`` frame comes.
        Events go on, live. For a subscription not recovered already, it is
        called at once too. A plain function runs in the session's reader (keep
        it short); an ``async def`` in a task the session owns. Returns its
        remover.
        """
        self._not_recovered.append(callback)
        if self.recovered is False and self.reason is not None:
            _call(
                self._events._session, callback, self.reason, "not-recovered callback"
            )

        def remove() -> None:
            if callback in self._not_recovered:
                self._not_recovered.remove(callback)

        return remove

    # the app's side
    def __aiter__(self) -> ClientEventSubscription:
        return self

    async def __anext__(self) -> Event:
        received = await self._next()
        self.replayed = received.replayed
        return received.event

    def received(self) -> _Received:
        """An async iterator of :class:`ReceivedEvent`.

        The same events as iterating the subscription: use one or the other.
        """
        return _Received(self)

    async def _next(self) -> ReceivedEvent:
        if self._on_event is not None:
            raise RuntimeError("this subscription feeds its on_event callback")
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def close(self) -> None:
        """Unsubscribe; the iterator ends after what it holds. Again: nothing.

        A running ``async def`` ``on_event`` is cancelled.
        """
        if self._closed:
            return
        self._end(None)
        await self._events._close(self)

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing``."""
        await self.close()

    async def __aenter__(self) -> ClientEventSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # the session's side
    def _end(self, error: BaseException | None) -> None:
        """Take no more events (the iterator ends after what it holds)."""
        if self._closed:
            return
        self._closed = True
        if error is not None:
            self._error = error
        self._ready.set()
        feeder = self._feeder
        if feeder is not None and feeder is not asyncio.current_task():
            feeder.cancel()

    def _deliver(self, events: list[Any], replayed: bool) -> None:
        """The events of an ``events`` frame of the current subscription."""
        for value in events:
            if self._closed:
                return
            try:
                event = event_from_json(value)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("Ignored a bad event %r: %s", value, exc)
                continue
            if self.last_id is not None and event.id <= self.last_id:
                continue  # had it already (a replay overlapping what came)
            self.last_id = self._resume = event.id
            if replayed:
                self.replayed_count += 1
            self._put(ReceivedEvent(event, replayed))

    def _put(self, received: ReceivedEvent) -> None:
        callback = self._on_event
        if callback is not None and self._sync_callback:
            _call(self._events._session, callback, received, "event callback")
            return
        if len(self._items) >= self._max:
            self._events._overflowed(self)
            return
        self._items.append(received)
        self._ready.set()
        if callback is not None and self._feeder is None:
            self._feeder = self._events._session._spawn(
                self._feed(), name=f"session-ws events {self.types!r}"
            )

    async def _feed(self) -> None:
        """Run an ``async def`` ``on_event`` over what waits, in order."""
        callback = self._on_event
        assert callback is not None
        try:
            while self._items and not self._closed:
                received = self._items.popleft()
                try:
                    result = callback(received)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("Event callback %r failed", callback)
        finally:
            self._feeder = None

    def _not_recovered_now(self, reason: str) -> None:
        self.recovered, self.reason = False, reason
        logger.info("An event subscription %r did not recover: %s", self.types, reason)
        for callback in list(self._not_recovered):
            _call(self._events._session, callback, reason, "not-recovered callback")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"#{self.subscription_id}"
        return (
            f"<ClientEventSubscription {list(self.types)} {state} "
            f"last={self.last_id} recovered={self.recovered}>"
        )


class _Received:
    """``subscription.received()``: its events as :class:`ReceivedEvent`."""

    def __init__(self, subscription: ClientEventSubscription) -> None:
        self._subscription = subscription

    def __aiter__(self) -> _Received:
        return self

    async def __anext__(self) -> ReceivedEvent:
        received = await self._subscription._next()
        self._subscription.replayed = received.replayed
        return received


def _is_async(callback: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        type(callback).__call__
    )


class ClientEvents:
    """The event bus of one client session (``session.events``).

    It owns, in the session, one task per subscription that subscribes
    again (after a reconnection or a ``missed`` frame), and one per
    subscription with an ``async def`` ``on_event``.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._current: dict[int, ClientEventSubscription] = {}
        """The subscriptions by the server's id, on the current connection."""
        self._open: list[ClientEventSubscription] = []
        """Every subscription not closed (to subscribe again)."""

    @property
    def subscriptions(self) -> list[ClientEventSubscription]:
        """The subscriptions that are not closed."""
        return list(self._open)

    # subscribing
    async def subscribe(
        self,
        types: Iterable[str | Sequence[str]],
        since: EventId | str | None = None,
        epoch: str | None = None,
        *,
        on_event: EventCallback | None = None,
        max_buffer: int = MAX_BUFFER,
    ) -> ClientEventSubscription:
        """Subscribe to the events of the query ``types`` (``"a/?/*"``, or tuples).

        With ``since`` (an id, with the ``epoch`` it came from), the retained
        events after it come first (replayed), then live ones; without, only
        live ones. Check :attr:`~ClientEventSubscription.recovered` of the
        result for whether the replay was complete. After each
        reconnection, and after a frame saying the server dropped frames,
        it subscribes again from its last id by itself.

        :param on_event: called with each :class:`ReceivedEvent` instead of
            iterating: a plain function in the session's reader (keep it
            short), an ``async def`` in a task, one event after the other.
        :param max_buffer: events it holds that were not read yet; one more
            fails the subscription with :exc:`SubscriptionOverflowError`.
        :raises ProtocolError: ``forbidden`` (the policy refused a type),
            ``bad_frame``, ``limit`` (too many subscriptions on this
            connection), ``unavailable`` (the log cannot be reached).
        :raises ConnectionLostError: the connection is not open, or ended
            before the answer came.
        :raises ValueError: a query type, ``since`` or ``max_buffer`` is not valid.
        """
        texts = _query_texts(types)
        if isinstance(since, str):
            since = EventId.parse(since)
        elif since is not None and not isinstance(since, EventId):
            raise ValueError(f"since is an EventId or '<ms>-<n>', not {since!r:.40}")
        if epoch is not None and not isinstance(epoch, str):
            raise ValueError(f"epoch is a str, not {epoch!r:.40}")
        subscription = ClientEventSubscription(self, texts, max_buffer, on_event)
        subscription.epoch = epoch
        await self._subscribe(subscription, since, epoch, first=True)
        return subscription

    async def _subscribe(
        self,
        subscription: ClientEventSubscription,
        since: EventId | None,
        epoch: str | None,
        *,
        first: bool,
    ) -> None:
        args: dict[str, Any] = {"types": list(subscription.types)}
        if since is not None:
            args["since"] = str(since)
            if epoch is not None:
                args["epoch"] = epoch
        ws = self._session._ws

        def started(request_id: int, data: Any) -> int:
            return self._started(subscription, ws, data, since, first=first)

        await self._session._request("subscribe", args, on_result=started)

    def _started(
        self,
        subscription: ClientEventSubscription,
        ws: object,
        data: Any,
        since: EventId | None,
        *,
        first: bool,
    ) -> int:
        """A ``subscribe`` result (in the reader, before its events frames)."""
        if not isinstance(data, dict) or not _int(data.get("subscription")):
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a bad subscribe result: {data!r:.80}"
            )
        subscription_id: int = data["subscription"]
        epoch, position = data.get("epoch"), data.get("position")
        recovered, reason = data.get("recovered"), data.get("reason")
        try:
            parsed = None if position is None else EventId.parse(position)
        except ValueError:
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a bad subscribe position: {position!r:.40}"
            ) from None
        if subscription.closed:  # closed meanwhile: not wanted
            self._retire(subscription, ws, subscription_id)
            self._spawn_unsubscribe(subscription)
            return subscription_id
        subscription.subscription_id = subscription_id
        self._current[subscription_id] = subscription
        if first:
            self._open.append(subscription)
        subscription.position = parsed
        if isinstance(epoch, str):
            subscription.epoch = epoch
        if recovered is True:  # the events after `since` follow
            subscription._resume = since
            if subscription.recovered is None:
                subscription.recovered = True
        else:  # only live events follow: those after `position`
            subscription._resume = _BEGINNING if parsed is None else parsed
        if recovered is False:
            subscription.last_id = None
            subscription._not_recovered_now(
                reason if isinstance(reason, str) and reason else "not recovered"
            )
        return subscription_id

    def _retire(
        self, subscription: ClientEventSubscription, ws: object, subscription_id: int
    ) -> None:
        """Stop reading a server subscription; unsubscribe it later."""
        if self._current.get(subscription_id) is subscription:
            del self._current[subscription_id]
        if subscription.subscription_id == subscription_id:
            subscription.subscription_id = None
        subscription._retired.append((ws, subscription_id))

    def _spawn_unsubscribe(self, subscription: ClientEventSubscription) -> None:
        if not self._session.closed:
            self._session._spawn(
                self._unsubscribe_retired(subscription),
                name=f"session-ws unsubscribe {subscription.types!r}",
            )

    async def _unsubscribe_retired(self, subscription: ClientEventSubscription) -> None:
        from .client import ConnectionLostError

        while subscription._retired:
            ws, subscription_id = subscription._retired.pop(0)
            if ws is not self._session._ws:
                continue  # gone with its connection
            try:
                await self._session._request(
                    "unsubscribe", {"subscription": subscription_id}
                )
            except ConnectionLostError:
                subscription._retired.clear()
                return
            except ProtocolError as exc:
                logger.warning(
                    "Could not unsubscribe event subscription %d: %s",
                    subscription_id,
                    exc,
                )

    def _resubscribe_soon(self, subscription: ClientEventSubscription) -> None:
        """Subscribe again from the last id, in a task (one at a time)."""
        subscription._dirty = True
        if subscription._resubscriber is None and not self._session.closed:
            subscription._resubscriber = self._session._spawn(
                self._resubscribe(subscription),
                name=f"session-ws resubscribe {subscription.types!r}",
            )

    async def _resubscribe(self, subscription: ClientEventSubscription) -> None:
        from .client import ConnectionLostError, SessionState

        delay = _RETRY_DELAY
        try:
            while subscription._dirty and not subscription.closed:
                if self._session.state is not SessionState.CONNECTED:
                    return  # the next reconnection calls again
                subscription._dirty = False
                await self._unsubscribe_retired(subscription)
                try:
                    await self._subscribe(
                        subscription,
                        subscription.resume_id,
                        subscription.epoch,
                        first=False,
                    )
                except ConnectionLostError:
                    subscription._dirty = True  # again, once reconnected
                    continue
                except ProtocolError as exc:
                    if exc.code in (ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT):
                        logger.warning(
                            "Could not subscribe %r again (retrying): %s",
                            subscription.types,
                            exc,
                        )
                        subscription._dirty = True
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _RETRY_MAX_DELAY)
                        continue
                    logger.warning(
                        "Could not subscribe %r again: %s", subscription.types, exc
                    )
                    self._end(subscription, exc)
                    return
                subscription.resubscriptions += 1
        finally:
            subscription._resubscriber = None
            if (
                subscription._dirty
                and not subscription.closed
                and self._session.state is SessionState.CONNECTED
            ):  # asked again while this task was ending
                self._resubscribe_soon(subscription)

    async def _close(self, subscription: ClientEventSubscription) -> None:
        """Unsubscribe a subscription the app closed."""
        self._forget(subscription)
        sid = subscription.subscription_id
        if sid is not None:
            self._retire(subscription, self._session._ws, sid)
        await self._unsubscribe_retired(subscription)

    def _forget(self, subscription: ClientEventSubscription) -> None:
        if subscription in self._open:
            self._open.remove(subscription)

    def _end(self, subscription: ClientEventSubscription, error: BaseException) -> None:
        """End a subscription with ``error``; unsubscribe it."""
        subscription._end(error)
        self._forget(subscription)
        sid = subscription.subscription_id
        if sid is not None:
            self._retire(subscription, self._session._ws, sid)
        if subscription._retired:
            self._spawn_unsubscribe(subscription)

    def _overflowed(self, subscription: ClientEventSubscription) -> None:
        self._end(
            subscription,
            SubscriptionOverflowError(
                f"the subscription's reader is over {subscription._max} events behind"
            ),
        )

    # from the session (in its reader)
    def _on_events(self, frame: dict[str, Any]) -> None:
        """An ``events`` frame."""
        subscription_id = frame.get("subscription")
        subscription = (
            self._current.get(subscription_id) if _int(subscription_id) else None
        )
        events = frame.get("events")
        if subscription is None or not isinstance(events, list):
            return  # of a subscription retired (or closed): its events come again
        subscription._deliver(events, frame.get("replay") is True)

    def _on_lost(self, frame: dict[str, Any]) -> None:
        """An ``events_lost`` frame: the log was lost; what follows is a new epoch."""
        subscription_id = frame.get("subscription")
        subscription = (
            self._current.get(subscription_id) if _int(subscription_id) else None
        )
        if subscription is None:
            return
        epoch, reason = frame.get("epoch"), frame.get("reason")
        subscription.epoch = epoch if isinstance(epoch, str) else None
        subscription.last_id = None
        subscription.position = None
        subscription._resume = _BEGINNING
        subscription._not_recovered_now(
            reason if isinstance(reason, str) and reason else HISTORY_LOST
        )

    def _missed(self) -> None:
        """A frame says the server dropped frames: subscribe again from the last ids.

        Called before that frame is handled: from it on, the frames of the
        current subscriptions are ignored (their events come again).
        """
        ws = self._session._ws
        for subscription in list(self._current.values()):
            sid = subscription.subscription_id
            if sid is not None:
                self._retire(subscription, ws, sid)
            self._resubscribe_soon(subscription)

    def _connection_lost(self) -> None:
        """The connection ended: its server subscriptions went with it."""
        self._current.clear()
        for subscription in self._open:
            subscription.subscription_id = None
            subscription._retired.clear()

    def _reconnected(self) -> None:
        """A reconnection's ``hello`` came: subscribe everything again."""
        for subscription in list(self._open):
            self._resubscribe_soon(subscription)

    def _closed(self) -> None:
        """The session closed for good: the subscriptions end."""
        self._current.clear()
        subscriptions, self._open = self._open, []
        for subscription in subscriptions:
            subscription.subscription_id = None
            subscription._retired.clear()
            subscription._end(None)

    # registering
    async def register(
        self, events: Iterable[RegisterEvent], response: bool = False
    ) -> list[Event] | None:
        """Register events; with ``response``, return them (ids, timestamp).

        The events of one call get consecutive ids and one timestamp.

        :raises ProtocolError: ``forbidden`` (the policy refused a type),
            ``limit`` (over 1000 events), ``unavailable``, ``too_large``.
        :raises ValueError: an event type is not valid.
        :raises TypeError: an item is not a
            :class:`~aiohttp_session_ws.events.RegisterEvent`.
        """
        items: list[dict[str, Any]] = []
        for event in events:
            if not isinstance(event, RegisterEvent):
                raise TypeError(
                    f"register takes RegisterEvent, not {type(event).__name__}"
                )
            item: dict[str, Any] = {
                "type": format_event_type(check_event_type(event.type))
            }
            if event.source_timestamp is not None:
                item["source_timestamp"] = event.source_timestamp
            if event.payload is not None:
                item["payload"] = payload_to_json(event.payload)
            items.append(item)
        args: dict[str, Any] = {"events": items}
        if response:
            args["response"] = True
        data = await self._session._request("register_events", args)
        if not response:
            return None
        found = data.get("events") if isinstance(data, dict) else None
        if not isinstance(found, list):
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a bad register_events result: {data!r:.80}"
            )
        try:
            return [event_from_json(e) for e in found]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a bad registered event: {exc}"
            ) from None

    # querying
    async def query_latest(
        self, types: Iterable[str | Sequence[str]] | None = None
    ) -> QueryResult:
        """The latest event of each event type (of the query ``types``; all: None).

        :raises ProtocolError: ``forbidden``, ``bad_frame``, ``unavailable``.
        """
        args: dict[str, Any] = {}
        if types is not None:
            args["event_types"] = _query_texts(types)
        return self._result(await self._session._request("query_latest", args))

    async def query_timeseries(self, params: QueryTimeseriesParams) -> QueryResult:
        """The retained events that ``params`` select, a page at a time.

        :raises ProtocolError: ``forbidden``, ``bad_frame``, ``unavailable``.
        """
        if not isinstance(params, QueryTimeseriesParams):
            raise TypeError(
                f"params is a QueryTimeseriesParams, not {type(params).__name__}"
            )
        args = {
            k: v for k, v in timeseries_params_to_json(params).items() if v is not None
        }
        return self._result(await self._session._request("query_timeseries", args))

    @staticmethod
    def _result(data: Any) -> QueryResult:
        try:
            return result_from_json(data)
        except ValueError as exc:
            raise ProtocolError(
                ErrorCode.INTERNAL, f"a bad query result: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"<ClientEvents {len(self._open)} subscriptions>"
