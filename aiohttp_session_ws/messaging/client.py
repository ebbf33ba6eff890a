"""Request-response messaging in the Python client: ``session.messaging``.

A :class:`~aiohttp_session_ws.client.Session` feeds its
:class:`ClientMessaging` the server's ``request`` and ``response`` frames and
tells it when a connection starts and ends; the handlers registered here
live with the connection, so they are registered again after each
reconnection. :doc:`/client-python` explains it; :doc:`/protocol` has the ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol import ErrorCode, ProtocolError
from .errors import HandlerConflictError, MessagingError, RejectedError, messaging_error
from .paths import check_path
from .requests import RequestContext, RequestHandler
from .responses import FilterResponse, FilterResponses, ResponseCallback

if TYPE_CHECKING:
    from ..client import ResultHook, Session

__all__ = [
    "DEFAULT_TIMEOUT",
    "HANDLER_FAILED",
    "NO_HANDLER_HERE",
    "ClientMessaging",
    "Registration",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
"""The server's timeout of a send without ``timeout`` (seconds)."""
HANDLER_FAILED = "the handler failed"
"""The rejection sent for a handler that raised something else than
:exc:`~aiohttp_session_ws.messaging.errors.RejectedError`, or returned
something JSON cannot carry."""
NO_HANDLER_HERE = "no handler for that path on this connection"
"""The rejection sent for a request this connection has no handler for."""

_GRACE = 5.0
"""Seconds the client waits past a send's timeout, so that the server's
answer (``timeout`` or the ``done`` frame) comes first."""


def _error_of(frame: dict[str, Any]) -> Exception:
    """The exception of the ``error`` frame of a messaging op."""
    position = frame.get("position")
    return messaging_error(
        str(frame.get("code")),
        str(frame.get("message", "")),
        position
        if isinstance(position, int) and not isinstance(position, bool)
        else None,
    )


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not timeout > 0
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds, not {timeout!r}"
        )


class Registration:
    """A handler this session serves on its connection: :meth:`close` it to stop.

    Made by :meth:`ClientMessaging.add_request_handler` and
    :meth:`ClientMessaging.add_stream_handler`; it is registered again on
    each new connection until it is closed.
    """

    def __init__(
        self,
        messaging: ClientMessaging,
        path: str,
        handler: RequestHandler,
        *,
        addressed: bool,
        properties: list[str],
    ) -> None:
        self.path = path
        """The path it serves (and every path below it without a handler of its own)."""
        self.addressed = addressed
        """Whether it serves requests sent to this session (by handle or filter),
        rather than requests sent to the path."""
        self.handler = handler
        """What answers the requests."""
        self.session_properties = tuple(properties)
        """The sender's properties the handler gets in its context."""
        self._messaging = messaging
        self._closed = False
        self._generation = -1
        """The connection (see ``ClientMessaging._generation``) it went out on."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the registration failed)."""
        return self._closed

    def _args(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "addressed": self.addressed,
            "properties": list(self.session_properties),
        }

    async def close(self) -> None:
        """Stop serving: send ``remove_handler``; calling it again does nothing.

        It is not registered again on later connections. While the session
        is not connected there is nothing to remove on the server, and
        nothing is sent.
        """
        if self._closed:
            return
        self._closed = True
        messaging = self._messaging
        key = (self.path, self.addressed)
        if messaging._registrations.get(key) is self:
            del messaging._registrations[key]
        if self._generation != messaging._generation:
            return  # not (yet) on the current connection: it will not be
        await messaging._remove(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        kind = "addressed" if self.addressed else "path"
        return f"<Registration {state} {kind} {self.path!r}>"


@dataclass(slots=True)
class _FilterSend:
    """A filter send whose ``done`` frame has not come yet."""

    responses: FilterResponses
    deadline: asyncio.TimerHandle


class ClientMessaging:
    """Request-response messaging of a client session: ``session.messaging``.

    Handlers registered here answer requests that the server routes to this
    connection; the ``send_request_to_*`` methods send requests to handlers
    anywhere (server code, other sessions). Errors of its ops raise
    :class:`~aiohttp_session_ws.messaging.errors.MessagingError` subclasses,
    which are protocol errors
    (:class:`~aiohttp_session_ws.protocol.ProtocolError`); a connection that ends raises
    :exc:`~aiohttp_session_ws.client.ConnectionLostError`, as every request.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._registrations: dict[tuple[str, bool], Registration] = {}
        self._filters: dict[int, _FilterSend] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._generation = 0
        """Counts connection starts and ends: what a conversation or a
        registration belongs to."""
        self._resending: asyncio.Task[None] | None = None

    @property
    def registrations(self) -> list[Registration]:
        """The open registrations, oldest first."""
        return list(self._registrations.values())

    # handlers
    async def add_request_handler(
        self,
        path: str,
        handler: RequestHandler,
        session_properties: Iterable[str] = (),
    ) -> Registration:
        """Serve requests sent to ``path`` (``send_to_path``) with ``handler``.

        ``handler(value, context)`` (sync or ``async def``) gets each request's
        value and a :class:`~aiohttp_session_ws.messaging.requests.RequestContext`
        holding the sender's ``session_properties`` it asks for (``$Principal``,
        ``*F`` for all the fixed ones, ``*U`` for all the user ones); what it
        returns is the response. Raise
        :exc:`~aiohttp_session_ws.messaging.errors.RejectedError` to refuse with
        a message; any other exception is logged, and the sender gets
        ``"the handler failed"``.

        :raises ValueError: ``path`` is not a valid message path.
        :raises HandlerConflictError: this session already serves ``path``
            (checked here, without a round trip), or the server has another
            handler of this connection for it.
        :raises MessagingError: the server refused (``forbidden``...).
        """
        return await self._add(path, handler, False, session_properties)

    async def add_stream_handler(
        self,
        path: str,
        handler: RequestHandler,
        addressed: bool = True,
        *,
        session_properties: Iterable[str] = (),
    ) -> Registration:
        """Serve requests sent to this session for ``path`` with ``handler``.

        With ``addressed=True`` (the default) it gets the requests sent to this
        session by its handle (``send_to_session``) or by a filter that
        matches it (``send_to_filter``); ``addressed=False`` is
        :meth:`add_request_handler`. The handler is called as there.
        """
        return await self._add(path, handler, addressed, session_properties)

    async def _add(
        self,
        path: str,
        handler: RequestHandler,
        addressed: bool,
        session_properties: Iterable[str],
    ) -> Registration:
        check_path(path)
        if not callable(handler):
            raise TypeError(f"a request handler must be callable, not {handler!r:.60}")
        if isinstance(session_properties, str):
            raise TypeError(
                "session_properties is a list of property names, not one string"
            )
        properties = list(session_properties)
        for name in properties:
            if not isinstance(name, str):
                raise TypeError(f"a property name must be a string, not {name!r:.60}")
        key = (path, bool(addressed))
        if key in self._registrations:
            raise HandlerConflictError(
                f"this session already has a handler for {path!r} "
                f"(addressed={bool(addressed)})"
            )
        registration = Registration(
            self, path, handler, addressed=bool(addressed), properties=properties
        )
        registration._generation = self._generation
        self._registrations[key] = registration
        try:
            await self._session._request(
                "add_handler", registration._args(), error=_error_of
            )
        except BaseException as exc:
            registration._closed = True
            if self._registrations.get(key) is registration:
                del self._registrations[key]
            maybe_held = not isinstance(exc, Exception) or (
                isinstance(exc, ProtocolError) and exc.code is ErrorCode.TIMEOUT
            )
            if maybe_held and not self._session.closed:
                # cancelled, or no answer: the server may hold it
                self._session._spawn(
                    self._forget(registration, self._generation),
                    name=f"session-ws remove handler {path!r}",
                )
            raise
        return registration

    async def _forget(self, registration: Registration, generation: int) -> None:
        """Remove a registration whose add got no answer (unless it is back)."""
        key = (registration.path, registration.addressed)
        if generation != self._generation or key in self._registrations:
            return
        try:
            await self._remove(registration)
        except Exception as exc:
            logger.warning("Could not remove %r: %s", registration, exc)

    async def _remove(self, registration: Registration) -> None:
        """Send ``remove_handler``; a connection that ended has nothing to remove."""
        with contextlib.suppress(ConnectionError):
            await self._session._request(
                "remove_handler",
                {"path": registration.path, "addressed": registration.addressed},
                error=_error_of,
            )

    # connections (called by the session)
    def _connected(self) -> None:
        """A connection's ``hello`` came: send the registrations again on it."""
        self._generation += 1
        if any(not r.closed for r in self._registrations.values()):
            self._resending = self._session._spawn(
                self._resend(self._generation),
                name=f"session-ws re-register handlers {self._session.url}",
            )

    async def _resend(self, generation: int) -> None:
        for registration in list(self._registrations.values()):
            if generation != self._generation:
                return  # that connection is over; the next one resends
            if registration.closed or registration._generation == generation:
                continue
            registration._generation = generation
            try:
                await self._session._request(
                    "add_handler", registration._args(), error=_error_of
                )
            except ConnectionError as exc:
                logger.debug("Re-registering %r stopped: %s", registration, exc)
                return
            except Exception as exc:
                registration._generation = -1  # try again on the next connection
                logger.warning(
                    "Could not register %r again after a reconnection: %s",
                    registration,
                    exc,
                )
                continue
            key = (registration.path, registration.addressed)
            if self._registrations.get(key) is not registration:
                # closed while the add was on its way
                try:
                    await self._remove(registration)
                except Exception as exc:
                    logger.warning("Could not remove %r: %s", registration, exc)

    def _lost(self) -> None:
        """The connection ended: stop its conversations, end its filter sends.

        A filter send that did not get its ``done`` frame ends with an empty
        ``unanswered``: the handles of the sessions that did not answer are
        not known here.
        """
        self._generation += 1
        for task in list(self._handling):
            task.cancel()
        filters, self._filters = self._filters, {}
        for send in filters.values():
            send.deadline.cancel()
            send.responses._finish(frozenset())

    # requests to handle
    def _on_request(self, frame: dict[str, Any]) -> None:
        """A ``request`` frame: answer it in a task of its own."""
        conversation = frame.get("conversation")
        if not isinstance(conversation, int) or isinstance(conversation, bool):
            logger.warning(
                "Ignored a request frame without a conversation: %.80r", frame
            )
            return
        handler_path = frame.get("handler")
        addressed = frame.get("addressed") is True
        registration = (
            self._registrations.get((handler_path, addressed))
            if isinstance(handler_path, str)
            else None
        )
        generation = self._generation
        if registration is None:
            self._spawn_answer(
                self._respond(generation, conversation, error=NO_HANDLER_HERE),
                conversation,
            )
            return
        path = frame.get("path")
        sender = frame.get("session")
        properties = frame.get("properties")
        context = RequestContext(
            path=path if isinstance(path, str) else registration.path,
            handler_path=registration.path,
            sender=sender if isinstance(sender, str) else None,
            session_properties=(
                {str(k): str(v) for k, v in properties.items()}
                if isinstance(properties, dict)
                else {}
            ),
            addressed=addressed,
        )
        self._spawn_answer(
            self._handle(
                generation, conversation, registration, frame.get("data"), context
            ),
            conversation,
        )

    def _spawn_answer(self, coro: Coroutine[Any, Any, None], conversation: int) -> None:
        task = self._session._spawn(
            coro, name=f"session-ws conversation {conversation}"
        )
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(
        self,
        generation: int,
        conversation: int,
        registration: Registration,
        value: Any,
        context: RequestContext,
    ) -> None:
        try:
            result = registration.handler(value, context)
            if inspect.isawaitable(result):
                result = await result
        except RejectedError as exc:
            await self._respond(generation, conversation, error=exc.message)
            return
        except Exception:
            logger.exception("The handler of %r failed", registration.path)
            await self._respond(generation, conversation, error=HANDLER_FAILED)
            return
        await self._respond(generation, conversation, data=result, of=registration)

    async def _respond(
        self,
        generation: int,
        conversation: int,
        *,
        data: Any = None,
        error: str | None = None,
        of: Registration | None = None,
    ) -> None:
        """Send the ``answer``, unless its connection is over (nobody waits then)."""
        if generation != self._generation:
            return
        args: dict[str, Any] = {"conversation": conversation}
        if error is None:
            args["data"] = data
        else:
            args["error"] = error
        try:
            await self._session._send_frame("answer", args)
        except (TypeError, ValueError) as exc:
            logger.error(
                "The handler of %r returned a value JSON cannot carry: %s",
                of.path if of is not None else None,
                exc,
            )
            await self._respond(generation, conversation, error=HANDLER_FAILED)
        except ProtocolError as exc:  # too_large: the only one raised here
            logger.error(
                "The response of the handler of %r is too large: %s",
                of.path if of is not None else None,
                exc.message,
            )
            if error is None:
                await self._respond(generation, conversation, error=HANDLER_FAILED)
        except ConnectionError as exc:
            logger.debug("Could not answer conversation %d: %s", conversation, exc)

    # requests to send
    def _wait(self, timeout: float | None) -> float:
        """How long the client waits for a send's answer: past the server's timeout."""
        server = DEFAULT_TIMEOUT if timeout is None else timeout
        return max(self._session.request_timeout, server + _GRACE)

    async def _send(
        self,
        op: str,
        args: dict[str, Any],
        timeout: float | None,
        on_result: ResultHook | None = None,
    ) -> Any:
        _check_timeout(timeout)
        if timeout is not None:
            args["timeout"] = timeout
        return await self._session._request(
            op, args, timeout=self._wait(timeout), error=_error_of, on_result=on_result
        )

    async def send_request_to_path(
        self, path: str, request: Any, timeout: float | None = None
    ) -> Any:
        """Send ``request`` to the handler of ``path``; return its response.

        The handler may be server code or another client's connection.
        ``timeout`` (seconds) defaults to the server's (10 s), and the
        server clamps it to its ``request_timeout``.

        :raises ValueError: ``path`` is not a valid message path.
        :raises NoHandlerError: nothing serves ``path``.
        :raises RejectedError: the handler refused (its message), or failed.
        :raises MessagingTimeoutError: no response within ``timeout``.
        :raises SessionClosedError: the handling connection went away first.
        :raises MessagingError: another refusal (``forbidden``, ``unavailable``).
        """
        check_path(path)
        return await self._send(
            "send_to_path", {"path": path, "data": request}, timeout
        )

    async def send_request_to_session(
        self, path: str, handle: str, request: Any, timeout: float | None = None
    ) -> Any:
        """Send ``request`` to the session with public handle ``handle``, for ``path``.

        One of its connections with an addressed handler for ``path``
        answers. Raises as :meth:`send_request_to_path`, and
        :exc:`~aiohttp_session_ws.messaging.errors.NoSuchSessionError` when no
        live session has that handle.
        """
        check_path(path)
        if not isinstance(handle, str) or not handle:
            raise ValueError(
                f"a session handle is a non-empty string, not {handle!r:.60}"
            )
        return await self._send(
            "send_to_session",
            {"path": path, "session": handle, "data": request},
            timeout,
        )

    async def send_request_to_filter(
        self,
        filter: str,
        path: str,
        request: Any,
        timeout: float | None = None,
        on_response: ResponseCallback | None = None,
    ) -> FilterResponses:
        """Send ``request`` to every session that matches ``filter``, for ``path``.

        Returns once the server said how many sessions match
        (:attr:`~aiohttp_session_ws.messaging.responses.FilterResponses.expected`);
        the responses come later: iterate the result, or give
        ``on_response``. It ends when all answered or ``timeout`` passed;
        if the connection ends before, it ends with the responses it got
        and an empty ``unanswered`` (the handles are not known here).

        :raises BadFilterError: ``filter`` does not parse (see its ``position``).
        :raises MessagingError: another refusal (``forbidden``, ``unavailable``).
        """
        if not isinstance(filter, str):
            raise TypeError(f"a session filter is a string, not {filter!r:.60}")
        check_path(path)
        _check_timeout(timeout)
        deadline = self._wait(timeout)

        def start(request_id: int, data: Any) -> FilterResponses:
            # in the reader, as the result arrives: before any response frame
            expected = data.get("expected") if isinstance(data, dict) else None
            if (
                not isinstance(expected, int)
                or isinstance(expected, bool)
                or expected < 0
            ):
                raise MessagingError(
                    f"send_to_filter answered {data!r:.60}, not an expected count",
                    code=ErrorCode.INTERNAL,
                )
            responses = FilterResponses(expected, on_response)
            handle = asyncio.get_running_loop().call_later(
                deadline, self._expire, request_id
            )
            self._filters[request_id] = _FilterSend(responses, handle)
            return responses

        result: FilterResponses = await self._send(
            "send_to_filter",
            {"filter": filter, "path": path, "data": request},
            timeout,
            on_result=start,
        )
        return result

    def _expire(self, request_id: int) -> None:
        """No ``done`` frame came in time: end the send (a server's bug)."""
        send = self._filters.pop(request_id, None)
        if send is not None and not send.responses.done:
            logger.warning("No end of filter send %d came: ending it", request_id)
            send.responses._finish(frozenset())

    def _on_response(self, frame: dict[str, Any]) -> None:
        """A ``response`` frame of a filter send."""
        request_id = frame.get("request")
        send = (
            self._filters.get(request_id)
            if isinstance(request_id, int) and not isinstance(request_id, bool)
            else None
        )
        if send is None:
            logger.debug("Ignored a response of no filter send: %.80r", frame)
            return
        if frame.get("done") is True:
            assert isinstance(request_id, int)
            del self._filters[request_id]
            send.deadline.cancel()
            unanswered = frame.get("unanswered")
            send.responses._finish(
                frozenset(h for h in unanswered if isinstance(h, str))
                if isinstance(unanswered, list)
                else frozenset()
            )
            return
        session = frame.get("session")
        handle = session if isinstance(session, str) else ""
        error = frame.get("error")
        if isinstance(error, dict):
            response = FilterResponse(
                handle,
                error=messaging_error(
                    str(error.get("code", ErrorCode.INTERNAL)),
                    str(error.get("message", "")),
                ),
            )
        elif isinstance(error, str):
            response = FilterResponse(handle, error=RejectedError(error))
        else:
            response = FilterResponse(handle, value=frame.get("data"))
        send.responses._add(response)

    def __repr__(self) -> str:
        return (
            f"<ClientMessaging {len(self._registrations)} handlers, "
            f"{len(self._filters)} filter sends, {len(self._handling)} requests>"
        )
