"""TaskOwner: tasks are held, failures logged, stragglers cancelled on close."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from aiohttp_session_ws.tasks import TaskOwner

logger = logging.getLogger("tests.tasks")


async def test_a_failing_task_is_logged_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = TaskOwner(logger)

    async def fail() -> None:
        raise ValueError("lost in 1.1.1")

    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        task = owner.spawn(fail(), name="failing")
        assert len(owner) == 1
        await owner.aclose(timeout=5)
    assert task.done()
    assert len(owner) == 0
    (record,) = caplog.records
    assert "'failing' failed" in record.getMessage()
    assert record.exc_info is not None
    assert "lost in 1.1.1" in str(record.exc_info[1])


async def test_finished_tasks_are_awaited_and_forgotten() -> None:
    owner = TaskOwner(logger)
    gate = asyncio.Event()

    async def wait_for_gate() -> str:
        await gate.wait()
        return "done"

    task = owner.spawn(wait_for_gate(), name="gated")
    closing = asyncio.create_task(owner.aclose(timeout=5))
    gate.set()
    await asyncio.wait_for(closing, 5)
    assert task.result() == "done"
    assert len(owner) == 0


async def test_stragglers_are_cancelled_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = TaskOwner(logger)
    never = asyncio.Event()
    task = owner.spawn(never.wait(), name="stuck")
    with caplog.at_level(logging.WARNING, logger="tests.tasks"):
        await asyncio.wait_for(owner.aclose(timeout=0.05), 5)
    assert task.cancelled()
    assert "Cancelling background task 'stuck'" in caplog.text
    assert len(owner) == 0


async def test_closing_an_empty_owner_returns_at_once() -> None:
    await asyncio.wait_for(TaskOwner(logger).aclose(timeout=60), 1)


async def test_a_closed_owner_refuses_new_tasks() -> None:
    owner = TaskOwner(logger)
    await owner.aclose(timeout=5)
    assert owner.closed

    async def child() -> None:
        raise AssertionError("never runs")

    coro = child()
    with pytest.raises(RuntimeError, match=r"'child'.*shut down"):
        owner.spawn(coro, name="child")
    # closed unrun, so no "never awaited" warning
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert len(owner) == 0
