"""A TCP proxy on 127.0.0.1 that can cut connections silently, as a NAT does.

A connection cut this way stays open at both ends: nothing is reset or
closed, the bytes are only no longer carried. That is what a node sees when
a load balancer or firewall forgets a connection that was idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    subscriber: bool = False
    cut: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class SilentCutProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; cuts subscribers on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.subscribed_at: list[float] = []
        """When (``time.monotonic()``) each connection first subscribed."""

    @property
    def url(self) -> str:
        """A Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut_subscribers(self) -> int:
        """Stop carrying the bytes of every connection that subscribed so far.

        Returns how many were cut. Connections made later are carried.
        """
        cut = [link for link in self._links if link.subscriber and not link.cut]
        for link in cut:
            link.cut = True
        return len(cut)

    def cut_all(self) -> int:
        """Stop carrying the bytes of every connection so far; return how many."""
        cut = [link for link in self._links if not link.cut]
        for link in cut:
            link.cut = True
        return len(cut)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pipe(link, reader, up_writer, upward=True)),
            asyncio.ensure_future(self._pipe(link, up_reader, writer, upward=False)),
        ]

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upward: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upward and not link.subscriber and b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                    self.subscribed_at.append(time.monotonic())
                if not link.cut:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        if not link.cut:  # an honest end is passed on; a cut one stays silent
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
            for end in (link.client, link.upstream):
                end.close()
        for link in self._links:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()
