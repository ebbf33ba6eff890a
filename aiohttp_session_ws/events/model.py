"""The event model: types, ids, payloads, events (pure, no I/O).

Modelled on hat-event's ``common`` (see :doc:`/events`), with ids that order
events across the whole cluster.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

EventType = tuple[str, ...]
"""An event type: segments, written ``a/b/c`` in text."""

MAX_SEGMENTS = 32
MAX_SEGMENT_LENGTH = 128
_FORBIDDEN = frozenset("?*/")


def check_event_type(event_type: object) -> EventType:
    """Return ``event_type`` as a tuple if it is a valid event type.

    A type is a tuple (or list) of at most :data:`MAX_SEGMENTS` strings, each
    non-empty, at most :data:`MAX_SEGMENT_LENGTH` characters, without ``?``,
    ``*``, ``/`` or control characters.

    :raises ValueError: it is not.
    """
    if isinstance(event_type, str) or not isinstance(event_type, (tuple, list)):
        raise ValueError(
            f"an event type is a tuple of str segments, not {event_type!r:.60}"
            " (parse_event_type() reads 'a/b/c')"
        )
    if len(event_type) > MAX_SEGMENTS:
        raise ValueError(f"an event type has at most {MAX_SEGMENTS} segments")
    for segment in event_type:
        if not isinstance(segment, str) or not segment:
            raise ValueError(f"event type segments are non-empty str: {segment!r:.40}")
        if len(segment) > MAX_SEGMENT_LENGTH or _FORBIDDEN.intersection(segment):
            raise ValueError(
                f"event type segment {segment[:40]!r} is over {MAX_SEGMENT_LENGTH} "
                "characters or holds '?', '*' or '/'"
            )
        if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in segment):
            raise ValueError(
                f"event type segment {segment[:40]!r} holds a control character "
                "or a lone surrogate"
            )
    return tuple(event_type)


def parse_event_type(text: str) -> EventType:
    """The event type written ``a/b/c``.

    :raises ValueError: it is not a valid type.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"an event type text is a non-empty str, not {text!r:.60}")
    return check_event_type(tuple(text.split("/")))


def format_event_type(event_type: EventType) -> str:
    """The event type as text: ``a/b/c``."""
    return "/".join(event_type)


class EventId(NamedTuple):
    """An event's id: its place in the cluster's one ordered log.

    Ordered: ``a < b`` when ``a`` was registered before ``b``. The events of
    one register call have consecutive ids. Written ``"<ms>-<n>"`` in text
    (a Redis stream id).
    """

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        """The id written ``"<ms>-<n>"``.

        :raises ValueError: it is not one.
        """
        if not isinstance(text, str):
            raise ValueError(f"an event id is a str '<ms>-<n>', not {text!r:.40}")
        ms, sep, seq = text.partition("-")
        if not sep or not ms.isdigit() or not seq.isdigit() or len(text) > 40:
            raise ValueError(f"an event id is '<ms>-<n>', not {text[:40]!r}")
        return cls(int(ms), int(seq))


@dataclass(frozen=True, slots=True)
class EventPayloadJson:
    """A payload of JSON data."""

    data: Any


@dataclass(frozen=True, slots=True)
class EventPayloadBinary:
    """A payload of bytes, with the name of their type (``"image/png"``)."""

    type: str
    data: bytes


EventPayload = EventPayloadJson | EventPayloadBinary


@dataclass(frozen=True, slots=True)
class Event:
    """A registered event: id and timestamp given by the server."""

    id: EventId
    type: EventType
    timestamp: float
    """When the server registered it, in seconds since the epoch."""
    source_timestamp: float | None = None
    """When it happened, as its source says (seconds since the epoch)."""
    payload: EventPayload | None = None


@dataclass(frozen=True, slots=True)
class RegisterEvent:
    """An event to register: the server gives its id and timestamp."""

    type: EventType
    source_timestamp: float | None = None
    payload: EventPayload | None = None


# the JSON form (wire and store)
def payload_to_json(payload: EventPayload | None) -> dict[str, Any] | None:
    """The JSON form of a payload."""
    if payload is None:
        return None
    if isinstance(payload, EventPayloadBinary):
        return {
            "type": "binary",
            "name": payload.type,
            "data": base64.b64encode(payload.data).decode("ascii"),
        }
    return {"type": "json", "data": payload.data}


def payload_from_json(value: Any) -> EventPayload | None:
    """A payload from its JSON form.

    :raises ValueError: it is not one.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("a payload is an object with a 'type'")
    kind = value.get("type")
    if kind == "json":
        return EventPayloadJson(value.get("data"))
    if kind == "binary":
        name, data = value.get("name"), value.get("data")
        if not isinstance(name, str) or not isinstance(data, str):
            raise ValueError("a binary payload has a str 'name' and base64 'data'")
        try:
            return EventPayloadBinary(name, base64.b64decode(data, validate=True))
        except ValueError:
            raise ValueError("a binary payload's data is not base64") from None
    raise ValueError("a payload's type is 'json' or 'binary'")


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON form of an event (its id and type as text)."""
    return {
        "id": str(event.id),
        "type": format_event_type(event.type),
        "timestamp": event.timestamp,
        "source_timestamp": event.source_timestamp,
        "payload": payload_to_json(event.payload),
    }


def event_from_json(value: dict[str, Any]) -> Event:
    """An event from its JSON form.

    :raises ValueError: it is not one.
    """
    return Event(
        EventId.parse(value["id"]),
        parse_event_type(value["type"]),
        float(value["timestamp"]),
        _time(value.get("source_timestamp")),
        payload_from_json(value.get("payload")),
    )


def register_event_from_json(value: Any) -> RegisterEvent:
    """A register request's event from its JSON form (a client's).

    :raises ValueError: it is not one.
    """
    if not isinstance(value, dict) or set(value) - {
        "type",
        "source_timestamp",
        "payload",
    }:
        raise ValueError(
            "an event to register has 'type', 'source_timestamp', 'payload'"
        )
    return RegisterEvent(
        parse_event_type(value.get("type", "")),
        _time(value.get("source_timestamp")),
        payload_from_json(value.get("payload")),
    )


def _time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a timestamp is a number of seconds")
    if not math.isfinite(value):
        raise ValueError("a timestamp is finite")
    return float(value)
