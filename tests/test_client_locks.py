"""The Python client's session locks (``session.lock``), against the real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SessionWSRegistry
from aiohttp_session_ws.client import (
    ClientSessionLock,
    ConnectionLostError,
    LockTimeoutError,
    Session,
    SessionLockScope,
    SessionState,
    connect,
)
from aiohttp_session_ws.locks import LockTimeoutError as ServerLockTimeoutError
from aiohttp_session_ws.locks_client import (
    CONNECTION_LOST,
    LOST_WHILE_DISCONNECTED,
    SESSION_CLOSED,
)
from aiohttp_session_ws.protocol import ErrorCode, ProtocolError

from .apps import TIMEOUT, Client, build_app, registry_of

Opener = Callable[..., Awaitable[Session]]
CONNECTION = SessionLockScope.UNLOCK_ON_CONNECTION_LOSS
SESSION = SessionLockScope.UNLOCK_ON_SESSION_LOSS

GATE: web.AppKey[asyncio.Event] = web.AppKey("gate")
"""/gated serves upgrades only while this is set."""


async def gated(request: web.Request) -> web.StreamResponse:
    """The endpoint, once the app's gate is open."""
    from aiohttp_session_ws import session_ws_endpoint

    await request.app[GATE].wait()
    return await session_ws_endpoint(request)


@pytest.fixture
async def server(aiohttp_client: AiohttpClient) -> Client:
    registry = SessionWSRegistry(authorize=lambda r, a: True)
    app = build_app(registry, routes=[web.get("/gated", gated)])
    app[GATE] = asyncio.Event()
    app[GATE].set()
    return await aiohttp_client(app)


@pytest.fixture
async def open_session(
    aiohttp_client: AiohttpClient, server: Client
) -> AsyncIterator[Opener]:
    """Open a client session of a new browser (its own cookie jar) of ``server``."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_(path: str = "/live", **options: Any) -> Session:
            browser = await aiohttp_client(server.server)
            session = await connect(
                browser.make_url(path), session=browser.session, **options
            )
            stack.push_async_callback(session.close)
            return session

        yield open_


def owned(lock: ClientSessionLock) -> bool:
    """``lock.is_owned``, read anew (mypy would keep what it read before)."""
    return lock.is_owned


def ws_id_of(server: Client, session: Session) -> Any:
    """The server's session ws id of the client session."""
    (peer,) = [
        p for p in registry_of(server).peers if p.connection_id == session.connection_id
    ]
    return peer.session_ws_id


async def info_when(session: Session, name: str, **want: Any) -> Any:
    """Wait (bounded) until ``lock_info(name)`` has the wanted fields; return it."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            info = await session.lock_info(name)
            if all(getattr(info, k) == v for k, v in want.items()):
                return info
            await asyncio.sleep(0)


async def test_grant_unlock_and_async_with(open_session: Opener) -> None:
    session = await open_session()
    lock = await session.lock("docs/1")
    assert isinstance(lock, ClientSessionLock)
    assert (lock.name, lock.owner, lock.scope) == (
        "docs/1",
        session.session_id,
        SESSION,
    )
    assert lock.sequence > 0
    assert owned(lock)
    assert lock.lost_reason is None
    assert "owned" in repr(lock)
    info = await session.lock_info("docs/1")
    assert (info.name, info.owner, info.sequence, info.scope, info.waiting) == (
        "docs/1",
        session.session_id,
        lock.sequence,
        SESSION,
        0,
    )
    assert await session.lock("docs/1") is lock  # repeated: the same object
    assert await lock.unlock() is True
    assert not owned(lock)
    assert lock.lost_reason is None
    assert await lock.unlock() is False
    assert (await session.lock_info("docs/1")).owner is None
    async with await session.lock("docs/1") as again:
        assert again is not lock
        assert again != lock
        assert again.sequence > lock.sequence
        assert owned(again)
    assert not owned(again)
    assert (await session.lock_info("docs/1")).owner is None


async def test_repeated_lock_with_a_weaker_scope(open_session: Opener) -> None:
    session = await open_session()
    lock = await session.lock("w")
    same = await session.lock("w", CONNECTION)
    assert same is lock
    assert lock.scope is CONNECTION
    assert (await session.lock_info("w")).scope is CONNECTION
    await lock.unlock()


async def test_first_come_first_served_between_sessions(open_session: Opener) -> None:
    holder, first, second = [await open_session() for _ in range(3)]
    held = await holder.lock("job")
    one = asyncio.create_task(first.lock("job"))
    await info_when(holder, "job", waiting=1)
    two = asyncio.create_task(second.lock("job"))
    await info_when(holder, "job", waiting=2)
    assert await held.unlock() is True
    got = await asyncio.wait_for(one, TIMEOUT)
    assert got.owner == first.session_id
    assert got.sequence > held.sequence
    assert not two.done()
    info = await info_when(holder, "job", waiting=1)
    assert info.owner == first.session_id
    await got.unlock()
    last = await asyncio.wait_for(two, TIMEOUT)
    assert last.owner == second.session_id
    assert last.sequence > got.sequence
    await last.unlock()


async def test_a_cancelled_wait_leaves_the_queue(open_session: Opener) -> None:
    holder, quitter = await open_session(), await open_session()
    held = await holder.lock("q")
    waiting = asyncio.create_task(quitter.lock("q"))
    await info_when(holder, "q", waiting=1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await info_when(holder, "q", waiting=0)  # the cancel frame withdrew it
    await held.unlock()
    assert (await holder.lock_info("q")).owner is None  # nobody took it
    assert quitter._locks.held == []
    assert await quitter.ping_server() >= 0  # the connection is fine


@pytest.mark.parametrize("later", [False, True])
async def test_a_grant_that_races_the_cancel_is_released(
    open_session: Opener, later: bool
) -> None:
    holder, racer = await open_session(), await open_session()
    held = await holder.lock("race")
    task: asyncio.Task[ClientSessionLock] | None = None
    granted = racer._locks._granted

    def grant_then_cancel(request_id: int, data: Any) -> ClientSessionLock:
        # the result has come: the caller is cancelled before it sees it,
        # before or after the task waiting for the answer gets it
        lock = granted(request_id, data)
        assert task is not None
        if later:
            asyncio.get_running_loop().call_soon(task.cancel)
        else:
            task.cancel()
        return lock

    racer._locks._granted = grant_then_cancel  # type: ignore[method-assign]
    task = asyncio.create_task(racer.lock("race"))
    await info_when(holder, "race", waiting=1)
    await held.unlock()
    with pytest.raises(asyncio.CancelledError):
        await task
    # released at once: free again, and the racer holds nothing
    await info_when(holder, "race", owner=None)
    assert racer._locks.held == []
    again = await holder.lock("race", timeout=TIMEOUT)
    assert again.sequence > held.sequence


async def test_a_cancel_of_a_granted_lock_that_a_call_holds_keeps_it(
    open_session: Opener,
) -> None:
    session = await open_session()
    lock = await session.lock("kept")
    repeat = asyncio.create_task(session.lock("kept"))
    repeat.cancel()
    with pytest.raises(asyncio.CancelledError):
        await repeat
    assert await session.ping_server() >= 0  # any answer to it has come
    assert lock.is_owned
    assert (await session.lock_info("kept")).owner == session.session_id


async def test_a_timeout(open_session: Opener) -> None:
    holder, other = await open_session(), await open_session()
    held = await holder.lock("t")
    with pytest.raises(LockTimeoutError) as caught:
        await other.lock("t", timeout=0.05)
    assert caught.value.code == ErrorCode.TIMEOUT
    assert isinstance(caught.value, ProtocolError)
    assert isinstance(caught.value, ServerLockTimeoutError)
    assert isinstance(caught.value, TimeoutError)
    await info_when(holder, "t", waiting=0)
    # free: a timeout does not matter
    await held.unlock()
    quick = await other.lock("t", timeout=0.05)
    assert quick.owner == other.session_id


async def test_bad_arguments(open_session: Opener) -> None:
    session = await open_session()
    with pytest.raises(ProtocolError) as caught:
        await session.lock("a//b")
    assert caught.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError) as caught:
        await session.lock_info("a//b")
    assert caught.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(ValueError, match="SessionLockScope"):
        await session.lock("ok", scope=7)  # type: ignore[arg-type]
    for timeout in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="timeout"):
            await session.lock("ok", timeout=timeout)
    with pytest.raises(TypeError):
        await session.lock(42)  # type: ignore[arg-type]
    assert session._locks.held == []


async def test_forbidden(aiohttp_client: AiohttpClient) -> None:
    server = await aiohttp_client(
        build_app(
            SessionWSRegistry(
                authorize=lambda r, a: a.lock is None or a.lock.startswith("docs/")
            )
        )
    )
    async with connect(server.make_url("/live"), session=server.session) as session:
        with pytest.raises(ProtocolError) as caught:
            await session.lock("admin/x")
        assert caught.value.code == ErrorCode.FORBIDDEN
        assert not isinstance(caught.value, LockTimeoutError)
        assert (await session.lock("docs/x")).owner == session.session_id


async def test_lost_when_the_session_ends(server: Client, open_session: Opener) -> None:
    session = await open_session()
    lock = await session.lock("tell")
    other = await session.lock("other")
    told: list[ClientSessionLock] = []
    told_async: list[str] = []

    noted = asyncio.Event()

    async def note(lock: ClientSessionLock) -> None:
        await asyncio.sleep(0)
        told_async.append(lock.name)
        noted.set()

    lock.on_lost(told.append)
    lock.on_lost(note)
    remove = other.on_lost(told.append)
    remove()
    assert await registry_of(server).sessions.end(ws_id_of(server, session))
    reason = await asyncio.wait_for(lock.wait_lost(), TIMEOUT)
    assert "session ended" in reason
    assert lock.lost_reason == reason
    assert not lock.is_owned
    assert "lost" in repr(lock)
    assert told == [lock]
    await asyncio.wait_for(other.wait_lost(), TIMEOUT)
    assert told == [lock]  # removed
    await asyncio.wait_for(noted.wait(), TIMEOUT)
    assert told_async == ["tell"]
    # a callback added late is called at once
    late: list[ClientSessionLock] = []
    lock.on_lost(late.append)
    assert late == [lock]
    assert await lock.unlock() is False
    assert session._locks.held == []


async def test_a_connection_scoped_lock_goes_with_the_connection(
    server: Client, open_session: Opener
) -> None:
    one, other = await open_session(), await open_session()
    states: list[SessionState] = []
    one.add_state_listener(lambda old, new: states.append(new))
    lock = await one.lock("edit", CONNECTION)
    kept = await one.lock("kept")  # session-scoped
    assert lock.scope is CONNECTION
    waiting = asyncio.create_task(other.lock("edit"))
    await info_when(other, "edit", waiting=1)
    # the server drops that connection (1001: a client with reconnect would
    # come back; this one does not)
    (socket,) = registry_of(server)[ws_id_of(server, one)]
    await socket.close(code=1001)
    assert await asyncio.wait_for(lock.wait_lost(), TIMEOUT) == CONNECTION_LOST
    got = await asyncio.wait_for(waiting, TIMEOUT)
    assert got.owner == other.session_id
    assert got.sequence > lock.sequence
    # the session is closed for good now: its other locks are out of reach
    assert one.state is SessionState.CLOSED
    assert await asyncio.wait_for(kept.wait_lost(), TIMEOUT) == SESSION_CLOSED
    assert states == [SessionState.CLOSED]


async def test_a_waiting_lock_fails_with_its_connection(
    server: Client, open_session: Opener
) -> None:
    holder, other = await open_session(), await open_session()
    await holder.lock("gone")
    waiting = asyncio.create_task(other.lock("gone"))
    await info_when(holder, "gone", waiting=1)
    (socket,) = registry_of(server)[ws_id_of(server, other)]
    await socket.close(code=1001)
    with pytest.raises(ConnectionLostError):
        await asyncio.wait_for(waiting, TIMEOUT)
    await info_when(holder, "gone", waiting=0)


async def test_session_scoped_locks_across_a_reconnection(
    server: Client, open_session: Opener
) -> None:
    registry = registry_of(server)
    session = await open_session("/gated", reconnect=True, reconnect_delay=0.01)
    ws_id = ws_id_of(server, session)
    keep = await session.lock("keep")
    drop = await session.lock("drop")
    edit = await session.lock("edit", CONNECTION)
    lost: list[str] = []
    drop.on_lost(lambda lock: lost.append(lock.name))
    states: asyncio.Queue[SessionState] = asyncio.Queue()
    session.add_state_listener(lambda old, new: states.put_nowait(new))
    server.app[GATE].clear()
    await registry.close_all()  # 1001: the client reconnects
    assert await asyncio.wait_for(states.get(), TIMEOUT) is SessionState.RECONNECTING
    # at once: the connection-scoped lock is gone, the others stay
    assert edit.lost_reason == CONNECTION_LOST
    assert owned(keep)
    assert owned(drop)
    # meanwhile, "drop" is released on the server (another tab of the
    # session could do that), and another session takes it
    rival = await open_session()
    server_lock = registry.locks.held_by(ws_id, "drop")
    assert server_lock is not None
    assert await server_lock.unlock()
    taken = await rival.lock("drop", timeout=TIMEOUT)
    server.app[GATE].set()
    assert await asyncio.wait_for(states.get(), TIMEOUT) is SessionState.CONNECTED
    assert await asyncio.wait_for(drop.wait_lost(), TIMEOUT) == LOST_WHILE_DISCONNECTED
    assert lost == ["drop"]
    assert taken.is_owned
    # "keep" was checked first (it was taken first): still this session's
    assert keep.is_owned
    info = await session.lock_info("keep")
    assert (info.owner, info.sequence) == (session.session_id, keep.sequence)
    assert await session.lock("keep") is keep
    # and the new connection is told when it is lost
    assert await registry.sessions.end(ws_id)
    assert "session ended" in await asyncio.wait_for(keep.wait_lost(), TIMEOUT)


async def test_an_unlock_while_reconnecting_is_sent_after(
    server: Client, open_session: Opener
) -> None:
    registry = registry_of(server)
    session = await open_session("/gated", reconnect=True, reconnect_delay=0.01)
    lock = await session.lock("later")
    states: asyncio.Queue[SessionState] = asyncio.Queue()
    session.add_state_listener(lambda old, new: states.put_nowait(new))
    server.app[GATE].clear()
    await registry.close_all()
    assert await asyncio.wait_for(states.get(), TIMEOUT) is SessionState.RECONNECTING
    assert await lock.unlock() is True  # as far as the client knows
    assert not lock.is_owned
    assert (await registry.locks.info("later")).owner is not None  # not yet
    server.app[GATE].set()
    assert await asyncio.wait_for(states.get(), TIMEOUT) is SessionState.CONNECTED
    await info_when(session, "later", owner=None)


async def test_close_ends_the_locks_and_their_calls(open_session: Opener) -> None:
    holder, other = await open_session(), await open_session()
    lock = await holder.lock("c")
    waiting = asyncio.create_task(other.lock("c"))
    await info_when(holder, "c", waiting=1)
    await other.close()
    with pytest.raises(ConnectionLostError):
        await asyncio.wait_for(waiting, TIMEOUT)
    await holder.close()
    assert lock.lost_reason == SESSION_CLOSED
    with pytest.raises(ConnectionLostError):
        await holder.lock("c")
