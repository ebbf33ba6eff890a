"""A Python client of the session protocol, over aiohttp's websocket client.

``async with connect(url, session=http) as session:`` opens a protocol
connection (subprotocol ``aiohttp-session-ws.v1``) with the cookies of
``http``, waits for the server's ``hello``, and gives a :class:`Session`: its
state, requests (:meth:`Session.request`), pushes (:meth:`Session.pushes`,
:meth:`Session.on_push`), request-response messaging
(:attr:`Session.messaging`), session locks (:meth:`Session.lock`), the
event bus (:attr:`Session.events`) and, with
``reconnect=True``, reconnection with a backoff. :doc:`/client-python`
explains it; :doc:`/protocol` is the reference.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp.typedefs import LooseHeaders, StrOrURL

from .events_client import ClientEvents, ClientEventSubscription, ReceivedEvent
from .locks import LockInfo, SessionLockScope
from .locks_client import ClientLocks, ClientSessionLock, LockTimeoutError
from .messaging.client import ClientMessaging
from .protocol import (
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    CloseCode,
    ErrorCode,
    ProtocolError,
)

__all__ = [
    "ClientEventSubscription",
    "ClientSessionLock",
    "ConnectError",
    "Connecting",
    "ConnectionLostError",
    "LockInfo",
    "LockTimeoutError",
    "PushCallback",
    "Pushes",
    "ReceivedEvent",
    "RequestTimeoutError",
    "Session",
    "SessionLockScope",
    "SessionState",
    "StateListener",
    "connect",
]

logger = logging.getLogger(__name__)

StateListener = Callable[["SessionState", "SessionState"], None]
"""Called with ``(old, new)`` on every change of :attr:`Session.state`."""

PushCallback = Callable[[Any], "Awaitable[None] | None"]
"""Called with the ``data`` of each push: a plain function, or an ``async def``."""

_NO_RECONNECT = frozenset({CloseCode.NORMAL, CloseCode.POLICY_VIOLATION})
"""Close codes after which the session ends for good (see :doc:`/protocol`)."""

_RETRY_STATUSES = frozenset({408, 429})
"""4xx refusals of an upgrade worth another try (5xx always are)."""


class SessionState(enum.Enum):
    """Where a :class:`Session` stands."""

    CONNECTING = "connecting"
    """Opening the first connection (before :func:`connect` returns)."""
    CONNECTED = "connected"
    """A connection is open and its ``hello`` arrived: requests go out."""
    RECONNECTING = "reconnecting"
    """The connection dropped; a new one is on its way (``reconnect=True``)."""
    CLOSED = "closed"
    """For good: closed by :meth:`Session.close`, by the server, or given up."""


class ConnectError(ConnectionError):
    """A connection could not be opened, or did not start the protocol.

    The upgrade was refused (:attr:`status` holds the HTTP status: 400, 403,
    503...), the server could not be reached, did not select the subprotocol,
    or did not send a valid ``hello`` in time.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of a refused upgrade; ``None`` for other failures."""
        self.retryable = retryable
        """Whether another attempt may succeed (used by reconnection)."""


class ConnectionLostError(ConnectionError):
    """A request could not be answered: the connection dropped, or is not open.

    Raised at once for every pending request when the connection ends, even
    with ``reconnect=True`` (requests are not replayed on the new connection),
    and by requests made while the session is reconnecting or closed.
    """


class RequestTimeoutError(ProtocolError):
    """No answer came within ``request_timeout``: raised by the client itself.

    Its :attr:`~aiohttp_session_ws.protocol.ProtocolError.code` is
    :attr:`~aiohttp_session_ws.protocol.ErrorCode.TIMEOUT`, like the
    server's ``timeout`` error, so one ``except ProtocolError`` checking the
    code covers both.
    """


ErrorFactory = Callable[[dict[str, Any]], Exception]
"""Makes the exception of an ``error`` frame (given the whole frame)."""

ResultHook = Callable[[int, Any], Any]
"""Called with ``(request id, data)`` when a result arrives, in the reader;
what it returns is the request's value."""


def _protocol_error(frame: dict[str, Any]) -> Exception:
    """The exception of an ``error`` frame of a plain request."""
    return ProtocolError(str(frame.get("code")), str(frame.get("message", "")))


@dataclass(slots=True)
class _Waiter:
    """A request waiting for its answer."""

    future: asyncio.Future[Any]
    error: ErrorFactory
    on_result: ResultHook | None


class Pushes:
    """An async iterator of push ``data``, from :meth:`Session.pushes`.

    It holds up to ``max_buffer`` pushes that were not read yet; when it is
    full the oldest is dropped and counted in :attr:`dropped`. It ends once
    the session is closed for good and what it holds has been read. Close it
    (:meth:`close`, or ``async with``) to stop early.
    """

    def __init__(self, max_buffer: int, on_close: Callable[[Pushes], None]) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be positive, not {max_buffer!r}")
        self._items: deque[Any] = deque()
        self._max = max_buffer
        self._ready = asyncio.Event()
        self._ended = False
        self._on_close = on_close
        self.dropped = 0
        """Pushes dropped here because nobody read them fast enough."""

    def _put(self, data: Any) -> None:
        if len(self._items) >= self._max:
            self._items.popleft()
            self.dropped += 1
        self._items.append(data)
        self._ready.set()

    def _end(self) -> None:
        self._ended = True
        self._ready.set()

    def close(self) -> None:
        """Stop: the iterator ends after what it holds, and takes no more."""
        if not self._ended:
            self._end()
            self._on_close(self)

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing`` and ``await`` habits."""
        self.close()

    def __aiter__(self) -> Pushes:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def __aenter__(self) -> Pushes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _remover(items: list[Any], item: Any) -> Callable[[], None]:
    """A function that takes ``item`` out of ``items`` (later calls do nothing)."""

    def remove() -> None:
        if item in items:
            items.remove(item)

    return remove


def _is_async(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` is an ``async def``, a partial of one, or has one as call.

    Such a callback gives a coroutine, which the session awaits in a task.
    """
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        type(callback).__call__
    )


class Session:
    """One protocol session: a connection, and its successors when reconnecting.

    Made by :func:`connect`. It owns one background task, which reads the
    connection (and reconnects), plus one per ``async def`` push callback, one
    per request its message handlers are answering, one that re-sends
    the handler registrations after a reconnection, one per :meth:`lock`
    call, one that checks the locks after a reconnection, and per event
    subscription one that subscribes it again (after a reconnection or a
    ``missed`` frame) and one that runs its ``async def`` ``on_event``; all
    end in :meth:`close`.
    """

    def __init__(
        self,
        url: StrOrURL,
        *,
        http: aiohttp.ClientSession,
        own_http: bool,
        reconnect: bool,
        headers: LooseHeaders | None,
        origin: str | None,
        request_timeout: float,
        reconnect_delay: float,
        reconnect_max_delay: float,
        max_reconnect_attempts: int | None,
        heartbeat: float | None,
        max_msg_size: int = 0,
    ) -> None:
        self.url = url
        """The endpoint's URL."""
        self.http = http
        """The :class:`aiohttp.ClientSession` whose cookies ride on every connection."""
        self._own_http = own_http
        self._reconnect = reconnect
        self._headers = headers
        self._origin = origin
        self.request_timeout = request_timeout
        """Seconds a request waits for its answer (:exc:`RequestTimeoutError`)."""
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._max_reconnect_attempts = max_reconnect_attempts
        self._heartbeat = heartbeat
        self._max_msg_size = max_msg_size

        self.session_id = ""
        """The session's public handle (``$SessionId``), from the ``hello``."""
        self.connection_id = ""
        """This connection's id (``$ConnectionId``), from the ``hello``."""
        self.limits: dict[str, Any] = {}
        """The server's limits, from the ``hello`` (see :doc:`/protocol`)."""
        self.missed = 0
        """Pushes the server dropped for this session because it read too slowly."""
        self.close_code: int | None = None
        """The close code of the last connection that ended (``None``: no close
        frame, the network failed)."""

        self._state = SessionState.CONNECTING
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._state_listeners: list[StateListener] = []
        self._push_callbacks: list[Callable[[Any], Any]] = []
        self._missed_listeners: list[Callable[[int], None]] = []
        self._buffers: list[Pushes] = []
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_lock = asyncio.Lock()
        self.messaging = ClientMessaging(self)
        """Request-response messaging: the handlers this session serves, and
        the requests it sends (a
        :class:`~aiohttp_session_ws.messaging.client.ClientMessaging`)."""
        self._locks = ClientLocks(self)
        self.events = ClientEvents(self)
        """The event bus: subscriptions that resume by themselves after a
        reconnection, registering, queries (a
        :class:`~aiohttp_session_ws.events_client.ClientEvents`)."""

    # state
    @property
    def state(self) -> SessionState:
        """The session's :class:`SessionState`."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the session is :attr:`~SessionState.CLOSED`."""
        return self._state is SessionState.CLOSED

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(old, new)`` on each state change; return its remover.

        It runs in the session's reader: keep it short, and do not block.
        """
        self._state_listeners.append(listener)
        return _remover(self._state_listeners, listener)

    def _set_state(self, new: SessionState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        for listener in list(self._state_listeners):
            try:
                listener(old, new)
            except Exception:
                logger.exception("State listener %r failed", listener)

    # requests
    async def request(self, op: str, /, **args: Any) -> Any:
        """Send request ``op`` with ``args``; return the ``data`` of its result.

        :raises ProtocolError: the server answered with an ``error`` frame
            (:attr:`~aiohttp_session_ws.protocol.ProtocolError.code` says why),
            or the frame is over the server's ``max_frame_size`` (not sent).
        :raises RequestTimeoutError: no answer within :attr:`request_timeout`.
        :raises ConnectionLostError: the connection is not open, or ended
            before the answer came.
        :raises TypeError: ``args`` hold something JSON cannot carry.
        """
        if "id" in args or "op" in args:
            raise ValueError("'op' and 'id' are not arguments of a request")
        return await self._request(op, args)

    async def _request(
        self,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
        error: ErrorFactory = _protocol_error,
        on_result: ResultHook | None = None,
        on_id: Callable[[int], None] | None = None,
    ) -> Any:
        """:meth:`request`, with hooks for ops that need more.

        It waits ``timeout`` (default :attr:`request_timeout`; ``math.inf``:
        no bound), raises ``error(frame)`` for an error frame (and for a
        frame too large to send), passes the result through ``on_result``,
        and tells ``on_id`` the request's id before sending it.
        """
        wait = self.request_timeout if timeout is None else timeout
        ws = self._ws
        if self._state is not SessionState.CONNECTED or ws is None or ws.closed:
            raise ConnectionLostError(
                f"Cannot send {op!r}: the session is {self._state.value}"
            )
        request_id = next(self._ids)
        text = json.dumps(
            {"op": op, "id": request_id, **args},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        max_size = self.limits.get("max_frame_size")
        if isinstance(max_size, int) and len(text.encode("utf-8")) > max_size:
            raise error(
                {
                    "code": str(ErrorCode.TOO_LARGE),
                    "message": f"request {op!r} is over the server's "
                    f"max_frame_size of {max_size} bytes",
                }
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Waiter(future, error, on_result)
        if on_id is not None:
            on_id(request_id)
        try:
            try:
                await ws.send_str(text)
            except (  # pragma: no cover (a race with the close of the socket)
                ConnectionError,
                aiohttp.ClientError,
                RuntimeError,
            ) as exc:
                if future.done():  # failed by the reader meanwhile: that is seen
                    future.exception()
                raise ConnectionLostError(
                    f"Cannot send {op!r}: the connection is closing"
                ) from exc
            try:
                return await asyncio.wait_for(
                    future, None if math.isinf(wait) else wait
                )
            except TimeoutError:
                if future.done() and not future.cancelled():
                    raise  # the answer is an error that is a TimeoutError
                raise RequestTimeoutError(
                    ErrorCode.TIMEOUT, f"no answer to {op!r} within {wait} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _send_frame(self, op: str, args: dict[str, Any]) -> None:
        """Send a frame that is not a request (no ``id``, no reply): an ``answer``.

        :raises ConnectionLostError: the connection is not open.
        :raises ProtocolError: ``too_large``: over the server's max_frame_size.
        :raises TypeError: ``args`` hold something JSON cannot carry.
        :raises ValueError: ``args`` hold a NaN or an infinity.
        """
        ws = self._ws
        if self._state is not SessionState.CONNECTED or ws is None or ws.closed:
            raise ConnectionLostError(
                f"Cannot send {op!r}: the session is {self._state.value}"
            )
        text = json.dumps(
            {"op": op, **args},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        max_size = self.limits.get("max_frame_size")
        if isinstance(max_size, int) and len(text.encode("utf-8")) > max_size:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"{op!r} is over the server's max_frame_size of {max_size} bytes",
            )
        try:
            await ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLostError(
                f"Cannot send {op!r}: the connection is closing"
            ) from exc

    async def ping_server(self) -> float:
        """Send a ``ping`` request; return its round trip in seconds.

        It proves the server still serves this connection, not only that the
        socket is open.
        """
        start = time.monotonic()
        await self.request("ping")
        return time.monotonic() - start

    async def properties(self, session_id: str | None = None) -> dict[str, str]:
        """The session properties of this session, or of the session ``session_id``.

        :raises ProtocolError: another session's properties were refused
            (``forbidden``), or no live session has that handle (``not_found``).
        """
        if session_id is None:
            data = await self.request("properties")
        else:
            data = await self.request("properties", session=session_id)
        if not isinstance(data, dict):
            raise ProtocolError(
                ErrorCode.INTERNAL, f"properties must be an object, not {data!r:.40}"
            )
        return data

    # locks
    async def lock(
        self,
        name: str,
        scope: SessionLockScope = SessionLockScope.UNLOCK_ON_SESSION_LOSS,
        timeout: float | None = None,
    ) -> ClientSessionLock:
        """Take the session lock ``name`` (a path such as ``docs/42``); wait for it.

        It waits, first come first served among sessions, until the lock is
        granted, ``timeout`` seconds pass, the calling task is cancelled (the
        server is told with a ``cancel`` frame; a grant that raced with it
        is released at once) or the connection ends. ``request_timeout``
        does not bound it. Asking again for a lock this session holds returns
        the same :class:`~aiohttp_session_ws.locks_client.ClientSessionLock`
        at once, with its scope weakened if ``scope`` asks so.

        :raises ~aiohttp_session_ws.locks_client.LockTimeoutError: not granted
            within ``timeout`` seconds (a
            :exc:`~aiohttp_session_ws.protocol.ProtocolError` with the code
            ``timeout``).
        :raises ProtocolError: ``forbidden`` (the server's policy refused
            the name), ``bad_frame`` (not a valid path), ``not_found`` (the
            session is not alive), ``cancelled``.
        :raises ConnectionLostError: the connection is not open, or ended
            before the grant.
        :raises ValueError: ``scope`` is not a
            :class:`~aiohttp_session_ws.locks.SessionLockScope`, or
            ``timeout`` is not a positive number.
        """
        return await self._locks.lock(name, scope, timeout)

    async def lock_info(self, name: str) -> LockInfo:
        """Who holds the lock ``name`` and how many sessions wait for it.

        :raises ProtocolError: ``forbidden``, ``bad_frame`` (not a valid path).
        """
        return await self._locks.info(name)

    # pushes
    def on_push(self, callback: PushCallback) -> Callable[[], None]:
        """Call ``callback(data)`` for each push; return its remover.

        A plain function runs in the session's reader, at once: keep it short.
        An ``async def`` runs in a task of its own, one push after the other,
        so it may await requests; it holds up to 1000 pushes it has not handled
        yet and drops the oldest past that. Exceptions are logged.
        """
        if _is_async(callback):
            pushes = self.pushes()
            if self.closed:
                return pushes.close
            task = asyncio.get_running_loop().create_task(
                self._feed(callback, pushes),
                name=f"session-ws push callback {callback!r}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return pushes.close
        self._push_callbacks.append(callback)
        return _remover(self._push_callbacks, callback)

    async def _feed(self, callback: Callable[[Any], Any], pushes: Pushes) -> None:
        async for data in pushes:
            try:
                await callback(data)
            except Exception:
                logger.exception("Push callback %r failed", callback)

    def pushes(self, *, max_buffer: int = 1000) -> Pushes:
        """An async iterator of push ``data`` from now on (see :class:`Pushes`).

        It goes on across reconnections and ends when the session is closed
        for good; :attr:`missed` counts what the server dropped meanwhile.
        """
        pushes = Pushes(max_buffer, self._buffers.remove)
        if self.closed:
            pushes._end()
        else:
            self._buffers.append(pushes)
        return pushes

    def on_missed(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(n)`` when a frame says the server dropped ``n`` pushes.

        Called before that frame is handled; :attr:`missed` holds the total.
        Return its remover.
        """
        self._missed_listeners.append(listener)
        return _remover(self._missed_listeners, listener)

    def _push(self, data: Any) -> None:
        for callback in list(self._push_callbacks):
            try:
                result = callback(data)
            except Exception:
                logger.exception("Push callback %r failed", callback)
                continue
            if inspect.isawaitable(result):  # an async callable we did not spot
                if inspect.iscoroutine(result):
                    result.close()
                logger.error(
                    "Push callback %r returned an awaitable, which was not run; "
                    "give on_push an async def to have it awaited",
                    callback,
                )
        for pushes in list(self._buffers):
            pushes._put(data)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` in a task the session owns (ended in :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # connections
    async def _start(self) -> None:
        """Open the first connection; on failure, close the session and raise."""
        try:
            await self._open()
        except BaseException:
            self._set_state(SessionState.CLOSED)
            await self._release()
            raise
        self._set_state(SessionState.CONNECTED)
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"session-ws client {self.url}"
        )
        self.messaging._connected()

    async def _open(self) -> None:
        """Open a connection and read its ``hello``: the session's connection."""
        try:
            ws = await asyncio.wait_for(
                self.http.ws_connect(
                    self.url,
                    protocols=[SUBPROTOCOL],
                    headers=self._headers,
                    origin=self._origin,
                    heartbeat=self._heartbeat,
                    max_msg_size=self._max_msg_size,
                ),
                self.request_timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
            if exc.message != "Invalid response status":  # pragma: no cover
                raise ConnectError(
                    f"Bad websocket handshake from {self.url}: {exc.message}",
                    retryable=False,
                ) from exc
            raise ConnectError(
                f"The server refused the websocket upgrade of {self.url} with "
                f"HTTP {status}",
                status=status,
                retryable=status >= 500 or status in _RETRY_STATUSES,
            ) from exc
        except TimeoutError as exc:
            raise ConnectError(
                f"No websocket upgrade from {self.url} within {self.request_timeout} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectError(f"Cannot connect to {self.url}: {exc}") from exc
        try:
            if ws.protocol != SUBPROTOCOL:
                raise ConnectError(
                    f"The server at {self.url} did not select the subprotocol "
                    f"{SUBPROTOCOL!r} (it chose {ws.protocol!r}): is it a "
                    "session_ws_endpoint?",
                    retryable=False,
                )
            try:
                msg = await ws.receive(timeout=self.request_timeout)
            except TimeoutError:
                raise ConnectError(
                    f"No hello from {self.url} within {self.request_timeout} s"
                ) from None
            self._hello(msg)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws

    def _hello(self, msg: aiohttp.WSMessage) -> None:
        """Check the first frame; take the ``hello``'s fields."""
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close_code = msg.data
            raise ConnectError(
                f"The server closed the connection with {msg.data} before its hello",
                retryable=msg.data not in _NO_RECONNECT,
            )
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectError(f"No hello from {self.url} (got {msg.type.name})")
        try:
            frame = json.loads(msg.data)
        except ValueError:
            frame = None
        if (
            not isinstance(frame, dict)
            or frame.get("op") != "hello"
            or not isinstance(frame.get("session"), str)
            or not isinstance(frame.get("connection"), str)
        ):
            raise ConnectError(
                f"The first frame from {self.url} is not a hello: {msg.data!r:.80}",
                retryable=False,
            )
        if frame.get("version") != PROTOCOL_VERSION:
            raise ConnectError(
                f"The server speaks protocol version {frame.get('version')!r}, "
                f"this client {PROTOCOL_VERSION}",
                retryable=False,
            )
        limits = frame.get("limits")
        self.session_id = frame["session"]
        self.connection_id = frame["connection"]
        self.limits = dict(limits) if isinstance(limits, dict) else {}

    async def _run(self) -> None:
        """Read the connection; reconnect when it drops and that is wanted."""
        lost = ConnectionLostError("The connection was lost")
        try:
            while True:
                ws = self._ws
                assert ws is not None
                self.close_code = await self._read(ws)
                self._ws = None
                code = self.close_code
                self._fail_pending(
                    ConnectionLostError(
                        f"The connection was lost (close code {code})"
                        if code is not None
                        else "The connection was lost (no close frame)"
                    )
                )
                self.messaging._lost()
                self._locks._connection_lost()
                self.events._connection_lost()
                if not self._reconnect or code in _NO_RECONNECT:
                    return
                self._set_state(SessionState.RECONNECTING)
                if not await self._reconnect_with_backoff():
                    return
                self._set_state(SessionState.CONNECTED)
                self.messaging._connected()
                self._locks._reconnected()
                self.events._reconnected()
        except Exception:  # pragma: no cover (a bug of ours: end, do not hang)
            logger.exception("The session-ws client's reader failed")
        finally:
            self._finish(lost)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> int | None:
        """Handle the frames of ``ws`` until it ends; return the server's close code."""
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self._frame(msg.data)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                code: int = msg.data
                return code
            elif msg.type is aiohttp.WSMsgType.BINARY:
                logger.warning("Ignored a binary frame from %s", self.url)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                logger.warning("The connection to %s failed: %s", self.url, msg.data)
            elif ws.closed:  # CLOSED: the network went without a close frame
                return None

    def _frame(self, text: str) -> None:
        """Handle one server frame."""
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            logger.warning("Ignored a frame that is not a JSON object: %r", text[:80])
            return
        missed = frame.get("missed")
        if isinstance(missed, int) and not isinstance(missed, bool) and missed > 0:
            self.missed += missed
            for listener in list(self._missed_listeners):
                try:
                    listener(missed)
                except Exception:
                    logger.exception("Missed listener %r failed", listener)
            # event frames may be among the dropped: resubscribe from the
            # last ids, and ignore the current subscriptions from this frame on
            self.events._missed()
        op = frame.get("op")
        if op == "push":
            self._push(frame.get("data"))
        elif op == "request":
            self.messaging._on_request(frame)
        elif op == "response":
            self.messaging._on_response(frame)
        elif op == "lock_lost":
            self._locks._on_lost(frame)
        elif op == "events":
            self.events._on_events(frame)
        elif op == "events_lost":
            self.events._on_lost(frame)
        elif op in ("result", "error"):
            request_id = frame.get("id")
            waiter = (
                self._pending.get(request_id)
                if isinstance(request_id, int) and not isinstance(request_id, bool)
                else None
            )
            if waiter is None or waiter.future.done():
                if op == "error":
                    logger.warning(
                        "Error frame for no pending request: %s: %s",
                        frame.get("code"),
                        frame.get("message"),
                    )
                return
            assert isinstance(request_id, int)
            if op == "error":
                waiter.future.set_exception(waiter.error(frame))
                return
            data = frame.get("data")
            if waiter.on_result is not None:
                try:
                    data = waiter.on_result(request_id, data)
                except Exception as exc:
                    waiter.future.set_exception(exc)
                    return
            waiter.future.set_result(data)
        # other ops (a newer server's) are left alone

    async def _reconnect_with_backoff(self) -> bool:
        """Open a new connection, with capped exponential backoff and full jitter."""
        for attempt in itertools.count():
            if (
                self._max_reconnect_attempts is not None
                and attempt >= self._max_reconnect_attempts
            ):
                logger.warning(
                    "Gave up reconnecting to %s after %d attempts", self.url, attempt
                )
                return False
            cap = min(
                self._reconnect_max_delay, self._reconnect_delay * 2 ** min(attempt, 32)
            )
            await asyncio.sleep(random.uniform(0, cap))
            try:
                await self._open()
            except ConnectError as exc:
                if not exc.retryable:
                    logger.warning("Stopped reconnecting to %s: %s", self.url, exc)
                    return False
                logger.debug("Reconnecting to %s failed: %s", self.url, exc)
                continue
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail_pending(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.future.done():
                waiter.future.set_exception(exc)

    def _finish(self, exc: BaseException) -> None:
        """Be closed for good: fail what waits, end the iterators, tell listeners."""
        self._fail_pending(exc)
        self.messaging._lost()
        self._locks._closed()
        self.events._closed()
        self._set_state(SessionState.CLOSED)
        for pushes in list(self._buffers):
            pushes._end()
        self._buffers.clear()

    async def _release(self) -> None:
        """Close the websocket, and the ClientSession if :func:`connect` made it."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._own_http:
            await self.http.close()

    async def close(self) -> None:
        """Close the session for good: no reconnection; pending requests fail.

        Message handlers still answering are cancelled, and filter sends end.
        Waits (up to :attr:`request_timeout`) for ``async def`` push callbacks
        to finish the pushes they hold, then cancels them. Calling it again
        does nothing.
        """
        async with self._close_lock:
            self._finish(ConnectionLostError("The session was closed"))
            current = asyncio.current_task()
            runner = self._runner
            if runner is not None and runner is not current and not runner.done():
                runner.cancel()
                await asyncio.wait([runner])
            await self._release()
            tasks = {t for t in self._tasks if t is not current}
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=self.request_timeout)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"<Session {self._state.value} {self.url} session={self.session_id!r} "
            f"connection={self.connection_id!r}>"
        )


class Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``."""

    def __init__(self, url: StrOrURL, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._session: Session | None = None

    async def _connect(self) -> Session:
        if self._session is not None:
            raise RuntimeError("This connect() was used already; call connect() again")
        options = dict(self._options)
        http: aiohttp.ClientSession | None = options.pop("session")
        own_http = http is None
        session = Session(
            self._url,
            http=http if http is not None else aiohttp.ClientSession(),
            own_http=own_http,
            **options,
        )
        self._session = session
        await session._start()
        return session

    def __await__(self) -> Generator[Any, None, Session]:
        return self._connect().__await__()

    async def __aenter__(self) -> Session:
        return await self._connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._session is not None
        await self._session.close()


def connect(
    url: StrOrURL,
    *,
    session: aiohttp.ClientSession | None = None,
    reconnect: bool = False,
    headers: LooseHeaders | None = None,
    origin: str | None = None,
    request_timeout: float = 35.0,
    reconnect_delay: float = 0.2,
    reconnect_max_delay: float = 10.0,
    max_reconnect_attempts: int | None = None,
    heartbeat: float | None = None,
    max_msg_size: int = 0,
) -> Connecting:
    """Open a protocol session with the endpoint at ``url``.

    ``async with connect(url, session=http) as session:`` (closed at the end
    of the block), or ``session = await connect(...)`` and later ``await
    session.close()``. It returns once the server's ``hello`` arrived.

    :param session: the :class:`aiohttp.ClientSession` to connect with: its
        cookie jar holds the login. Without one, a new one is made, and closed
        with the session.
    :param reconnect: reconnect after the connection drops, unless the server
        closed it with 1000 (the session's websockets were closed: logout) or
        1008. The first connection is not retried.
    :param headers: extra headers of the upgrade request.
    :param origin: the ``Origin`` header (the server checks it when present).
    :param request_timeout: seconds to wait for the upgrade, for the
        ``hello``, and for the answer of each request (a little over the
        server's own default of 30 s, so that its ``timeout`` answer comes
        first).
    :param reconnect_delay: the backoff's first ceiling, in seconds; each
        attempt waits a random time up to the ceiling, which doubles...
    :param reconnect_max_delay: ...up to this.
    :param max_reconnect_attempts: attempts after one drop before the session
        closes; ``None``: no end.
    :param max_msg_size: the largest server frame it reads, in bytes (``0``,
        the default: any size, as a browser does; a larger one drops the
        connection with 1009).
    :param heartbeat: send websocket pings this often (seconds), and treat a
        missing pong as a dropped connection.
    :raises ConnectError: (when awaited) the upgrade was refused, the server
        was out of reach, or it did not start the protocol.
    """
    for name, value in (
        ("request_timeout", request_timeout),
        ("reconnect_delay", reconnect_delay),
        ("reconnect_max_delay", reconnect_max_delay),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    return Connecting(
        url,
        {
            "session": session,
            "reconnect": reconnect,
            "headers": headers,
            "origin": origin,
            "request_timeout": request_timeout,
            "reconnect_delay": reconnect_delay,
            "reconnect_max_delay": reconnect_max_delay,
            "max_reconnect_attempts": max_reconnect_attempts,
            "heartbeat": heartbeat,
            "max_msg_size": max_msg_size,
        },
    )
