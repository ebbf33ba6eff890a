"""The load client's connections for the messaging scenarios.

Each kind answers the requests it is sent by echoing their data, and can send
requests and wait for their answers:

- :class:`OursWire`: our protocol at ``/live``, spoken directly (``add_handler``,
  ``send_to_path``, ``send_to_session``, ``send_to_filter``; a ``request``
  frame is answered with an ``answer`` frame);
- :class:`OursPython`: the package's Python client, ``session.messaging``;
- :class:`RawRelay` and :class:`RawEcho`: the floor's ``/relay`` and ``/echo``;
- :class:`SocketIOClient`: just enough Engine.IO 4 / Socket.IO 5: events with
  acks both ways, and the ``freq``/``fresp`` events of the filter send.

Every wait is bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from .client import TIMEOUT
from .push_common import SUBPROTOCOL

LIVE_PATH = "/live"
RELAY_PATH = "/relay"
ECHO_PATH = "/echo"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"


class WireError(Exception):
    """An ``error`` frame answered a request: its code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FanRound:
    """The answers of one filter send (or of its stand-in), as they arrive."""

    def __init__(self, expected: int, done_frame: bool = False) -> None:
        self.expected = expected
        """Answers to wait for (ours: from the ``send_to_filter`` result)."""
        self.received = 0
        self.errors: list[Any] = []
        self.last_at = 0.0
        """When the last expected answer arrived (``perf_counter``)."""
        self.done_at = 0.0
        """When the send was over: ours, its ``done`` frame; others, the last answer."""
        self.unanswered: list[Any] = []
        self.complete = asyncio.Event()
        self._wants_done_frame = done_frame

    def add(self, error: Any = None) -> None:
        """One answer arrived (a value, or ``error``)."""
        self.received += 1
        if error is not None:
            self.errors.append(error)
        if self.received == self.expected:
            self.last_at = time.perf_counter()
            if not self._wants_done_frame:
                self.done_at = self.last_at
                self.complete.set()

    def finish(self, unanswered: list[Any]) -> None:
        """Ours: the ``done`` frame came."""
        self.done_at = time.perf_counter()
        self.unanswered = unanswered
        if not self.last_at:
            self.last_at = self.done_at
        self.complete.set()


def _echo(data: Any, context: Any = None) -> Any:
    return data


class _Reader:
    """A websocket, a reader task, and the futures of the requests in flight."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.rounds: dict[int, FanRound] = {}
        self.ids = itertools.count(1)
        self.failures: list[str] = []
        """Unexpected frames (errors of a respond, unknown requests): for the report."""
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self.frame(msg.data)
        finally:
            lost = ConnectionError("the connection ended")
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(lost)

    async def frame(self, text: str) -> None:  # pragma: no cover (overridden)
        raise NotImplementedError

    def expect(self) -> tuple[int, asyncio.Future[Any]]:
        """A new request id and the future of its answer."""
        number = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        return number, future

    def answer(self, number: object, value: Any = None, error: Any = None) -> bool:
        """Settle the future of request ``number``; False if none waits."""
        future = self.pending.pop(number, None) if isinstance(number, int) else None
        if future is None or future.done():
            return False
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
        return True

    async def wait(self, future: asyncio.Future[Any]) -> Any:
        """The answer of ``future``, within the timeout."""
        return await asyncio.wait_for(future, TIMEOUT)

    async def close(self) -> None:
        """Close from the client's side; wait (bounded) for the reader."""
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, TIMEOUT)
        except (TimeoutError, ConnectionError):
            self.reader.cancel()


class OursWire(_Reader):
    """A protocol connection spoken directly: the messaging ops of the spec."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]):
        super().__init__(ws)
        self.handle: str = hello["session"]
        """The session's public handle (``$SessionId``)."""
        self.requests = 0

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, base_url: str, cookie: str
    ) -> OursWire:
        """Open ``/live`` with the session cookie; read the hello."""
        ws = await http.ws_connect(
            base_url + LIVE_PATH, headers={"Cookie": cookie}, protocols=(SUBPROTOCOL,)
        )
        if ws.protocol != SUBPROTOCOL:
            await ws.close()
            raise RuntimeError(f"the server chose subprotocol {ws.protocol!r}")
        hello = json.loads(await asyncio.wait_for(ws.receive_str(), TIMEOUT))
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            await ws.close()
            raise RuntimeError(f"hello expected first, got {hello!r}")
        return cls(ws, hello)

    async def frame(self, text: str) -> None:
        """Answer requests, settle replies, feed filter rounds."""
        frame = json.loads(text)
        op = frame.get("op")
        if op == "request":
            self.requests += 1
            answer = {
                "op": "answer",
                "conversation": frame["conversation"],
                "data": frame.get("data"),
            }
            await self.ws.send_str(json.dumps(answer))
        elif op == "result":
            data = frame.get("data")
            fan = self.rounds.get(frame.get("id"))
            if fan is not None and isinstance(data, dict):
                fan.expected = int(data.get("expected", 0))  # before any response
            self.answer(frame.get("id"), data)
        elif op == "error":
            error = WireError(str(frame.get("code")), str(frame.get("message")))
            if not self.answer(frame.get("id"), error=error):
                self.failures.append(str(error))  # an answer refused
        elif op == "response":
            found = self.rounds.get(frame.get("request"))
            if found is None:
                self.failures.append(f"response of no send: {text[:80]}")
            elif frame.get("done"):
                found.finish(list(frame.get("unanswered") or ()))
            else:
                found.add(frame.get("error"))

    async def call(self, op: str, **args: Any) -> Any:
        """Send op ``op``; return its result's ``data``; raise :class:`WireError`."""
        number, future = self.expect()
        await self.ws.send_str(json.dumps({"op": op, "id": number, **args}))
        return await self.wait(future)

    async def add_handler(self, path: str, addressed: bool) -> None:
        """Register this connection for ``path`` (``add_handler``)."""
        await self.call("add_handler", path=path, addressed=addressed)

    async def send_to_path(self, path: str, data: Any) -> Any:
        """``send_to_path``: the echo of a handler of ``path``."""
        return await self.call("send_to_path", path=path, data=data)

    async def send_to_session(self, path: str, handle: str, data: Any) -> Any:
        """``send_to_session``: the echo of the session ``handle``."""
        return await self.call("send_to_session", path=path, session=handle, data=data)

    async def send_to_filter(self, text: str, path: str, data: Any) -> FanRound:
        """Start a filter send; the round fills as responses arrive."""
        number, future = self.expect()
        fan = self.rounds[number] = FanRound(0, done_frame=True)
        frame = {"op": "send_to_filter", "id": number, "filter": text, "path": path}
        await self.ws.send_str(json.dumps({**frame, "data": data}))
        try:
            await self.wait(future)  # the reader took its "expected"
        except BaseException:
            self.rounds.pop(number, None)
            raise
        return fan

    def forget(self, fan: FanRound) -> None:
        """Stop routing responses to ``fan``."""
        for number, found in list(self.rounds.items()):
            if found is fan:
                del self.rounds[number]


class OursPython:
    """A session of the package's Python client, with ``session.messaging``."""

    def __init__(self, session: Any, messaging: Any) -> None:
        self.session = session
        self.messaging = messaging
        self.handle: str = session.session_id
        self.registrations: list[Any] = []

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, base_url: str, cookie: str
    ) -> OursPython:
        """Connect the Python client with the session cookie."""
        from aiohttp_session_ws.client import connect

        session = await connect(
            base_url + LIVE_PATH, session=http, headers={"Cookie": cookie}
        )
        messaging = getattr(session, "messaging", None)
        if messaging is None:
            await session.close()
            raise MissingClientError("the Python client has no session.messaging yet")
        return cls(session, messaging)

    async def add_handlers(self, path: str) -> None:
        """Echo handlers for ``path``: sent to the path, and to this session."""
        self.registrations.append(await self.messaging.add_request_handler(path, _echo))
        self.registrations.append(
            await self.messaging.add_stream_handler(path, _echo, addressed=True)
        )

    async def send_to_path(self, path: str, data: Any) -> Any:
        """``send_request_to_path``."""
        return await self.messaging.send_request_to_path(path, data)

    async def send_to_session(self, path: str, handle: str, data: Any) -> Any:
        """``send_request_to_session``."""
        return await self.messaging.send_request_to_session(path, handle, data)

    async def close(self) -> None:
        """Close the session (bounded)."""
        await asyncio.wait_for(self.session.close(), TIMEOUT)


class MissingClientError(RuntimeError):
    """The Python client cannot do messaging yet."""


class RawRelay(_Reader):
    """A connection of the floor's ``/relay``: requests by address, fan-outs."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, address: str) -> None:
        super().__init__(ws)
        self.address = address
        self.joined = asyncio.Event()

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base_url: str) -> RawRelay:
        """Open ``/relay``; read the hello with this connection's address."""
        ws = await http.ws_connect(base_url + RELAY_PATH)
        hello = json.loads(await asyncio.wait_for(ws.receive_str(), TIMEOUT))
        return cls(ws, hello["address"])

    async def frame(self, text: str) -> None:
        """Answer relayed requests; settle answers and fan rounds."""
        frame = json.loads(text)
        op = frame.get("op")
        if op == "req":
            answer = {
                "op": "resp",
                "to": frame["from"],
                "id": frame["id"],
                "data": frame.get("data"),
            }
            await self.ws.send_str(json.dumps(answer))
        elif op == "resp":
            fan = self.rounds.get(frame["id"])
            if fan is not None:
                fan.add()
            else:
                self.answer(frame["id"], frame.get("data"))
        elif op == "joined":
            self.joined.set()

    async def request(self, to: str, data: Any) -> Any:
        """A request to the connection at ``to``; return its answer."""
        number, future = self.expect()
        frame = {"op": "req", "to": to, "id": number, "data": data}
        await self.ws.send_str(json.dumps(frame))
        return await self.wait(future)

    async def join(self) -> None:
        """Join the fan-out (bounded wait for ``joined``)."""
        await self.ws.send_str(json.dumps({"op": "join"}))
        await asyncio.wait_for(self.joined.wait(), TIMEOUT)

    async def fan(self, expected: int, data: Any) -> FanRound:
        """A fan-out to every joined connection; ``expected`` answers."""
        number = next(self.ids)
        fan = self.rounds[number] = FanRound(expected)
        await self.ws.send_str(json.dumps({"op": "fan", "id": number, "data": data}))
        return fan

    def forget(self, fan: FanRound) -> None:
        """Stop counting answers for ``fan``."""
        for number, found in list(self.rounds.items()):
            if found is fan:
                del self.rounds[number]


class RawEcho(_Reader):
    """A connection of the floor's ``/echo``: one hop, a JSON round trip."""

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base_url: str) -> RawEcho:
        """Open ``/echo``."""
        return cls(await http.ws_connect(base_url + ECHO_PATH))

    async def frame(self, text: str) -> None:
        """Settle the request the echo answers."""
        frame = json.loads(text)
        self.answer(frame["id"], frame.get("data"))

    async def request(self, data: Any) -> Any:
        """Send ``data``; return its echo."""
        number, future = self.expect()
        await self.ws.send_str(json.dumps({"id": number, "data": data}))
        return await self.wait(future)


class SocketIOClient(_Reader):
    """Engine.IO 4 / Socket.IO 5, default namespace: events and acks."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        super().__init__(ws)
        self.sid = sid
        self.handlers: dict[str, Callable[[Any], Any]] = {}

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base_url: str) -> SocketIOClient:
        """Open the Engine.IO websocket and connect the default namespace."""
        ws = await http.ws_connect(base_url + SOCKETIO_PATH)
        opened = await asyncio.wait_for(ws.receive_str(), TIMEOUT)
        if not opened.startswith("0"):
            raise RuntimeError(f"Engine.IO open packet expected, got {opened!r}")
        await ws.send_str("40")
        while True:
            packet = await asyncio.wait_for(ws.receive_str(), TIMEOUT)
            if packet.startswith("40"):
                return cls(ws, json.loads(packet[2:])["sid"])
            if packet.startswith("44"):
                raise RuntimeError(f"Socket.IO refused the connection: {packet!r}")
            if packet == "2":
                await ws.send_str("3")

    @staticmethod
    def _split(body: str) -> tuple[int | None, list[Any]]:
        """A packet's ack id (digits before the JSON array) and its array."""
        start = body.find("[")
        digits = body[:start]
        return (int(digits) if digits else None), json.loads(body[start:])

    async def frame(self, text: str) -> None:
        """Pings, acks, ``req`` (acked with its data), ``freq``, ``fresp``."""
        if text == "2":
            await self.ws.send_str("3")
            return
        if text.startswith("43"):
            number, args = self._split(text[2:])
            self.answer(number, args[0] if args else None)
            return
        if not text.startswith("42"):
            return
        number, args = self._split(text[2:])
        event = args[0]
        data: Any = args[1] if len(args) > 1 else None
        if event == "req" and number is not None:
            await self.ws.send_str(f"43{number}" + json.dumps([data]))
        elif event == "freq":
            answer = {"rid": data["rid"], "to": data["from"], "data": data.get("data")}
            await self.emit("fresp", answer)
        elif event == "fresp":
            fan = self.rounds.get(data["rid"])
            if fan is not None:
                fan.add()

    async def emit(self, event: str, data: Any) -> None:
        """An event without an ack."""
        await self.ws.send_str("42" + json.dumps([event, data]))

    async def emit_ack(self, event: str, data: Any) -> Any:
        """An event with an ack; return the ack's first argument."""
        number, future = self.expect()
        await self.ws.send_str(f"42{number}" + json.dumps([event, data]))
        return await self.wait(future)

    async def fan(self, expected: int, data: Any) -> FanRound:
        """Emit ``fan``; ``expected`` ``fresp`` answers complete it."""
        number = next(self.ids)
        fan = self.rounds[number] = FanRound(expected)
        await self.emit("fan", {"rid": number, "data": data})
        return fan

    def forget(self, fan: FanRound) -> None:
        """Stop counting answers for ``fan``."""
        for number, found in list(self.rounds.items()):
            if found is fan:
                del self.rounds[number]
