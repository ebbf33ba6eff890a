"""The errors of request-response messaging: one class per code, one base.

The same codes go over the wire in ``error`` frames; the Python client
raises these classes for them, and server code gets them too.
"""

from __future__ import annotations

from ..protocol import ErrorCode, ProtocolError


class MessagingError(ProtocolError):
    """A request could not be answered: :attr:`code` says why."""

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | str | None = None) -> None:
        super().__init__(self.default_code if code is None else code, message)


class NoHandlerError(MessagingError):
    """No handler is registered for the path (or by the addressed session)."""

    default_code = ErrorCode.NO_HANDLER


class NoSuchSessionError(MessagingError):
    """No live session has the handle the request was addressed to."""

    default_code = ErrorCode.NO_SUCH_SESSION


class RejectedError(MessagingError):
    """The handler refused the request.

    Raise it in a handler to send its message back to the caller; any other
    exception a handler raises reaches the caller as ``rejected`` with a
    generic message (and is logged on the handler's side).
    """

    default_code = ErrorCode.REJECTED


class MessagingTimeoutError(MessagingError):
    """No response came within the request's timeout."""

    default_code = ErrorCode.TIMEOUT


class SessionClosedError(MessagingError):
    """The connection (or node) handling the request went away before it answered."""

    default_code = ErrorCode.SESSION_CLOSED


class HandlerConflictError(MessagingError):
    """The connection (or node) already has a handler for that path."""

    default_code = ErrorCode.HANDLER_CONFLICT


class BadFilterError(MessagingError):
    """The session filter does not parse: :attr:`position` is where it fails."""

    default_code = ErrorCode.BAD_FILTER

    def __init__(self, message: str, *, position: int = 0) -> None:
        super().__init__(message)
        self.position = position
        """The index in the filter text where the error was found."""


class MessagingForbiddenError(MessagingError):
    """The authorization policy refused the request."""

    default_code = ErrorCode.FORBIDDEN


class MessagingUnavailableError(MessagingError):
    """The cluster cannot be reached, and the target is not on this node."""

    default_code = ErrorCode.UNAVAILABLE


_BY_CODE: dict[str, type[MessagingError]] = {
    str(cls.default_code): cls
    for cls in (
        NoHandlerError,
        NoSuchSessionError,
        RejectedError,
        MessagingTimeoutError,
        SessionClosedError,
        HandlerConflictError,
        BadFilterError,
        MessagingForbiddenError,
        MessagingUnavailableError,
    )
}


def messaging_error(
    code: str, message: str, position: int | None = None
) -> MessagingError:
    """The exception of an error frame (or node reply) with ``code``.

    A code without a class of its own (``bad_frame``, ``limit``, a newer
    server's) gives a plain :class:`MessagingError` carrying that code.
    """
    cls = _BY_CODE.get(code)
    if cls is BadFilterError:
        return BadFilterError(message, position=position or 0)
    if cls is None:
        return MessagingError(message, code=code)
    return cls(message)


__all__ = [
    "BadFilterError",
    "HandlerConflictError",
    "MessagingError",
    "MessagingForbiddenError",
    "MessagingTimeoutError",
    "MessagingUnavailableError",
    "NoHandlerError",
    "NoSuchSessionError",
    "RejectedError",
    "SessionClosedError",
    "messaging_error",
]
