"""What a request handler receives, and what it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who sent a request, and where, as its handler sees it."""

    path: str
    """The path the request was sent to."""
    handler_path: str
    """The registered path that serves it: ``path`` or a prefix of it."""
    sender: str | None
    """The public handle (``$SessionId``) of the sender's session; ``None``
    for a request sent by server code."""
    session_properties: Mapping[str, str] = field(default_factory=dict)
    """The sender's properties that the handler asked for when it registered."""
    addressed: bool = False
    """True for a request sent to this session (by handle or by filter)."""


RequestHandler = Callable[[Any, RequestContext], "Any | Awaitable[Any]"]
"""Answers a request: gets its value and context, returns the response (JSON-able).

Sync or async. Raise :class:`~aiohttp_session_ws.messaging.RejectedError` to
refuse with a message the caller sees.
"""
