"""The Python client, against the real endpoint (and a few fake ones) over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp_session
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestServer, unused_port

from aiohttp_session_ws import (
    REGISTRY_APP_KEY,
    SessionWSRegistry,
    get_registry,
    get_session_ws_id,
    schedule_close_all_session_ws,
    session_ws_endpoint,
    session_ws_middleware,
    setup,
)
from aiohttp_session_ws.client import (
    ConnectError,
    ConnectionLostError,
    Pushes,
    RequestTimeoutError,
    Session,
    SessionState,
    connect,
)
from aiohttp_session_ws.protocol import (
    SUBPROTOCOL,
    Arg,
    ErrorCode,
    Op,
    ProtocolError,
    ProtocolLimits,
    Request,
)

from .apps import TIMEOUT, Client, build_app, cookie_ws_id, logout, registry_of

Transition = tuple[SessionState, SessionState]

# fake endpoints: each sends these frames after the upgrade, then waits
FAKE_FRAMES: web.AppKey[list[str | bytes]] = web.AppKey("fake_frames")
FAKE_CLOSE: web.AppKey[list[int]] = web.AppKey("fake_close")
"""A close code the fake endpoint closes with after its frames, if any."""
FAKE_REPLY: web.AppKey[list[Any]] = web.AppKey("fake_reply")
"""The ``data`` the fake endpoint answers every request with."""
FAKE_CONNECTS: web.AppKey[asyncio.Queue[None]] = web.AppKey("fake_connects")
REFUSE: web.AppKey[list[int]] = web.AppKey("refuse")
"""A status /live refuses upgrades with, if any; each refusal goes to REFUSED."""
REFUSED: web.AppKey[asyncio.Queue[int]] = web.AppKey("refused")
TRANSPORTS: web.AppKey[list[asyncio.Transport]] = web.AppKey("transports")
HANGING: web.AppKey[asyncio.Queue[int]] = web.AppKey("hanging")
GATE: web.AppKey[asyncio.Event] = web.AppKey("gate")


async def live(request: web.Request) -> web.StreamResponse:
    """The endpoint, noting each connection's transport (so a test can cut it)."""
    for status in request.app[REFUSE]:
        request.app[REFUSED].put_nowait(status)
        return web.Response(status=status, text="refused")
    assert request.transport is not None
    request.app[TRANSPORTS].append(request.transport)
    return await session_ws_endpoint(request)


async def gated(request: web.Request) -> web.StreamResponse:
    """The endpoint, once the app's gate is open."""
    await request.app[GATE].wait()
    return await live(request)


async def fake(request: web.Request) -> web.WebSocketResponse:
    """A websocket that sends the app's fake frames and reads until closed."""
    request.app[FAKE_CONNECTS].put_nowait(None)
    ws = web.WebSocketResponse(protocols=[SUBPROTOCOL])
    await ws.prepare(request)
    for frame in request.app[FAKE_FRAMES]:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
    for code in request.app[FAKE_CLOSE]:
        await ws.close(code=code)
    async for msg in ws:
        for data in request.app[FAKE_REPLY]:
            reply = {"op": "result", "id": json.loads(msg.data)["id"], "data": data}
            await ws.send_str(json.dumps(reply))
    return ws


async def no_subprotocol(request: web.Request) -> web.WebSocketResponse:
    """A websocket that does not select the subprotocol."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def refuse(request: web.Request) -> web.Response:
    """Refuse the upgrade with the status in the path."""
    return web.Response(status=int(request.match_info["status"]), text="no")


async def echo_op(connection: Any, request: Request) -> Any:
    return request.args.get("value")


def protocol_app(registry: SessionWSRegistry | None = None) -> web.Application:
    """An app with /live (the endpoint), the fake routes, and two test ops."""
    registry = registry if registry is not None else SessionWSRegistry()
    hanging: asyncio.Queue[int] = asyncio.Queue()

    async def hang(connection: Any, request: Request) -> Any:
        hanging.put_nowait(request.id)
        await asyncio.Event().wait()  # until the connection ends

    registry.ops.add(Op("echo", echo_op, {"value": Arg("any")}))
    registry.ops.add(Op("hang", hang))
    app = build_app(
        registry,
        routes=[
            web.get("/proto", live),
            web.get("/gated", gated),
            web.get("/fake", fake),
            web.get("/no-subprotocol", no_subprotocol),
            web.get("/refuse/{status}", refuse),
            web.post("/logout", logout),
        ],
    )
    app[FAKE_FRAMES] = []
    app[FAKE_CLOSE] = []
    app[FAKE_REPLY] = []
    app[FAKE_CONNECTS] = asyncio.Queue()
    app[REFUSE] = []
    app[REFUSED] = asyncio.Queue()
    app[TRANSPORTS] = []
    app[HANGING] = hanging
    app[GATE] = asyncio.Event()
    app[GATE].set()
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(protocol_app())


@pytest.fixture
async def session(client: Client) -> AsyncIterator[Session]:
    async with connect(client.make_url("/proto"), session=client.session) as session:
        yield session


def record_states(session: Session) -> asyncio.Queue[Transition]:
    """A queue of the session's state changes."""
    changes: asyncio.Queue[Transition] = asyncio.Queue()
    session.add_state_listener(lambda old, new: changes.put_nowait((old, new)))
    return changes


async def next_changes(changes: asyncio.Queue[Transition], n: int) -> list[Transition]:
    return [await asyncio.wait_for(changes.get(), TIMEOUT) for _ in range(n)]


async def hanging_requests(
    client: Client, session: Session, n: int
) -> list[asyncio.Task[Any]]:
    """Start ``n`` requests the server holds; return once it holds them all."""
    tasks = [asyncio.create_task(session.request("hang")) for _ in range(n)]
    queue = client.app[HANGING] if client.app is not None else None
    assert queue is not None
    for _ in range(n):
        await asyncio.wait_for(queue.get(), TIMEOUT)
    return tasks


async def failures(tasks: list[asyncio.Task[Any]]) -> list[BaseException]:
    """Wait (bounded) for the tasks; return what each raised."""
    _, pending = await asyncio.wait(tasks, timeout=TIMEOUT)
    assert not pending
    errors = [t.exception() for t in tasks]
    assert all(e is not None for e in errors)
    return [e for e in errors if e is not None]


# connecting
async def test_hello_fields(client: Client, session: Session) -> None:
    registry = registry_of(client)
    assert session.state is SessionState.CONNECTED
    assert not session.closed
    assert session.session_id == registry.public_handle(cookie_ws_id(client))
    records = registry.connections(cookie_ws_id(client))
    assert [r.connection_id for r in records] == [session.connection_id]
    assert session.limits == registry.limits.for_client()
    assert session.missed == 0
    assert session.session_id in repr(session)


async def test_leaving_the_block_closes(client: Client) -> None:
    async with connect(client.make_url("/proto"), session=client.session) as session:
        changes = record_states(session)
    assert session.state is SessionState.CLOSED
    assert await next_changes(changes, 1) == [
        (SessionState.CONNECTED, SessionState.CLOSED)
    ]
    assert not client.session.closed  # not ours: the caller closes it


async def test_await_then_close(client: Client) -> None:
    session = await connect(client.make_url("/proto"), session=client.session)
    pushes = session.pushes()
    await session.close()
    await session.close()  # again: nothing
    assert session.closed
    assert [data async for data in pushes] == []
    assert [data async for data in session.pushes()] == []  # made after the close
    session.on_push(_nothing)()  # an async callback after the close: never called
    with pytest.raises(ConnectionLostError, match="closed"):
        await session.ping_server()


async def test_own_client_session_is_closed(client: Client) -> None:
    async with connect(client.make_url("/proto")) as session:
        await session.ping_server()
        http = session.http
    assert http.closed


async def test_connect_used_twice(client: Client) -> None:
    connecting = connect(client.make_url("/proto"), session=client.session)
    async with connecting:
        with pytest.raises(RuntimeError, match="used already"):
            await connecting


@pytest.mark.parametrize("status", [400, 403, 503])
async def test_refused_upgrade(client: Client, status: int) -> None:
    with pytest.raises(ConnectError, match=f"HTTP {status}") as info:
        await connect(client.make_url(f"/refuse/{status}"), session=client.session)
    assert info.value.status == status
    assert info.value.retryable is (status == 503)


async def test_origin_refused(client: Client) -> None:
    url = client.make_url("/proto")
    with pytest.raises(ConnectError) as info:
        await connect(url, session=client.session, origin="https://evil.example")
    assert info.value.status == 403
    headers = {"X-Test": "1"}
    own = f"http://{url.host}:{url.port}"
    async with connect(url, session=client.session, origin=own, headers=headers) as s:
        assert s.state is SessionState.CONNECTED


async def test_unreachable_server_closes_own_client_session() -> None:
    with pytest.raises(ConnectError, match="Cannot connect") as info:
        await connect(f"http://127.0.0.1:{unused_port()}/live")
    assert info.value.status is None
    assert info.value.retryable


async def test_no_subprotocol(client: Client) -> None:
    with pytest.raises(ConnectError, match="did not select the subprotocol") as info:
        await connect(client.make_url("/no-subprotocol"), session=client.session)
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (["not json"], "not a hello"),
        (['{"op": "push", "data": 1}'], "not a hello"),
        ([b"binary"], "got BINARY"),
        (
            ['{"op": "hello", "version": 2, "session": "s", "connection": "c"}'],
            "version 2",
        ),
    ],
)
async def test_bad_hello(client: Client, frames: list[str], message: str) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = frames
    with pytest.raises(ConnectError, match=message):
        await connect(client.make_url("/fake"), session=client.session)


async def test_no_hello_in_time(client: Client) -> None:
    with pytest.raises(ConnectError, match="No hello"):
        await connect(
            client.make_url("/fake"), session=client.session, request_timeout=0.1
        )


async def test_options_checked() -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        connect("http://127.0.0.1/live", request_timeout=0)


# requests
async def test_ping(session: Session) -> None:
    rtt = await session.ping_server()
    assert isinstance(rtt, float)
    assert 0 <= rtt < TIMEOUT


async def test_own_properties(session: Session) -> None:
    properties = await session.properties()
    assert properties["$SessionId"] == session.session_id
    assert properties["$ConnectionId"] == session.connection_id
    assert properties["$Transport"] == "websocket"
    assert await session.properties(session_id=session.session_id) == properties


async def test_other_sessions_properties(aiohttp_client: AiohttpClient) -> None:
    registry = SessionWSRegistry(authorize=lambda request, action: True)
    alice = await aiohttp_client(protocol_app(registry))
    bob = await aiohttp_client(alice.server)  # the same server, another cookie jar
    async with (
        connect(alice.make_url("/proto"), session=alice.session) as a,
        connect(bob.make_url("/proto"), session=bob.session) as b,
    ):
        assert a.session_id != b.session_id
        await registry.set_session_properties(cookie_ws_id(bob), {"name": "bob"})
        assert await a.properties(session_id=b.session_id) == {
            "$SessionId": b.session_id,
            "name": "bob",
        }
        with pytest.raises(ProtocolError) as info:
            await a.properties(session_id="no-such-handle")
        assert info.value.code is ErrorCode.NOT_FOUND


async def test_other_sessions_properties_forbidden(
    client: Client, aiohttp_client: AiohttpClient
) -> None:
    other = await aiohttp_client(client.server)
    async with (
        connect(client.make_url("/proto"), session=client.session) as mine,
        connect(other.make_url("/proto"), session=other.session) as theirs,
    ):
        with pytest.raises(ProtocolError) as info:
            await mine.properties(session_id=theirs.session_id)
        assert info.value.code is ErrorCode.FORBIDDEN
        assert info.value.message


async def test_generic_request(session: Session) -> None:
    value = {"a": [1, 2.5, None, "é"]}
    assert await session.request("echo", value=value) == value
    assert await session.request("echo") is None


async def test_error_frames(session: Session) -> None:
    with pytest.raises(ProtocolError) as info:
        await session.request("nope")
    assert info.value.code is ErrorCode.UNKNOWN_OP
    with pytest.raises(ProtocolError) as info:
        await session.request("ping", bogus=1)
    assert info.value.code is ErrorCode.BAD_FRAME
    assert not isinstance(info.value, RequestTimeoutError)
    await session.ping_server()  # an error frame does not end the connection


async def test_request_arguments_checked(session: Session) -> None:
    with pytest.raises(ValueError, match="not arguments"):
        await session.request("echo", id=3)
    with pytest.raises(TypeError):
        await session.request("echo", value=object())


async def test_too_large_request_is_not_sent(aiohttp_client: AiohttpClient) -> None:
    registry = SessionWSRegistry(limits=ProtocolLimits(max_frame_size=200))
    client = await aiohttp_client(protocol_app(registry))
    async with connect(client.make_url("/proto"), session=client.session) as session:
        frames_in = registry.stats().frames_in
        with pytest.raises(ProtocolError) as info:
            await session.request("echo", value="x" * 200)
        assert info.value.code is ErrorCode.TOO_LARGE
        assert registry.stats().frames_in == frames_in
        assert await session.request("echo", value="x" * 100) == "x" * 100


async def test_request_timeout(client: Client) -> None:
    async with connect(
        client.make_url("/proto"), session=client.session, request_timeout=0.2
    ) as session:
        with pytest.raises(RequestTimeoutError) as info:
            await session.request("hang")
        assert isinstance(info.value, ProtocolError)
        assert info.value.code is ErrorCode.TIMEOUT
        await session.ping_server()


async def test_pending_requests_fail_at_once_on_close(
    client: Client, session: Session
) -> None:
    tasks = await hanging_requests(client, session, 3)
    await registry_of(client).close_all()
    errors = await failures(tasks)
    assert all(isinstance(e, ConnectionLostError) for e in errors)
    assert "1001" in str(errors[0])
    assert session.state is SessionState.CLOSED  # reconnect=False
    assert session.close_code == 1001


async def test_pending_requests_fail_when_the_network_fails(client: Client) -> None:
    async with connect(
        client.make_url("/proto"), session=client.session, reconnect=True
    ) as session:
        changes = record_states(session)
        tasks = await hanging_requests(client, session, 2)
        assert client.app is not None
        client.app[TRANSPORTS][-1].abort()  # no close frame
        errors = await failures(tasks)
        assert all(isinstance(e, ConnectionLostError) for e in errors)
        assert "no close frame" in str(errors[0])
        # not replayed on the new connection
        assert await next_changes(changes, 2) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING),
            (SessionState.RECONNECTING, SessionState.CONNECTED),
        ]
        assert session.close_code is None
        assert registry_of(client).stats().pending_requests == 0
        await session.ping_server()


async def test_pending_requests_fail_on_session_close(
    client: Client, session: Session
) -> None:
    tasks = await hanging_requests(client, session, 2)
    await session.close()
    errors = await failures(tasks)
    assert all(isinstance(e, ConnectionLostError) for e in errors)
    assert "closed" in str(errors[0])


async def test_requests_while_reconnecting_fail(client: Client) -> None:
    assert client.app is not None
    gate = client.app[GATE]
    async with connect(
        client.make_url("/gated"), session=client.session, reconnect=True
    ) as session:
        changes = record_states(session)
        gate.clear()  # the next upgrades wait
        await registry_of(client).close_all()
        assert await next_changes(changes, 1) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING)
        ]
        with pytest.raises(ConnectionLostError, match="reconnecting"):
            await session.ping_server()
        gate.set()
        assert await next_changes(changes, 1) == [
            (SessionState.RECONNECTING, SessionState.CONNECTED)
        ]
        await session.ping_server()


async def test_close_while_reconnecting(client: Client) -> None:
    assert client.app is not None
    gate = client.app[GATE]
    session = await connect(
        client.make_url("/gated"), session=client.session, reconnect=True
    )
    changes = record_states(session)
    gate.clear()
    await registry_of(client).close_all()
    await next_changes(changes, 1)
    await session.close()
    assert await next_changes(changes, 1) == [
        (SessionState.RECONNECTING, SessionState.CLOSED)
    ]
    gate.set()


# pushes
async def test_pushes_reach_iterator_and_callbacks(
    client: Client, session: Session
) -> None:
    registry = registry_of(client)
    plain: list[Any] = []
    awaited: asyncio.Queue[Any] = asyncio.Queue()

    async def on_push(data: Any) -> None:
        await session.ping_server()  # an async callback may make requests
        awaited.put_nowait(data)

    remove_plain = session.on_push(plain.append)
    session.on_push(on_push)
    pushes = session.pushes()
    assert await registry.send_to_session(cookie_ws_id(client), {"n": 1}) == 1
    assert await registry.broadcast("to all") == 1
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == {"n": 1}
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == "to all"
    assert plain == [{"n": 1}, "to all"]  # called as each frame came in
    assert await asyncio.wait_for(awaited.get(), TIMEOUT) == {"n": 1}
    assert await asyncio.wait_for(awaited.get(), TIMEOUT) == "to all"

    remove_plain()
    remove_plain()  # again: nothing
    await registry.send_to_session(cookie_ws_id(client), 3)
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == 3
    assert plain == [{"n": 1}, "to all"]
    assert session.missed == 0


async def test_async_callback_remover(client: Client, session: Session) -> None:
    registry = registry_of(client)
    seen: asyncio.Queue[Any] = asyncio.Queue()

    class Handler:
        async def __call__(self, data: Any) -> None:
            seen.put_nowait(data)

    remove = session.on_push(Handler())  # an object with an async __call__
    await registry.broadcast(1)
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == 1
    remove()
    pushes = session.pushes()
    await registry.broadcast(2)
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == 2
    assert seen.empty()


async def test_push_buffer_drops_oldest(client: Client, session: Session) -> None:
    registry = registry_of(client)
    small = session.pushes(max_buffer=2)
    everything = session.pushes()
    for n in range(3):
        await registry.broadcast(n)
    assert [await asyncio.wait_for(anext(everything), TIMEOUT) for _ in range(3)] == [
        0,
        1,
        2,
    ]
    assert small.dropped == 1
    assert everything.dropped == 0
    async with small:
        assert [await anext(small), await anext(small)] == [1, 2]
    await registry.broadcast(3)
    assert await asyncio.wait_for(anext(everything), TIMEOUT) == 3
    assert [data async for data in small] == []  # closed: ended, took no more
    with pytest.raises(ValueError, match="max_buffer"):
        session.pushes(max_buffer=0)


async def test_failing_callbacks_are_logged(
    client: Client, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(client)

    def broken(data: Any) -> None:
        raise RuntimeError("broken sync")

    async def broken_async(data: Any) -> None:
        raise RuntimeError("broken async")

    async def coroutine(data: Any) -> None:
        raise AssertionError("never run")  # pragma: no cover

    def returns_coroutine(data: Any) -> Any:
        return coroutine(data)

    session.on_push(broken)
    session.on_push(broken_async)
    session.on_push(returns_coroutine)
    session.add_state_listener(_fail)
    pushes = session.pushes()
    await registry.broadcast("x")
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == "x"
    await session.close()  # waits for the async callback
    messages = [r.getMessage() for r in caplog.records]
    assert any("Push callback" in m and "broken" in m for m in messages)
    assert any("broken_async" in m for m in messages)
    assert any("returned an awaitable" in m for m in messages)
    assert any("State listener" in m for m in messages)


async def test_missed(client: Client) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = [
        HELLO,
        '{"missed":3,"op":"push","data":1}',
        '{"op":"push","data":2,"missed":2}',
        '{"op":"push","data":"end"}',
    ]
    async with connect(client.make_url("/fake"), session=client.session) as session:
        missed: list[int] = []
        session.on_missed(missed.append)
        session.on_missed(_fail)
        pushes = session.pushes()
        assert [await asyncio.wait_for(anext(pushes), TIMEOUT) for _ in range(3)] == [
            1,
            2,
            "end",
        ]
        assert missed == [3, 2]
        assert session.missed == 5


async def test_odd_frames_are_ignored(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = [
        HELLO,
        b"binary",
        "not json",
        "[1]",
        '{"op":"error","id":null,"code":"too_large","message":"m"}',
        '{"op":"result","id":999,"data":1}',
        '{"op":"something-new"}',
        '{"op":"push","data":"end"}',
    ]
    async with connect(client.make_url("/fake"), session=client.session) as session:
        pushes = session.pushes()
        assert await asyncio.wait_for(anext(pushes), TIMEOUT) == "end"
        assert session.state is SessionState.CONNECTED
    messages = [r.getMessage() for r in caplog.records]
    assert any("binary" in m for m in messages)
    assert any("not a JSON object" in m for m in messages)
    assert any("too_large" in m for m in messages)


HELLO = json.dumps(
    {"op": "hello", "version": 1, "session": "s", "connection": "c", "limits": {}}
)


# reconnecting
async def test_reconnect_after_going_away(client: Client) -> None:
    registry = registry_of(client)
    async with connect(
        client.make_url("/proto"),
        session=client.session,
        reconnect=True,
        reconnect_delay=0.01,
        heartbeat=5.0,
    ) as session:
        changes = record_states(session)
        pushes = session.pushes()
        session_id, connection_id = session.session_id, session.connection_id
        await registry.close_all()  # 1001: the server goes away
        assert await next_changes(changes, 2) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING),
            (SessionState.RECONNECTING, SessionState.CONNECTED),
        ]
        assert session.close_code == 1001
        assert session.session_id == session_id  # the same server session
        assert session.connection_id != connection_id
        await session.ping_server()
        await registry.send_to_session(cookie_ws_id(client), "after")
        assert await asyncio.wait_for(anext(pushes), TIMEOUT) == "after"


async def test_no_reconnect_after_logout(client: Client) -> None:
    async with connect(
        client.make_url("/proto"), session=client.session, reconnect=True
    ) as session:
        changes = record_states(session)
        pushes = session.pushes()
        await client.post("/logout")  # the server closes the session's sockets: 1000
        assert await asyncio.wait_for(_drain(pushes), TIMEOUT) == []
        assert await next_changes(changes, 1) == [
            (SessionState.CONNECTED, SessionState.CLOSED)
        ]
        assert session.close_code == 1000
        with pytest.raises(ConnectionLostError, match="closed"):
            await session.ping_server()


async def test_no_reconnect_after_policy_violation(client: Client) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = [HELLO]
    client.app[FAKE_CLOSE][:] = [1008]
    connects = client.app[FAKE_CONNECTS]
    async with connect(
        client.make_url("/fake"), session=client.session, reconnect=True
    ) as session:
        await asyncio.wait_for(_drain(session.pushes()), TIMEOUT)
        assert session.state is SessionState.CLOSED
        assert session.close_code == 1008
    assert connects.qsize() == 1


@pytest.mark.parametrize(("code", "retryable"), [(1000, False), (1001, True)])
async def test_close_before_hello(client: Client, code: int, retryable: bool) -> None:
    assert client.app is not None
    client.app[FAKE_CLOSE][:] = [code]
    with pytest.raises(ConnectError, match=f"with {code} before") as info:
        await connect(client.make_url("/fake"), session=client.session, reconnect=True)
    assert info.value.retryable is retryable


async def test_reconnect_retries_then_stops_on_a_refusal(client: Client) -> None:
    assert client.app is not None
    refuse, refused = client.app[REFUSE], client.app[REFUSED]
    async with connect(
        client.make_url("/proto"),
        session=client.session,
        reconnect=True,
        reconnect_delay=0.01,
        reconnect_max_delay=0.02,
    ) as session:
        changes = record_states(session)
        refuse[:] = [503]
        await registry_of(client).close_all()
        assert [await asyncio.wait_for(refused.get(), TIMEOUT) for _ in range(3)] == [
            503
        ] * 3  # retried
        refuse[:] = [403]
        while await asyncio.wait_for(refused.get(), TIMEOUT) != 403:
            pass
        assert await next_changes(changes, 2) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING),
            (SessionState.RECONNECTING, SessionState.CLOSED),
        ]


async def test_reconnect_across_a_server_restart() -> None:
    port = unused_port()
    first = TestServer(protocol_app(), port=port)
    await first.start_server()
    jar = aiohttp.CookieJar(unsafe=True)  # the cookies of 127.0.0.1
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as http,
        connect(
            first.make_url("/proto"),
            session=http,
            reconnect=True,
            reconnect_delay=0.01,
            reconnect_max_delay=0.05,
        ) as session,
    ):
        changes = record_states(session)
        first_registry: SessionWSRegistry = first.app[REGISTRY_APP_KEY]
        session_ws_id = next(iter(first_registry))
        await first.close()  # shutdown: 1001, then nothing listens
        assert await next_changes(changes, 1) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING)
        ]
        second = TestServer(protocol_app(), port=port)
        await second.start_server()
        try:
            assert await next_changes(changes, 1) == [
                (SessionState.RECONNECTING, SessionState.CONNECTED)
            ]
            registry = second.app[REGISTRY_APP_KEY]
            assert session_ws_id in registry  # the cookie rode along
            await session.ping_server()
        finally:
            await session.close()
            await second.close()


async def test_reconnect_gives_up_after_max_attempts() -> None:
    server = TestServer(protocol_app())
    await server.start_server()
    async with connect(
        server.make_url("/proto"),
        reconnect=True,
        reconnect_delay=0.01,
        max_reconnect_attempts=2,
    ) as session:
        changes = record_states(session)
        await server.close()
        assert await next_changes(changes, 2) == [
            (SessionState.CONNECTED, SessionState.RECONNECTING),
            (SessionState.RECONNECTING, SessionState.CLOSED),
        ]


def _fail(*args: Any) -> None:
    raise RuntimeError("a failing listener")


async def _nothing(data: Any) -> None:
    pass  # pragma: no cover


async def _drain(pushes: Pushes) -> list[Any]:
    return [data async for data in pushes]


async def test_no_upgrade_in_time(client: Client) -> None:
    assert client.app is not None
    client.app[GATE].clear()
    with pytest.raises(ConnectError, match="No websocket upgrade"):
        await connect(
            client.make_url("/gated"), session=client.session, request_timeout=0.1
        )
    client.app[GATE].set()


async def test_properties_not_an_object(client: Client) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = [HELLO]
    client.app[FAKE_REPLY][:] = ["not an object"]
    session = await connect(client.make_url("/fake"), session=client.session)
    async with session:  # a Session is an async context manager too
        with pytest.raises(ProtocolError, match="must be an object") as info:
            await session.properties()
        assert info.value.code is ErrorCode.INTERNAL
    assert session.closed


async def test_frame_too_big_for_the_client(client: Client) -> None:
    assert client.app is not None
    client.app[FAKE_FRAMES][:] = [HELLO, "x" * (1024 + 1)]
    async with connect(
        client.make_url("/fake"), session=client.session, max_msg_size=1024
    ) as session:
        assert await asyncio.wait_for(_drain(session.pushes()), TIMEOUT) == []
        assert session.close_code is None


async def test_callback_closes_an_iterator(client: Client, session: Session) -> None:
    pushes = session.pushes()
    other = session.pushes()
    session.on_push(lambda data: pushes.close())
    await registry_of(client).broadcast(1)
    assert await asyncio.wait_for(anext(other), TIMEOUT) == 1
    assert [data async for data in pushes] == []


async def test_close_cancels_a_slow_async_callback(client: Client) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(data: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    session = await connect(
        client.make_url("/proto"), session=client.session, request_timeout=0.1
    )
    session.on_push(slow)
    await registry_of(client).broadcast(1)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await session.close()
    assert cancelled.is_set()


# The example of docs/client-python.rst: an app, and its test with aiohttp_client.
# example-app-start
async def login(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    session["user"] = (await request.post())["user"]
    return web.Response(text="welcome")


async def user_property(request: web.Request) -> dict[str, str]:
    """The properties of a protocol connection: who logged in."""
    session = await aiohttp_session.get_session(request)
    return {"user": session.get("user", "nobody")}


async def notify(request: web.Request) -> web.Response:
    """Push a note to every protocol connection of the caller's session."""
    registry = get_registry(request)
    session_ws_id = await get_session_ws_id(request)
    reached = await registry.send_to_session(session_ws_id, await request.json())
    return web.json_response({"reached": reached})


async def logout_user(request: web.Request) -> web.Response:
    response = web.Response(text="bye")
    await schedule_close_all_session_ws(request, response)
    (await aiohttp_session.get_session(request)).invalidate()
    return response


def make_app() -> web.Application:
    storage = (
        aiohttp_session.SimpleCookieStorage()
    )  # EncryptedCookieStorage in real life
    app = web.Application(
        middlewares=[aiohttp_session.session_middleware(storage), session_ws_middleware]
    )
    setup(app, SessionWSRegistry(properties_factory=user_property))
    app.router.add_post("/login", login)
    app.router.add_post("/notify", notify)
    app.router.add_post("/logout", logout_user)
    app.router.add_get("/live", session_ws_endpoint)
    return app


# example-app-end


# example-test-start
async def test_live_updates(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app())
    await client.post("/login", data={"user": "alice"})

    # client.session is the test client's aiohttp.ClientSession: its cookie
    # jar holds the login, and the websocket upgrade sends it along
    async with connect(client.make_url("/live"), session=client.session) as session:
        assert session.state is SessionState.CONNECTED
        assert (await session.properties())["user"] == "alice"

        pushes = session.pushes()
        response = await client.post("/notify", json={"text": "hello"})
        assert await response.json() == {"reached": 1}
        assert await asyncio.wait_for(anext(pushes), 5) == {"text": "hello"}

        # logging out closes the session's websockets with 1000: the session
        # ends for good, and so does the iterator
        await client.post("/logout")
        assert await asyncio.wait_for(anext(pushes, "ended"), 5) == "ended"
        assert session.closed
        assert session.close_code == 1000


# example-test-end


async def test_a_push_over_aiohttp_s_default_message_size_arrives(
    client: Client, session: Session
) -> None:
    pushes = session.pushes()
    big = "x" * (5 * 1024 * 1024)  # aiohttp reads 4 MiB at most by default
    assert await registry_of(client).send_to_session(cookie_ws_id(client), big) == 1
    assert await asyncio.wait_for(anext(pushes), TIMEOUT) == big
    async with contextlib.aclosing(pushes):
        pass
