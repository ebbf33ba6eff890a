"""The session protocol's frames: parsing, validation, encoding, error codes.

Pure: no I/O and no aiohttp. :doc:`/protocol` is the reference; the names
here are the ones it uses. Frames are parsed with the standard library's
:mod:`json` (see the benchmark in ``bench/frames.py`` for why).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

SUBPROTOCOL = "aiohttp-session-ws.v1"
"""The websocket subprotocol a client offers to speak this protocol."""

PROTOCOL_VERSION = 1
"""The protocol version, sent in the ``hello`` frame."""

MAX_ID = 2**53 - 1
"""The largest request id: the largest integer a JavaScript number holds exactly."""

NO_ID = -1
"""The :attr:`Request.id` of a frame of an op that takes no id (``reply=False``)."""


class ErrorCode(enum.StrEnum):
    """The stable ``code`` of an ``error`` frame (see :doc:`/protocol`)."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_OP = "unknown_op"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    LIMIT = "limit"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # messaging (see :doc:`/messaging`)
    NO_HANDLER = "no_handler"
    NO_SUCH_SESSION = "no_such_session"
    REJECTED = "rejected"
    SESSION_CLOSED = "session_closed"
    HANDLER_CONFLICT = "handler_conflict"
    BAD_FILTER = "bad_filter"
    # a request the client cancelled (op ``cancel``)
    CANCELLED = "cancelled"


class ProtocolError(Exception):
    """A request failed with an ``error`` frame: :attr:`code` says why.

    Raised by op handlers on the server (the dispatcher turns it into the
    frame) and by the Python client for an ``error`` frame it received.
    """

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        try:
            self.code: ErrorCode | str = ErrorCode(code)
        except ValueError:  # a newer server's code: keep it as it came
            self.code = code
        self.message = message


class CloseCode(enum.IntEnum):
    """The websocket close codes the protocol uses."""

    NORMAL = 1000
    """The session's websockets were closed (close-all, logout)."""
    GOING_AWAY = 1001
    """The server shuts down."""
    POLICY_VIOLATION = 1008
    """Too many frames refused by the rate limit in a row."""
    INVALID_TEXT = 1007
    """A text frame that is not valid UTF-8 (closed by the websocket layer)."""
    MESSAGE_TOO_BIG = 1009
    """A frame over four times ``max_frame_size``."""
    INTERNAL_ERROR = 1011
    """The server failed to set the connection up (its properties factory)."""
    TRY_AGAIN_LATER = 1013
    """The outgoing queue overflowed (the client reads too slowly), or the
    cluster's handle key is not known yet."""


Overflow = Literal["drop_oldest", "close"]


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """What one protocol connection may make the server do (see :doc:`/protocol`).

    :raises ValueError: a limit is not positive, or ``overflow`` is unknown.
    """

    max_frame_size: int = 64 * 1024
    """Bytes of one client frame; a larger one is answered ``too_large``."""
    max_pending: int = 32
    """Requests of one connection in progress at once."""
    rate: float = 50.0
    """Client frames per second, on average (a token bucket)."""
    burst: int = 100
    """Client frames in a burst: the token bucket's size."""
    rate_close_after: int = 50
    """Frames refused by the rate limit in a row before a close with 1008."""
    max_queue: int = 256
    """Server frames waiting for a client that reads slowly."""
    max_queue_bytes: int = 4 * 1024 * 1024
    """Bytes of the frames waiting for a client that reads slowly, beyond
    the first: other clients' requests to it must not pin the server's
    memory."""
    max_handlers: int = 64
    """Request handlers one connection may register (``add_handler``)."""
    max_subscriptions: int = 32
    """Event subscriptions one connection may hold (``subscribe``)."""
    max_locks: int = 64
    """Session locks one connection may hold through op ``lock``."""
    overflow: Overflow = "drop_oldest"
    """When the queue is full: drop the oldest push, or close with 1013."""
    request_timeout: float = 30.0
    """Seconds a request may take before it is answered ``timeout``."""

    def __post_init__(self) -> None:
        for name in (
            "max_frame_size",
            "max_pending",
            "rate",
            "burst",
            "rate_close_after",
            "max_queue",
            "max_queue_bytes",
            "max_handlers",
            "max_subscriptions",
            "max_locks",
            "request_timeout",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if self.overflow not in ("drop_oldest", "close"):
            raise ValueError(
                f"overflow must be 'drop_oldest' or 'close', not {self.overflow!r}"
            )

    @property
    def max_message_size(self) -> int:
        """What the websocket layer reads at most (``max_msg_size``): 4 frames."""
        return 4 * self.max_frame_size

    def for_client(self) -> dict[str, Any]:
        """The limits a client should know, for the ``hello`` frame."""
        return {
            "max_frame_size": self.max_frame_size,
            "max_pending": self.max_pending,
            "rate": self.rate,
            "burst": self.burst,
            "max_queue": self.max_queue,
            "max_handlers": self.max_handlers,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """A client frame that passed validation."""

    op: str
    id: int
    args: dict[str, Any]
    """The frame's members other than ``op`` and ``id``, validated."""


ArgType = Literal["str", "int", "number", "bool", "object", "array", "any"]

_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an op: its JSON type, and whether it must be there."""

    type: ArgType
    required: bool = False


C = TypeVar("C")
"""The connection an op handler serves (the web layer's connection object)."""

OpHandler = Callable[[C, Request], Awaitable[Any]]
"""Answers one request on a connection; its JSON-able result is ``data``."""


@dataclass(frozen=True, slots=True)
class Op(Generic[C]):
    """A client operation: its arguments and the handler that answers it."""

    name: str
    handler: OpHandler[C]
    args: Mapping[str, Arg] = field(default_factory=dict)
    action: Callable[[C, Request], Any] | None = None
    """Says what a request reaches beyond its own session (an
    :class:`~aiohttp_session_ws.authorization.Action`, or a list of them,
    which the policy is asked about, each), or returns ``None`` when it
    stays within it."""
    unbounded: bool = False
    """True for an op whose wait may be long (a lock): ``request_timeout``
    does not bound it; it ends with its connection, or a ``cancel``."""
    reply: bool = True
    """False for a frame that is not a request: it carries no ``id``, gets
    no ``result`` (only an ``error`` frame with a null ``id`` when it is
    refused), and its handler runs as the frame is read, so it must not
    wait (the ``answer`` of a request the server sent)."""


@dataclass(frozen=True, slots=True)
class FollowUp(Generic[C]):
    """What an op handler returns to send its result, then more frames.

    The dispatcher sends ``result`` as the request's ``result`` frame, then
    awaits ``then(connection)`` in the same request (so it counts as
    pending, and ends when the connection does): a filter send forwards its
    responses this way, each after the count.
    """

    result: Any
    then: Callable[[C], Awaitable[None]]


class OpTable(Generic[C]):
    """The ops a server answers: the services add theirs, the dispatcher reads.

    A new service adds ops here without touching the dispatcher.
    """

    def __init__(self) -> None:
        self._ops: dict[str, Op[C]] = {}

    def add(self, op: Op[C]) -> None:
        """Answer ``op.name`` with ``op``.

        :raises ValueError: an op of that name is already there.
        """
        if op.name in self._ops or op.name in _SERVER_OPS:
            raise ValueError(f"op {op.name!r} is already taken")
        self._ops[op.name] = op

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def names(self) -> list[str]:
        """The op names, sorted."""
        return sorted(self._ops)

    def parse(self, text: str, limits: ProtocolLimits) -> tuple[Request, Op[C]]:
        """Validate a client text frame; return the request and its op.

        :raises ProtocolError: the frame is too large, not a JSON object, has no
            usable ``id`` or ``op``, names an unknown op, or its arguments are
            missing, mistyped or unknown. The error's ``request_id`` attribute
            holds the frame's id when it had a usable one.
        """
        if len(text) > limits.max_frame_size or (
            len(text) * 4 > limits.max_frame_size
            and len(text.encode("utf-8", "surrogatepass")) > limits.max_frame_size
        ):
            raise FrameError(
                None, ErrorCode.TOO_LARGE, f"frame over {limits.max_frame_size} bytes"
            )
        try:
            frame = _DECODER.decode(text)
        except _NotFiniteError:
            raise FrameError(
                request_id_of(text, limits),
                ErrorCode.BAD_FRAME,
                "NaN and infinite numbers are not JSON",
            ) from None
        except ValueError:
            raise FrameError(None, ErrorCode.BAD_FRAME, "not valid JSON") from None
        except RecursionError:
            raise FrameError(None, ErrorCode.BAD_FRAME, "nested too deeply") from None
        if not isinstance(frame, dict):
            raise FrameError(None, ErrorCode.BAD_FRAME, "not a JSON object")
        request_id = frame.pop("id", None)
        name = frame.pop("op", None)
        op = self._ops.get(name) if isinstance(name, str) else None
        if op is not None and not op.reply:
            if request_id is not None:
                raise FrameError(None, ErrorCode.BAD_FRAME, f"op {name!r} takes no id")
            request_id = NO_ID
        elif (
            not isinstance(request_id, int)
            or isinstance(request_id, bool)
            or not 0 <= request_id <= MAX_ID
        ):
            raise FrameError(
                None, ErrorCode.BAD_FRAME, f"id must be an integer from 0 to {MAX_ID}"
            )
        if not isinstance(name, str):
            raise FrameError(request_id, ErrorCode.BAD_FRAME, "op must be a string")
        if op is None:
            raise FrameError(request_id, ErrorCode.UNKNOWN_OP, f"no op {_short(name)}")
        error_id = None if request_id == NO_ID else request_id
        for key, value in frame.items():
            arg = op.args.get(key)
            if arg is None:
                raise FrameError(
                    error_id,
                    ErrorCode.BAD_FRAME,
                    f"op {name!r} takes no argument {_short(key)}",
                )
            if not _CHECKS[arg.type](value):
                raise FrameError(
                    error_id,
                    ErrorCode.BAD_FRAME,
                    f"argument {key!r} of op {name!r} must be of type {arg.type}",
                )
        for key, arg in op.args.items():
            if arg.required and key not in frame:
                raise FrameError(
                    error_id,
                    ErrorCode.BAD_FRAME,
                    f"op {name!r} needs the argument {key!r}",
                )
        return Request(name, request_id, frame), op


def request_id_of(text: str, limits: ProtocolLimits) -> int | None:
    """The ``id`` of a client frame that will not be served, if it has one.

    Used to answer a frame that a limit refused without parsing it further;
    ``None`` when the frame is too large, not a JSON object, or has no valid id.
    """
    if len(text) > limits.max_frame_size:
        return None
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    request_id = frame.get("id") if isinstance(frame, dict) else None
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return request_id if 0 <= request_id <= MAX_ID else None
    return None


class FrameError(ProtocolError):
    """A client frame refused before it reached an op handler."""

    def __init__(self, request_id: int | None, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.request_id = request_id


class _NotFiniteError(ValueError):
    """A client frame holds NaN, Infinity, or a number too large for a float."""


def _finite(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotFiniteError(text)
    return value


def _no_constant(name: str) -> Any:
    raise _NotFiniteError(name)


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)
"""Client frames: standard JSON only (what the server could not send back,
such as NaN, is refused at the door)."""

_SERVER_OPS = frozenset(
    {
        "hello",
        "result",
        "error",
        "push",
        "request",
        "response",
        "lock_lost",
        "events",
        "events_lost",
    }
)
"""Ops of server frames: never client ops."""


def _short(value: str) -> str:
    """Quote a client's string for a message, cut to a sane length."""
    return repr(value[:40] + "…" if len(value) > 40 else value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Made once: ``json.dumps`` with options makes an encoder per call."""


def encode(frame: Mapping[str, Any]) -> bytes:
    """Encode a server frame: compact JSON, UTF-8.

    :raises TypeError: ``frame`` holds something JSON cannot carry.
    :raises ValueError: it holds a NaN or an infinity, or a circular reference.
    """
    return _ENCODER.encode(frame).encode("utf-8")


def encode_result(request_id: int, data: Any) -> bytes:
    """A ``result`` frame."""
    return encode({"op": "result", "id": request_id, "data": data})


def encode_error(
    request_id: int | None,
    code: ErrorCode | str,
    message: str,
    position: int | None = None,
) -> bytes:
    """An ``error`` frame; ``position`` for a ``bad_filter`` error."""
    frame: dict[str, Any] = {
        "op": "error",
        "id": request_id,
        "code": str(code),
        "message": message,
    }
    if position is not None:
        frame["position"] = position
    return encode(frame)


def encode_push(data: Any) -> bytes:
    """A ``push`` frame: encode it once, and send the same bytes to every socket."""
    return encode({"op": "push", "data": data})


def encode_hello(
    connection_id: str, session_handle: str, limits: ProtocolLimits
) -> bytes:
    """The ``hello`` frame, the server's first."""
    return encode(
        {
            "op": "hello",
            "version": PROTOCOL_VERSION,
            "connection": connection_id,
            "session": session_handle,
            "limits": limits.for_client(),
        }
    )


def with_missed(frame: bytes, missed: int) -> bytes:
    """``frame`` (an encoded server frame) with ``"missed": missed`` added."""
    return b'{"missed":%d,' % missed + frame[1:]
