"""A protocol tab over a raw websocket: sends ops, answers requests, as the wire says.

The messaging tests speak the wire format themselves, so that they test the
server and not one of our clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from aiohttp_session_ws import SUBPROTOCOL

TIMEOUT = 5.0

Answer = Callable[
    [dict[str, Any]], "Awaitable[dict[str, Any] | None] | dict[str, Any] | None"
]
"""Makes the ``respond`` args (``data`` or ``error``) for a request frame;
``None`` leaves the request unanswered."""


class WireTab:
    """One protocol connection: ``call`` an op, ``answer`` requests it is sent."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]
    ) -> None:
        self.ws = ws
        self.hello = hello
        self.handle: str = hello["session"]
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """Other server frames (pushes, ``lock_lost``...), in order."""
        """Error frames with a null id (frames refused before their id was read)."""
        self.responses: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.answer: Answer | None = None
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                op = frame.get("op")
                if op == "error" and frame.get("id") is None:
                    self.errors.put_nowait(frame)
                elif op in ("result", "error"):
                    waiter = self._waiting.get(frame.get("id"))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                elif op == "request":
                    if self.answer is None:
                        self.requests.put_nowait(frame)
                    else:
                        task = asyncio.get_running_loop().create_task(
                            self._answer(frame)
                        )
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                elif op == "response":
                    self.responses.setdefault(
                        frame["request"], asyncio.Queue()
                    ).put_nowait(frame)
                else:
                    self.frames.put_nowait(frame)
        finally:
            self.closed.set()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("closed"))

    async def _answer(self, frame: dict[str, Any]) -> None:
        assert self.answer is not None
        args = self.answer(frame)
        if asyncio.iscoroutine(args) or isinstance(args, asyncio.Future):
            args = await args
        if args is not None:
            assert isinstance(args, Mapping)
            await self.send_answer(frame["conversation"], **args)

    async def send_answer(self, conversation: int, **args: Any) -> None:
        """Answer a request frame (``data`` or ``error``): a frame with no id."""
        await self.ws.send_str(
            json.dumps({"op": "answer", "conversation": conversation, **args})
        )

    async def send(self, op: str, **args: Any) -> int:
        """Send a request frame; return its id (the reply is :meth:`reply`)."""
        request_id = next(self._ids)
        self._waiting[request_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps({"op": op, "id": request_id, **args}))
        return request_id

    async def reply(self, request_id: int, wait: float = TIMEOUT) -> dict[str, Any]:
        """The ``result`` or ``error`` frame of a request sent with :meth:`send`."""
        try:
            return await asyncio.wait_for(self._waiting[request_id], wait)
        finally:
            self._waiting.pop(request_id, None)

    async def call(self, op: str, wait: float = TIMEOUT, **args: Any) -> dict[str, Any]:
        """Send an op; return its ``result`` or ``error`` frame (within ``wait`` s)."""
        waiter_id = await self.send(op, **args)
        return await self.reply(waiter_id, wait)

    async def ok(self, op: str, **args: Any) -> Any:
        """Send an op; return its result's data (fail on an error frame)."""
        frame = await self.call(op, **args)
        assert frame["op"] == "result", frame
        return frame["data"]

    async def next_request(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next request frame this tab was sent (when it does not answer itself)."""
        return await asyncio.wait_for(self.requests.get(), timeout)

    async def filter_frames(
        self, request_id: int, timeout: float = TIMEOUT
    ) -> AsyncIterator[dict[str, Any]]:
        """The ``response`` frames of a filter send, up to its ``done`` frame."""
        queue = self.responses.setdefault(request_id, asyncio.Queue())
        while True:
            frame = await asyncio.wait_for(queue.get(), timeout)
            yield frame
            if frame.get("done"):
                return

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._reader
        for task in list(self._tasks):
            task.cancel()


async def open_tab(
    session: aiohttp.ClientSession | Any, url: Any, **kwargs: Any
) -> WireTab:
    """Open a protocol connection with ``session`` (a TestClient or a ClientSession)."""
    ws = await session.ws_connect(url, protocols=(SUBPROTOCOL,), **kwargs)
    hello = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    assert hello["op"] == "hello", hello
    return WireTab(ws, hello)


def echo(frame: dict[str, Any]) -> dict[str, Any]:
    """Answer a request with its own data."""
    return {"data": frame["data"]}


def allow_all(request: Any, action: Any) -> bool:
    """A policy that allows every action (tests of what the policy allows)."""
    return True
