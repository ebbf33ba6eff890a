"""A protocol connection: read frames, dispatch ops, write frames (:doc:`/protocol`)."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Hashable
from typing import Any

from aiohttp import WSMsgType, web

from .authorization import allowed, principal_of
from .backends.base import BackendUnavailableError
from .closing import close_sockets
from .ids import redact, wire_id
from .origins import check_origin
from .properties import (
    CLIENT_IP,
    CONNECTION_ID,
    NODE,
    PRINCIPAL,
    SESSION_ID,
    START_TIME,
    TRANSPORT,
    check_factory_result,
)
from .protocol import (
    SUBPROTOCOL,
    CloseCode,
    ErrorCode,
    FollowUp,
    FrameError,
    Op,
    ProtocolError,
    Request,
    encode_error,
    encode_hello,
    encode_result,
    request_id_of,
    with_missed,
)
from .registry import ConnectionRecord, SessionWSRegistry
from .web import get_registry, session_ws

logger = logging.getLogger("aiohttp_session_ws.protocol")

FAST_WRITE_LIMIT = 16 * 1024
"""A frame is written at once while the socket's write buffer and it stay
under this many bytes; past that it waits in the queue, so that a fan-out
never waits on one slow reader."""


async def session_ws_endpoint(request: web.Request) -> web.WebSocketResponse:
    """An aiohttp handler that serves the protocol at a route of the app.

    ``app.router.add_get("/live", session_ws_endpoint)``: it is
    ``async with session_ws_protocol(request) as ws: await
    serve_protocol(request, ws)``.
    """
    async with session_ws_protocol(request) as ws:
        connection = await _open_connection(request, ws)
        if connection is not None:
            await connection.serve()  # no frame of ours waits above it
    return ws


class session_ws_protocol(session_ws):  # noqa: N801 (named like session_ws)
    """:class:`~aiohttp_session_ws.session_ws` for a protocol connection.

    ``async with session_ws_protocol(request) as ws:`` upgrades as
    ``session_ws`` does, after two more checks: the client offered the
    subprotocol ``aiohttp-session-ws.v1`` (400 if not; the Origin check
    comes first), and the websocket is made with the protocol's options
    (the subprotocol, ``max_msg_size`` from the registry's limits, no
    compression: frames are encoded once for every socket). ``ws_kwargs``
    override those options. Run your own code around
    :func:`serve_protocol` in the block.
    """

    __slots__ = ()

    def __init__(self, request: web.Request, **ws_kwargs: Any) -> None:
        options: dict[str, Any] = {
            "protocols": (SUBPROTOCOL,),
            "max_msg_size": get_registry(request).limits.max_message_size,
            "compress": False,
        }
        options.update(ws_kwargs)
        super().__init__(request, **options)

    async def __aenter__(self) -> web.WebSocketResponse:
        request = self.request
        if _is_upgrade(request):
            check_origin(request, self.registry.allowed_origins)
            if SUBPROTOCOL not in _offered_protocols(request):
                raise web.HTTPBadRequest(
                    text="This endpoint speaks the websocket subprotocol "
                    f"{SUBPROTOCOL}: offer it in Sec-WebSocket-Protocol"
                )
        return await super().__aenter__()


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _offered_protocols(request: web.Request) -> list[str]:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return [item.strip() for item in offered.split(",")]


async def serve_protocol(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Serve the protocol on ``ws`` until it closes.

    ``ws`` comes from an open ``async with session_ws_protocol(request)``
    block (or a ``session_ws`` one given ``protocols=[SUBPROTOCOL]``), so an
    app can run its own code around the protocol. The connection receives
    pushes from its ``hello`` on.

    :raises RuntimeError: ``ws`` is not a websocket registered by
        ``session_ws``.
    """
    connection = await _open_connection(request, ws)
    if connection is not None:
        await connection.serve()


async def _open_connection(
    request: web.Request, ws: web.WebSocketResponse
) -> ProtocolConnection | None:
    """Make the connection of ``ws``; ``None`` if it was closed instead."""
    registry = get_registry(request)
    record = registry.connection(ws)
    if record is None:
        raise RuntimeError(
            "serve_protocol() takes the websocket of an open "
            "`async with session_ws(request) as ws:` block"
        )
    try:
        handle = registry.public_handle(record.session_ws_id)
    except BackendUnavailableError:
        logger.warning("Refused a protocol connection: the cluster key is unknown")
        await ws.close(code=CloseCode.TRY_AGAIN_LATER, message=b"cluster unavailable")
        return None
    try:
        factory = await _factory_properties(registry, request)
        principal = await principal_of(request)
    except Exception:
        logger.exception("Could not make the properties of a protocol connection")
        await ws.close(code=CloseCode.INTERNAL_ERROR, message=b"server error")
        return None
    if principal is not None:
        factory.setdefault(PRINCIPAL, str(principal))
    return ProtocolConnection(registry, request, ws, record, handle, factory)


async def _factory_properties(
    registry: SessionWSRegistry, request: web.Request
) -> dict[str, str]:
    factory = registry.properties_factory
    if factory is None:
        return {}
    values = factory(request)
    if inspect.isawaitable(values):
        values = await values
    return check_factory_result(values)


class ProtocolConnection:
    """One websocket that speaks the protocol: its queue, its limits, its requests."""

    __slots__ = (
        "_by_id",
        "_cancelled",
        "_factory",
        "_filled_at",
        "_gone",
        "_missed",
        "_queue",
        "_queued_bytes",
        "_record",
        "_refused",
        "_registry",
        "_request",
        "_requests",
        "_tokens",
        "_transport",
        "_writer",
        "_ws",
        "handle",
    )

    def __init__(
        self,
        registry: SessionWSRegistry,
        request: web.Request,
        ws: web.WebSocketResponse,
        record: ConnectionRecord,
        handle: str,
        factory: dict[str, str],
    ) -> None:
        self._registry = registry
        self._request = request
        self._ws = ws
        self._record = record
        self.handle = handle
        """The public handle of the connection's session."""
        self._factory = factory
        # made when first needed: an idle connection holds no queue or task
        self._queue: collections.deque[tuple[bytes, bool]] | None = None
        self._queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._missed = 0
        self._tokens = float(registry.limits.burst)
        self._filled_at = time.monotonic()
        self._refused = 0  # frames refused by the rate limit in a row
        self._requests: set[asyncio.Task[None]] | None = None
        # requests in progress by id, for the client's ``cancel`` (made when
        # first needed, as the others)
        self._by_id: dict[int, list[asyncio.Task[None]]] | None = None
        self._cancelled: set[int] | None = None
        self._gone = False
        # read once: request.transport is a property, and deliver() is the
        # loop of every fan-out
        self._transport = request.transport

    @property
    def connection_id(self) -> str:
        """The connection's id (``$ConnectionId``)."""
        return self._record.connection_id

    @property
    def session_ws_id(self) -> Hashable:
        """The session ws id (a secret: never sent to the client)."""
        return self._record.session_ws_id

    def connection_properties(self) -> dict[str, str]:
        """The fixed properties, and those of the app's ``properties_factory``."""
        return {
            SESSION_ID: self.handle,
            CONNECTION_ID: self._record.connection_id,
            CLIENT_IP: self._request.remote or "",
            NODE: self._registry.node_id,
            START_TIME: str(int(self._record.opened_at * 1000)),
            TRANSPORT: "websocket",
            **self._factory,
        }

    # serving
    async def serve(self) -> None:
        """Say hello, then answer frames until the socket closes."""
        registry = self._registry
        registry.peers.add(self)
        try:
            limits = registry.limits
            await self._send(
                encode_hello(self.connection_id, self.handle, limits), reply=True
            )
            async for message in self._ws:
                if message.type == WSMsgType.TEXT:
                    await self._receive(message.data)
                elif message.type == WSMsgType.BINARY and await self._take_token(""):
                    await self._fail(
                        None, ErrorCode.BAD_FRAME, "binary frames are not taken"
                    )
                if self._gone:
                    break
        finally:
            self._gone = True
            registry.peers.discard(self)
            await self._end_tasks()

    async def _receive(self, text: str) -> None:
        counters = self._registry.counters
        counters.frames_in += 1
        if not await self._take_token(text):
            return
        try:
            request, op = self._registry.ops.parse(text, self._registry.limits)
        except FrameError as exc:
            await self._fail(exc.request_id, exc.code, exc.message)
            return
        if not op.reply:  # not a request: served as it is read, no task
            try:
                await self._run(request, op)
            except ProtocolError as exc:
                await self._fail(None, exc.code, exc.message)
            except Exception:
                logger.exception("Op %r failed", request.op)
                await self._fail(None, ErrorCode.INTERNAL, "the server failed")
            return
        limits = self._registry.limits
        if counters.pending_requests and self._pending() >= limits.max_pending:
            await self._fail(
                request.id,
                ErrorCode.LIMIT,
                f"over {limits.max_pending} requests in progress",
            )
            return
        if self._requests is None:
            self._requests = set()
        task = asyncio.get_running_loop().create_task(
            self._answer(request, op), name=f"request-{request.op}-{request.id}"
        )
        counters.pending_requests += 1
        self._requests.add(task)
        if self._by_id is None:
            self._by_id = {}
        self._by_id.setdefault(request.id, []).append(task)  # ids may repeat
        task.add_done_callback(self._request_done)

    def _pending(self) -> int:
        return 0 if self._requests is None else len(self._requests)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._registry.counters.pending_requests -= 1
        if self._requests is not None:
            self._requests.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("A request failed", exc_info=task.exception())
        by_id = self._by_id
        if by_id is None:
            return
        for request_id, tasks in list(by_id.items()):
            if task in tasks:
                tasks.remove(task)
                if not tasks:
                    del by_id[request_id]
                cancelled = self._cancelled
                if (
                    task.cancelled()
                    and cancelled is not None
                    and request_id in cancelled
                    and not self._gone
                ):
                    # cancelled before it began: no answer was sent yet
                    cancelled.discard(request_id)
                    tasks_owner = self._registry._tasks
                    if not tasks_owner.closed:
                        tasks_owner.spawn(
                            self._fail(
                                request_id,
                                ErrorCode.CANCELLED,
                                "cancelled by the client",
                            ),
                            name=f"cancelled-{request_id}",
                        )
                break

    async def _take_token(self, text: str) -> bool:
        """Take a token of the rate limit; refuse ``text`` (and maybe close) if none.

        A refused frame is answered with its id when it has one; the close
        after ``rate_close_after`` refusals in a row bounds that work.
        """
        limits = self._registry.limits
        now = time.monotonic()
        tokens = min(
            float(limits.burst), self._tokens + (now - self._filled_at) * limits.rate
        )
        self._filled_at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._refused = 0
            return True
        self._tokens = tokens
        self._refused += 1
        if self._refused >= limits.rate_close_after:
            self._registry.counters.rate_closes += 1
            self._gone = True
            logger.warning(
                "Closed a protocol connection of %s: %d frames in a row over "
                "the rate limit",
                redact(wire_id(self.session_ws_id)),
                self._refused,
            )
            await self._ws.close(
                code=CloseCode.POLICY_VIOLATION, message=b"rate limit exceeded"
            )
        else:
            await self._fail(
                request_id_of(text, limits),
                ErrorCode.LIMIT,
                f"over the rate limit of {limits.rate:g} frames per second",
            )
        return False

    def cancel_request(self, request_id: int) -> bool:
        """Cancel a request in progress (the client's ``cancel``); False if none.

        The request is answered ``cancelled``.
        """
        tasks = [] if self._by_id is None else self._by_id.get(request_id, [])
        running = [task for task in tasks if not task.done()]
        if not running:
            return False
        if self._cancelled is None:
            self._cancelled = set()
        self._cancelled.add(request_id)
        for task in running:
            task.cancel()
        return True

    async def _answer(self, request: Request, op: Op[Any]) -> None:
        try:
            if op.unbounded:  # ends with the connection, or a cancel
                data = await self._run(request, op)
            else:
                # a timeout scope, not wait_for: no second task per request
                async with asyncio.timeout(self._registry.limits.request_timeout):
                    data = await self._run(request, op)
            if isinstance(data, FollowUp):
                follow_up: FollowUp[Any] | None = data
                frame = encode_result(request.id, data.result)
            else:
                follow_up = None
                frame = encode_result(request.id, data)
        except ProtocolError as exc:  # an app's op may use a code of its own
            await self._fail(
                request.id, exc.code, exc.message, getattr(exc, "position", None)
            )
            return
        except TimeoutError:
            await self._fail(request.id, ErrorCode.TIMEOUT, "the request took too long")
            return
        except BackendUnavailableError:
            await self._fail(
                request.id, ErrorCode.UNAVAILABLE, "the cluster cannot be reached"
            )
            return
        except asyncio.CancelledError:
            cancelled = self._cancelled
            if cancelled is None or request.id not in cancelled or self._gone:
                raise  # the connection ends
            cancelled.discard(request.id)
            await self._fail(request.id, ErrorCode.CANCELLED, "cancelled by the client")
            return
        except Exception:
            logger.exception("Op %r failed", request.op)
            await self._fail(request.id, ErrorCode.INTERNAL, "the server failed")
            return
        await self._send(frame, reply=True)
        if follow_up is not None:
            try:
                await follow_up.then(self)
            except Exception:
                logger.exception("The follow-up of op %r failed", request.op)

    async def _run(self, request: Request, op: Op[Any]) -> Any:
        if op.action is not None:
            wanted = op.action(self, request)
            actions = wanted if isinstance(wanted, list) else [wanted]
            for action in actions:
                if action is not None and not await allowed(
                    self._registry.authorize, self._request, action
                ):
                    raise ProtocolError(
                        ErrorCode.FORBIDDEN, f"not allowed: {action.permission}"
                    )
        return await op.handler(self, request)

    async def _fail(
        self,
        request_id: int | None,
        code: ErrorCode | str,
        message: str,
        position: int | None = None,
    ) -> None:
        self._registry.counters.errors[str(code)] += 1
        await self._send(encode_error(request_id, code, message, position), reply=True)

    # writing
    async def deliver(self, frame: bytes) -> bool:
        """Send an encoded push frame; never wait on a slow reader."""
        # _send's fast path, inlined: this is the loop of every fan-out
        if (
            self._queue is None
            and self._writer is None
            and not self._gone
            and self._fits(len(frame))
        ):
            try:
                await self._ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                self._gone = True
                return False
            self._registry.counters.frames_out += 1
            return True
        return await self._send(frame, reply=False)

    async def drained(self) -> bool:
        """Wait until the frames queued so far are written; False if gone."""
        while self._writer is not None and not self._gone:
            await asyncio.wait([self._writer])  # never cancels the writer
        return not self._gone and not self._ws.closed

    async def send(self, frame: bytes) -> bool:
        """Send an encoded frame that a full queue must not drop."""
        return await self._send(frame, reply=True)

    async def _send(self, frame: bytes, *, reply: bool) -> bool:
        if self._gone or self._ws.closed:
            return False
        if self._queue is None and self._writer is None and self._fits(len(frame)):
            try:
                await self._ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                self._gone = True
                return False
            self._registry.counters.frames_out += 1
            return True
        return self._enqueue(frame, reply)

    def _fits(self, size: int) -> bool:
        transport = self._transport
        # a closing transport makes send_frame raise, which marks us gone
        return (
            transport is not None
            and transport.get_write_buffer_size() + size < FAST_WRITE_LIMIT
        )

    def _enqueue(self, frame: bytes, reply: bool) -> bool:
        if self._queue is None:
            self._queue = collections.deque()
        queue = self._queue
        limits = self._registry.limits
        size = len(frame)
        # a frame alone is always taken: the byte bound is on what piles up
        while len(queue) >= limits.max_queue or (
            queue and self._queued_bytes + size > limits.max_queue_bytes
        ):
            if not queue or not self._make_room(queue):
                self._overflow()
                return False
        queue.append((frame, not reply))
        self._queued_bytes += size
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(), name=f"writer-{self.connection_id}"
            )
        return True

    def _make_room(self, queue: collections.deque[tuple[bytes, bool]]) -> bool:
        """Drop the oldest push (``drop_oldest``); False if that cannot be done."""
        if self._registry.limits.overflow != "drop_oldest":
            return False
        for index, (dropped, is_push) in enumerate(queue):
            if is_push:
                del queue[index]
                self._queued_bytes -= len(dropped)
                self._missed += 1
                self._registry.counters.queue_drops += 1
                return True
        return False

    def _overflow(self) -> None:
        """Close a connection whose client does not read (1013)."""
        self._gone = True
        self._registry.counters.overflow_closes += 1
        logger.warning(
            "Closed a protocol connection of %s: its client reads too slowly",
            redact(wire_id(self.session_ws_id)),
        )
        if self._queue is not None:
            self._queue.clear()
        self._queued_bytes = 0
        tasks = self._registry._tasks
        if not tasks.closed:
            tasks.spawn(
                close_sockets([self._ws], CloseCode.TRY_AGAIN_LATER, b"too slow"),
                name=f"close-slow-{self.connection_id}",
            )

    async def _drain(self) -> None:
        queue = self._queue
        try:
            while queue:
                frame, _ = queue.popleft()
                self._queued_bytes -= len(frame)
                if self._missed:
                    frame, self._missed = with_missed(frame, self._missed), 0
                await self._ws.send_frame(frame, WSMsgType.TEXT)
                self._registry.counters.frames_out += 1
        except (ConnectionError, RuntimeError):
            self._gone = True
        finally:
            self._writer = None
            if queue is not None and not queue:
                self._queue = None

    async def _end_tasks(self) -> None:
        tasks: list[asyncio.Task[None]] = list(self._requests or ())
        if self._writer is not None:
            tasks.append(self._writer)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


__all__ = [
    "ProtocolConnection",
    "serve_protocol",
    "session_ws_endpoint",
    "session_ws_protocol",
]
