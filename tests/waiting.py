"""Waiting, bounded, for a state that no event announces."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

TIMEOUT = 5.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = TIMEOUT
) -> None:
    """Wait until ``condition()`` (sync or async) holds, for at most ``timeout`` s.

    Only for states that nothing signals (a store's queue length, a table
    another node keeps): where an event can be awaited, await it instead.
    """
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.005)  # nothing to await: look again soon
