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
        self.closed = False
        """True once :meth:`aclose` has begun: no new task is taken."""

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
        """Start ``coro`` as a task named ``name`` and keep it until it ends.

        :raises RuntimeError: the owner is closed (``coro`` is closed unrun).
        """
        if self.closed:
            coro.close()
            raise RuntimeError(f"Cannot start {name!r}: its owner has shut down")
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
        """Take no new task; wait up to ``timeout`` s for the rest, then cancel them."""
        self.closed = True
        if self._tasks:
            _, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in still_running:
                self._logger.warning(
                    "Cancelling background task %r at shutdown", task.get_name()
                )
                task.cancel()
        while self._tasks:  # cancelled tasks, and any a task started meanwhile
            await asyncio.wait(set(self._tasks))
