"""The load client's side of a websocket, for the three implementations.

Ours and raw aiohttp speak plain websocket text frames. For python-socketio the
client speaks just enough Engine.IO 4 / Socket.IO 5 over a websocket: the open
packet, the namespace connect, pings, ``42[...]`` events, and the server's
namespace disconnect ``41``, on which it closes the socket as the Socket.IO
client does. Our protocol connections (``/live``, subprotocol
``aiohttp-session-ws.v1``) start with the server's ``hello``; of their frames
only pushes are counted. It counts what arrives and notes when the server
closed the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .push_common import PROTOCOL_PATH, SUBPROTOCOL, is_push

TIMEOUT = 30.0


@dataclass(frozen=True)
class Protocol:
    """How to reach and speak to one implementation's websocket."""

    path: str
    engineio: bool
    framed: bool = False
    """Our protocol: offer its subprotocol, wait for hello, count only pushes."""


PROTOCOLS = {
    "ours": Protocol("/ws", engineio=False),
    "raw": Protocol("/ws", engineio=False),
    "socketio": Protocol("/socket.io/?EIO=4&transport=websocket", engineio=True),
    "bare": Protocol("/ws", engineio=False),
}
LIVE = Protocol(PROTOCOL_PATH, engineio=False, framed=True)
"""Our protocol connections, for the push scenarios."""


@dataclass
class Tally:
    """Counts delivered messages for a whole fan-out; done once all are in."""

    expected: int = 0
    delivered: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_at: float = 0.0

    def reset(self, expected: int) -> None:
        """Start counting towards ``expected``."""
        self.expected = expected
        self.delivered = 0
        self.done.clear()

    def add(self) -> None:
        """One message arrived."""
        self.delivered += 1
        if self.delivered >= self.expected:
            self.last_at = time.perf_counter()
            self.done.set()


class Socket:
    """One client websocket, read by its own task until the server closes it."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        engineio: bool,
        tally: Tally,
        framed: bool = False,
    ) -> None:
        self.ws = ws
        self.engineio = engineio
        self.framed = framed
        self.tally = tally
        self.closed = asyncio.Event()
        self.closed_at = 0.0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                if self.engineio:
                    if data == "2":  # ping
                        await self.ws.send_str("3")
                        continue
                    if data.startswith("41"):
                        # the server disconnected the namespace; like the
                        # Socket.IO client, count it closed and end the transport
                        self._mark_closed()
                        await self.ws.close()
                        break
                    if not data.startswith("42"):
                        continue
                elif self.framed and not is_push(data):
                    continue
                self.tally.add()
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        if not self.closed.is_set():
            self.closed_at = time.perf_counter()
            self.closed.set()

    async def close(self) -> None:
        """Close from the client's side and wait for the reader to end."""
        await self.ws.close()
        await asyncio.wait_for(self.reader, TIMEOUT)


class LoadClient:
    """Logs sessions in and opens websockets against one server."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        impl: str,
        base_url: str,
        protocol: Protocol | None = None,
    ) -> None:
        self.http = http
        self.impl = impl
        self.protocol = PROTOCOLS[impl] if protocol is None else protocol
        self.base_url = base_url

    async def login(self) -> tuple[str, str]:
        """A new session: its id and the Cookie header that carries it."""
        async with self.http.post(f"{self.base_url}/login") as response:
            response.raise_for_status()
            body = await response.json()
            cookie = "; ".join(f"{k}={m.value}" for k, m in response.cookies.items())
        return body["session"], cookie

    async def open(
        self, cookie: str, tally: Tally, base_url: str | None = None
    ) -> Socket:
        """Open a websocket of the session whose cookie is given."""
        url = (base_url or self.base_url) + self.protocol.path
        protocols = (SUBPROTOCOL,) if self.protocol.framed else ()
        ws = await self.http.ws_connect(
            url, headers={"Cookie": cookie}, protocols=protocols
        )
        if self.protocol.engineio:
            await _engineio_handshake(ws)
        if self.protocol.framed:
            await _hello(ws)
        return Socket(ws, self.protocol.engineio, tally, self.protocol.framed)

    async def get(self, path: str, base_url: str | None = None) -> dict[str, Any]:
        """GET a control route; return its JSON."""
        async with self.http.get((base_url or self.base_url) + path) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def post(
        self, path: str, cookie: str = "", base_url: str | None = None
    ) -> dict[str, Any]:
        """POST to a control route; return its JSON."""
        url = (base_url or self.base_url) + path
        async with self.http.post(url, headers={"Cookie": cookie}) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read our protocol's first frame, which must be the server's hello."""
    if ws.protocol != SUBPROTOCOL:
        raise RuntimeError(f"the server chose subprotocol {ws.protocol!r}")
    hello = json.loads(await asyncio.wait_for(ws.receive_str(), TIMEOUT))
    if not isinstance(hello, dict) or hello.get("op") != "hello":
        raise RuntimeError(f"hello expected first, got {hello!r}")


async def _engineio_handshake(ws: aiohttp.ClientWebSocketResponse) -> None:
    opened = await asyncio.wait_for(ws.receive_str(), TIMEOUT)
    if not opened.startswith("0"):
        raise RuntimeError(f"Engine.IO open packet expected, got {opened!r}")
    await ws.send_str("40")
    while True:
        packet = await asyncio.wait_for(ws.receive_str(), TIMEOUT)
        if packet.startswith("40"):
            return
        if packet.startswith("44"):
            raise RuntimeError(f"Socket.IO refused the connection: {packet!r}")
        if packet == "2":
            await ws.send_str("3")


def new_http_session() -> aiohttp.ClientSession:
    """One client session for all sockets: no pool limit, no shared cookie jar."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=120),
    )
