"""Session ws ids: which values are accepted, their cluster-facing form, and logs.

The app's ids are ``str`` or ``int`` (they go through JSON in the session).
Everything cluster-facing (presence, close records, frames between nodes)
uses the *wire id*, a string that keeps the type: ``1`` and ``"1"`` are two
sessions there too. Ids are secrets, so logs carry :func:`redact` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Hashable

SessionWSId = str | int
"""The types a session ws id may have."""

MAX_INT_BITS = 128
"""The largest int id, in bits (a UUID is 128): an id is a key, not a number."""

_STR, _INT = "s:", "i:"
_LOG_KEY = os.urandom(16)


def check_session_ws_id(value: object, *, source: str = "a session ws id") -> None:
    """Refuse a value that cannot serve as a session ws id, with a clear error.

    :raises TypeError: ``value`` is not a ``str`` or an ``int`` (a ``bool``
        is refused too: it would collide with ``0`` and ``1``).
    :raises ValueError: ``value`` is an int of over :data:`MAX_INT_BITS` bits,
        an empty string, or a string that is not valid Unicode text (a lone
        surrogate, as ``surrogateescape`` makes of
        undecodable request bytes): Redis and JSON could not carry it.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(
            f"{source} must be a str or an int (it is stored in the session as "
            f"JSON), not {type(value).__name__}"
        )
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"{source} is an int of over {MAX_INT_BITS} bits")
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{source} must not be an empty string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{source} is not valid Unicode text (it holds a lone surrogate); "
                "make ids from random bytes or a UUID, not from undecoded "
                "request data"
            ) from None


def wire_id(session_ws_id: Hashable) -> str:
    """The cluster-facing form of a (checked) session ws id: ``s:…`` or ``i:…``."""
    if isinstance(session_ws_id, str):
        return _STR + session_ws_id
    return _INT + str(session_ws_id)


def local_id(wire: str) -> SessionWSId | None:
    """The app's id back from its wire form; ``None`` if ``wire`` is not one."""
    if wire.startswith(_STR) and len(wire) > len(_STR):
        return wire[len(_STR) :]
    if wire.startswith(_INT):
        try:
            return int(wire[len(_INT) :])
        except ValueError:
            return None
    return None


def redact(wire: str) -> str:
    """A short keyed hash of a wire id (:func:`wire_id`), for logs.

    Ids are secrets and are never logged. The key is random per process: the
    same session reads the same within one node's logs, and the hash tells
    nothing about the id.
    """
    digest = hmac.new(
        _LOG_KEY, wire.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()
    return "#" + digest[:10]
