"""The responses of a request sent to a session filter, as they arrive."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import MessagingError

logger = logging.getLogger("aiohttp_session_ws.messaging")


@dataclass(frozen=True, slots=True)
class FilterResponse:
    """One session's answer to a filter send: its value, or its error."""

    session: str
    """The public handle of the session that answered."""
    value: Any = None
    """The response (``None`` when :attr:`error` is set)."""
    error: MessagingError | None = None
    """Why that session's handler failed (``rejected``, ``session_closed``...)."""

    @property
    def ok(self) -> bool:
        """Whether the session answered with a value."""
        return self.error is None

    def result(self) -> Any:
        """The value; raises :attr:`error` if the handler failed."""
        if self.error is not None:
            raise self.error
        return self.value


ResponseCallback = Callable[[FilterResponse], "Awaitable[None] | None"]
"""Called with each response of a filter send (sync or async)."""


class FilterResponses:
    """The responses of one filter send: how many to expect, then each one.

    Iterate it (``async for response in responses``) to get them as they
    arrive; the iteration ends once every expected session answered or the
    timeout passed. :attr:`unanswered` then holds the sessions that did not
    answer. Responses are keyed by the request, so concurrent sends with the
    same filter never mix.
    """

    def __init__(
        self, expected: int, on_response: ResponseCallback | None = None
    ) -> None:
        self.expected = expected
        """How many sessions matched: the number of responses to expect."""
        self.received = 0
        """How many responses came so far."""
        self._on_response = on_response
        self._buffer: collections.deque[FilterResponse] = collections.deque()
        self._changed = asyncio.Event()
        self._unanswered: frozenset[str] | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        if expected == 0:
            self._unanswered = frozenset()

    @property
    def done(self) -> bool:
        """Whether every response came, or the timeout passed."""
        return self._unanswered is not None

    @property
    def unanswered(self) -> frozenset[str]:
        """The public handles of the sessions that did not answer in time.

        :raises RuntimeError: the send is not finished yet (see :meth:`wait`).
        """
        if self._unanswered is None:
            raise RuntimeError("the filter send is not finished: await wait() first")
        return self._unanswered

    async def wait(self) -> frozenset[str]:
        """Wait until the send is finished; return :attr:`unanswered`.

        The responses stay available to iterate.
        """
        while self._unanswered is None:
            self._changed.clear()
            await self._changed.wait()
        if self._callbacks:
            await asyncio.wait(self._callbacks)
        return self._unanswered

    def _add(self, response: FilterResponse) -> None:
        """Take one response (the sender's side feeds them)."""
        if self._unanswered is not None:
            return
        self.received += 1
        self._buffer.append(response)
        self._changed.set()
        if self._on_response is not None:
            self._call(response)

    def _finish(self, unanswered: frozenset[str]) -> None:
        """End the send: every response came, or the timeout passed."""
        if self._unanswered is None:
            self._unanswered = unanswered
            self._changed.set()

    def _call(self, response: FilterResponse) -> None:
        assert self._on_response is not None
        try:
            result = self._on_response(response)
        except Exception:
            logger.exception("A filter response callback failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(_logged(result))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    def __aiter__(self) -> FilterResponses:
        return self

    async def __anext__(self) -> FilterResponse:
        while not self._buffer:
            if self._unanswered is not None:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        return self._buffer.popleft()

    def __repr__(self) -> str:
        state = "done" if self.done else "waiting"
        return f"<FilterResponses {self.received}/{self.expected} received, {state}>"


async def _logged(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("A filter response callback failed")
