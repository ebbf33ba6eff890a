"""The event bus: typed events, wildcard subscriptions, queries, replay.

See :doc:`/events`. The model, the subscriptions and the queries are pure
(no I/O); the service is ``registry.events``.
"""

from .model import (
    Event,
    EventId,
    EventPayload,
    EventPayloadBinary,
    EventPayloadJson,
    EventType,
    RegisterEvent,
    check_event_type,
    format_event_type,
    parse_event_type,
)
from .queries import (
    Order,
    OrderBy,
    QueryLatestParams,
    QueryResult,
    QueryTimeseriesParams,
)
from .subscriptions import EventTypeCollection, Subscription

__all__ = [
    "Event",
    "EventId",
    "EventPayload",
    "EventPayloadBinary",
    "EventPayloadJson",
    "EventType",
    "EventTypeCollection",
    "Order",
    "OrderBy",
    "QueryLatestParams",
    "QueryResult",
    "QueryTimeseriesParams",
    "RegisterEvent",
    "Subscription",
    "check_event_type",
    "format_event_type",
    "parse_event_type",
]
