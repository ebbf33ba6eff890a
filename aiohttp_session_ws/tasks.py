"""Background tasks with an owner: named, logged when they fail, ended on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class TaskOwner:
    """Holds background tasks so none is lost, and ends them all on shutdown.

    A task that fails is logged with its traceback on ``logger``; a task that is
    still running when :meth:`aclose` times out is cancelled and awaited.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """Start ``coro`` as a task named ``name`` and keep it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._logger.error(
                "Background task %r failed", task.get_name(), exc_info=exc
            )

    async def aclose(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the tasks, then cancel what is left."""
        pending = set(self._tasks)
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=timeout)
        for task in still_running:
            self._logger.warning(
                "Cancelling background task %r at shutdown", task.get_name()
            )
            task.cancel()
        if still_running:
            await asyncio.wait(still_running)
