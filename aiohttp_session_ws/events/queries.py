"""Queries of stored events: parameters, results, and running them (pure).

Modelled on hat-event's ``QueryLatestParams`` and ``QueryTimeseriesParams``.
:func:`run_latest` and :func:`run_timeseries` answer a query from events in
memory: the memory store uses them as they are, and the Redis store to
filter what it read.

Rules (as in hat-event):

* Time bounds are inclusive, and ``None`` means unbounded.
* An event without a source timestamp is left out when a source time bound
  is given or when ordering by source timestamp (hat-event keeps such events
  out of its source-timestamp series).
* Events are ordered by ``(timestamp, id)`` or ``(source_timestamp, id)``,
  so ties are broken by id; :attr:`Order.DESCENDING` is newest first.
* ``last_event_id`` is a marker: in the result order, events up to and
  including it are skipped, then ``max_results`` (and the server's cap)
  apply; ``more_follows`` says whether more matched than were returned. The
  next page is asked for with the last returned event's id.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .model import Event, EventId, EventType, event_from_json, event_to_json
from .subscriptions import (
    MAX_QUERY_TYPES,
    Subscription,
    check_query_type,
    parse_query_type,
)

__all__ = [
    "Order",
    "OrderBy",
    "QueryLatestParams",
    "QueryResult",
    "QueryTimeseriesParams",
    "latest_params_from_json",
    "latest_params_to_json",
    "result_from_json",
    "result_to_json",
    "run_latest",
    "run_timeseries",
    "timeseries_params_from_json",
    "timeseries_params_to_json",
]


class Order(enum.Enum):
    """The order of a timeseries result."""

    DESCENDING = "descending"
    """Newest first (the default)."""
    ASCENDING = "ascending"
    """Oldest first."""


class OrderBy(enum.Enum):
    """Which time a timeseries result is ordered by."""

    TIMESTAMP = "timestamp"
    """When the server registered the event."""
    SOURCE_TIMESTAMP = "source_timestamp"
    """When the event happened, as its source says."""


def _query_types(
    event_types: Sequence[EventType] | None,
) -> tuple[EventType, ...] | None:
    if event_types is None:
        return None
    if len(event_types) > MAX_QUERY_TYPES:
        raise ValueError(f"event_types has at most {MAX_QUERY_TYPES} query types")
    return tuple(check_query_type(q) for q in event_types)


@dataclass(frozen=True, slots=True)
class QueryLatestParams:
    """Ask for the latest event of each event type.

    :param event_types: query types (``?`` and ``*`` allowed); ``None`` means
        all event types, ``[]`` none.
    """

    event_types: Sequence[EventType] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", _query_types(self.event_types))


@dataclass(frozen=True, slots=True)
class QueryTimeseriesParams:
    """Ask for the events in a time range, in order, a page at a time.

    See the module's docs for the rules; every bound is inclusive.
    """

    event_types: Sequence[EventType] | None = None
    """Query types (``?`` and ``*`` allowed); ``None`` means all."""
    t_from: float | None = None
    t_to: float | None = None
    source_t_from: float | None = None
    source_t_to: float | None = None
    order: Order = Order.DESCENDING
    order_by: OrderBy = OrderBy.TIMESTAMP
    max_results: int | None = None
    """At most this many events (the server may cap it further)."""
    last_event_id: EventId | None = None
    """Skip events up to and including this one, in the result order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", _query_types(self.event_types))
        if not isinstance(self.order, Order) or not isinstance(self.order_by, OrderBy):
            raise ValueError("order is an Order and order_by an OrderBy")
        if self.max_results is not None and (
            isinstance(self.max_results, bool)
            or not isinstance(self.max_results, int)
            or self.max_results < 1
        ):
            raise ValueError("max_results is a positive integer or None")
        if self.last_event_id is not None and not isinstance(
            self.last_event_id, EventId
        ):
            raise ValueError("last_event_id is an EventId or None")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The events a query found, and whether more follow them."""

    events: list[Event]
    more_follows: bool


def _subscription(event_types: Sequence[EventType] | None) -> Subscription | None:
    return None if event_types is None else Subscription(event_types)


def run_latest(
    latest: Mapping[EventType, Event], params: QueryLatestParams
) -> QueryResult:
    """The latest events of the types ``params`` asks for, in id order.

    :param latest: the latest event of each event type.
    """
    if params.event_types is None:
        events = list(latest.values())
    elif all("?" not in q and "*" not in q for q in params.event_types):
        events = [latest[q] for q in set(params.event_types) if q in latest]
    else:
        subscription = Subscription(params.event_types)
        events = [e for t, e in latest.items() if subscription.matches(t)]
    events.sort(key=lambda e: e.id)
    return QueryResult(events, more_follows=False)


def run_timeseries(
    events: Iterable[Event], params: QueryTimeseriesParams, cap: int
) -> QueryResult:
    """The events ``params`` asks for, from ``events``.

    :param events: the stored events, in id order. The event of
        ``params.last_event_id``, if still there, places the marker; if not,
        the marker is placed by id (exact when timestamps grow with ids).
    :param cap: the server's own maximum of events in one result.
    :raises ValueError: ``cap`` is not positive, or the marker of a query
        ordered by source timestamp is not an event with a source timestamp.
    """
    if cap < 1:
        raise ValueError("cap is a positive integer")
    subscription = _subscription(params.event_types)
    by_source = params.order_by is OrderBy.SOURCE_TIMESTAMP
    need_source = by_source or not (
        params.source_t_from is None and params.source_t_to is None
    )
    t_from = -math.inf if params.t_from is None else params.t_from
    t_to = math.inf if params.t_to is None else params.t_to
    s_from = -math.inf if params.source_t_from is None else params.source_t_from
    s_to = math.inf if params.source_t_to is None else params.source_t_to
    marker_id = params.last_event_id
    marker: Event | None = None

    found: list[Event] = []
    for event in events:
        if event.id == marker_id:
            marker = event
        if not t_from <= event.timestamp <= t_to:
            continue
        if need_source and (
            event.source_timestamp is None
            or not s_from <= event.source_timestamp <= s_to
        ):
            continue
        if subscription is not None and not subscription.matches(event.type):
            continue
        found.append(event)

    def key(event: Event) -> tuple[float, EventId]:
        if by_source:
            assert event.source_timestamp is not None
            return event.source_timestamp, event.id
        return event.timestamp, event.id

    found.sort(key=key, reverse=params.order is Order.DESCENDING)

    if marker_id is not None:
        if marker is not None and (
            not by_source or marker.source_timestamp is not None
        ):
            mark = key(marker)
            if params.order is Order.ASCENDING:
                found = [e for e in found if key(e) > mark]
            else:
                found = [e for e in found if key(e) < mark]
        elif by_source:
            raise ValueError(
                f"last_event_id {marker_id} is not an event with a source "
                "timestamp to page from"
            )
        elif params.order is Order.ASCENDING:
            found = [e for e in found if e.id > marker_id]
        else:
            found = [e for e in found if e.id < marker_id]

    limit = cap if params.max_results is None else min(cap, params.max_results)
    return QueryResult(found[:limit], more_follows=len(found) > limit)


# the JSON forms (wire)
_TIMESERIES_KEYS = frozenset(
    {
        "event_types",
        "t_from",
        "t_to",
        "source_t_from",
        "source_t_to",
        "order",
        "order_by",
        "max_results",
        "last_event_id",
    }
)


def _object(obj: Any, what: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is a JSON object")
    unknown = set(obj) - keys
    if unknown:
        names = ", ".join(sorted(repr(k)[:40] for k in unknown)[:5])
        raise ValueError(f"{what} has no {names}; it has {', '.join(sorted(keys))}")
    return obj


def _types_from_json(value: Any) -> list[EventType] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("event_types is null or a list of query types 'a/?/*'")
    if len(value) > MAX_QUERY_TYPES:
        raise ValueError(f"event_types has at most {MAX_QUERY_TYPES} query types")
    return [parse_query_type(text) for text in value]


def _time_from_json(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is null or a number of seconds since the epoch")
    if not math.isfinite(value):
        raise ValueError(f"{name} is a finite number")
    return float(value)


def latest_params_from_json(obj: Any) -> QueryLatestParams:
    """Latest-query parameters from their JSON form.

    ``{"event_types": null | ["a/?/*", ...]}``; a missing key is ``null``.

    :raises ValueError: it is not one.
    """
    obj = _object(obj, "a latest query", frozenset({"event_types"}))
    return QueryLatestParams(_types_from_json(obj.get("event_types")))


def timeseries_params_from_json(obj: Any) -> QueryTimeseriesParams:
    """Timeseries-query parameters from their JSON form.

    An object with the keys of :class:`QueryTimeseriesParams`, each optional:
    ``event_types`` a list of texts ``'a/?/*'``, times numbers of seconds,
    ``order`` ``'descending'`` or ``'ascending'``, ``order_by``
    ``'timestamp'`` or ``'source_timestamp'``, ``max_results`` a positive
    integer, ``last_event_id`` a text ``'<ms>-<n>'``.

    :raises ValueError: it is not one.
    """
    obj = _object(obj, "a timeseries query", _TIMESERIES_KEYS)
    order = obj.get("order")
    order_by = obj.get("order_by")
    max_results = obj.get("max_results")
    last = obj.get("last_event_id")
    try:
        parsed_order = Order.DESCENDING if order is None else Order(order)
    except ValueError:
        raise ValueError("order is 'descending' or 'ascending'") from None
    try:
        parsed_by = OrderBy.TIMESTAMP if order_by is None else OrderBy(order_by)
    except ValueError:
        raise ValueError("order_by is 'timestamp' or 'source_timestamp'") from None
    if max_results is not None and (
        isinstance(max_results, bool)
        or not isinstance(max_results, int)
        or max_results < 1
    ):
        raise ValueError("max_results is null or a positive integer")
    return QueryTimeseriesParams(
        event_types=_types_from_json(obj.get("event_types")),
        t_from=_time_from_json(obj, "t_from"),
        t_to=_time_from_json(obj, "t_to"),
        source_t_from=_time_from_json(obj, "source_t_from"),
        source_t_to=_time_from_json(obj, "source_t_to"),
        order=parsed_order,
        order_by=parsed_by,
        max_results=max_results,
        last_event_id=None if last is None else EventId.parse(last),
    )


def _types_to_json(event_types: Sequence[EventType] | None) -> list[str] | None:
    return None if event_types is None else ["/".join(q) for q in event_types]


def latest_params_to_json(params: QueryLatestParams) -> dict[str, Any]:
    """The JSON form of latest-query parameters."""
    return {"event_types": _types_to_json(params.event_types)}


def timeseries_params_to_json(params: QueryTimeseriesParams) -> dict[str, Any]:
    """The JSON form of timeseries-query parameters."""
    return {
        "event_types": _types_to_json(params.event_types),
        "t_from": params.t_from,
        "t_to": params.t_to,
        "source_t_from": params.source_t_from,
        "source_t_to": params.source_t_to,
        "order": params.order.value,
        "order_by": params.order_by.value,
        "max_results": params.max_results,
        "last_event_id": (
            None if params.last_event_id is None else str(params.last_event_id)
        ),
    }


def result_to_json(result: QueryResult) -> dict[str, Any]:
    """The JSON form of a query result."""
    return {
        "events": [event_to_json(e) for e in result.events],
        "more_follows": result.more_follows,
    }


def result_from_json(obj: Any) -> QueryResult:
    """A query result from its JSON form.

    :raises ValueError: it is not one.
    """
    obj = _object(obj, "a query result", frozenset({"events", "more_follows"}))
    events, more = obj.get("events"), obj.get("more_follows")
    if not isinstance(events, list) or not isinstance(more, bool):
        raise ValueError("a query result has a list 'events' and a bool 'more_follows'")
    try:
        return QueryResult([event_from_json(e) for e in events], more)
    except (KeyError, TypeError) as e:
        raise ValueError(f"a query result's event is not one: {e}") from None
