"""Request-response messaging between sessions (see :doc:`/messaging`)."""

from .errors import (
    BadFilterError,
    HandlerConflictError,
    MessagingError,
    MessagingForbiddenError,
    MessagingTimeoutError,
    MessagingUnavailableError,
    NoHandlerError,
    NoSuchSessionError,
    RejectedError,
    SessionClosedError,
    messaging_error,
)
from .requests import RequestContext, RequestHandler
from .responses import FilterResponse, FilterResponses, ResponseCallback

__all__ = [
    "BadFilterError",
    "FilterResponse",
    "FilterResponses",
    "HandlerConflictError",
    "MessagingError",
    "MessagingForbiddenError",
    "MessagingTimeoutError",
    "MessagingUnavailableError",
    "NoHandlerError",
    "NoSuchSessionError",
    "RejectedError",
    "RequestContext",
    "RequestHandler",
    "ResponseCallback",
    "SessionClosedError",
    "messaging_error",
]
