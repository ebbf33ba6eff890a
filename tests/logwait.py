"""Await a log record: the event that tells a test a background step happened."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class LogWaiter(logging.Handler):
    """Counts the records whose message contains ``text``; lets a test await them."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep a matching record and wake the waiters."""
        if self.text in record.getMessage():
            self.records.append(record)
            self._changed.set()

    async def wait(
        self, count: int = 1, timeout: float = 5.0
    ) -> list[logging.LogRecord]:
        """Wait until ``count`` matching records came; fail after ``timeout`` s."""

        async def enough() -> None:
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.records


@contextmanager
def watch_log(name: str, text: str) -> Iterator[LogWaiter]:
    """Attach a :class:`LogWaiter` for ``text`` to logger ``name`` for the block."""
    logger = logging.getLogger(name)
    waiter = LogWaiter(text)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(waiter)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(level)
