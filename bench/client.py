"""The load client's side of a websocket, for the three implementations.

Ours and raw aiohttp speak plain websocket text frames. For python-socketio the
client speaks just enough Engine.IO 4 / Socket.IO 5 over a websocket: the open
packet, the namespace connect, pings, ``42[...]`` events, and the server's
namespace disconnect ``41``, on which it closes the socket as the Socket.IO
client does. It counts what
arrives and notes when the server closed the socket.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TIMEOUT = 30.0


@dataclass(frozen=True)
class Protocol:
    """How to reach and speak to one implementation's websocket."""

    path: str
    engineio: bool


PROTOCOLS = {
    "ours": Protocol("/ws", engineio=False),
    "raw": Protocol("/ws", engineio=False),
    "socketio": Protocol("/socket.io/?EIO=4&transport=websocket", engineio=True),
}


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
        self, ws: aiohttp.ClientWebSocketResponse, engineio: bool, tally: Tally
    ) -> None:
        self.ws = ws
        self.engineio = engineio
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

    def __init__(self, http: aiohttp.ClientSession, impl: str, base_url: str) -> None:
        self.http = http
        self.impl = impl
        self.protocol = PROTOCOLS[impl]
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
        ws = await self.http.ws_connect(url, headers={"Cookie": cookie})
        if self.protocol.engineio:
            await _engineio_handshake(ws)
        return Socket(ws, self.protocol.engineio, tally)

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
