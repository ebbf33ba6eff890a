"""The Python client's messaging (``session.messaging``), against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SessionWSRegistry
from aiohttp_session_ws.authorization import REGISTER_HANDLER, SEND_TO_PATH, Action
from aiohttp_session_ws.client import Session, SessionState, connect
from aiohttp_session_ws.filters import FilterSyntaxError, parse_filter
from aiohttp_session_ws.messaging import client as messaging_client
from aiohttp_session_ws.messaging.client import HANDLER_FAILED, NO_HANDLER_HERE
from aiohttp_session_ws.messaging.errors import (
    BadFilterError,
    HandlerConflictError,
    MessagingError,
    MessagingForbiddenError,
    MessagingTimeoutError,
    NoHandlerError,
    NoSuchSessionError,
    RejectedError,
    SessionClosedError,
)
from aiohttp_session_ws.messaging.requests import RequestContext
from aiohttp_session_ws.messaging.responses import FilterResponse
from aiohttp_session_ws.protocol import SUBPROTOCOL, ErrorCode, ProtocolError

from .apps import TIMEOUT, Client, build_app, registry_of

Opener = Callable[..., Awaitable[Session]]

LOGGER = "aiohttp_session_ws.messaging.client"


DENIED: web.AppKey[set[str]] = web.AppKey("denied")
"""The permissions the server's policy refuses (all others it allows)."""


def policy(request: web.Request, action: Action) -> bool:
    return action.permission not in request.app[DENIED]


def team_of(request: web.Request) -> dict[str, str]:
    """Each connection's ``team`` property comes from its URL."""
    return {"team": request.query.get("team", "none")}


@pytest.fixture
async def server(aiohttp_client: AiohttpClient) -> Client:
    registry = SessionWSRegistry(authorize=policy, properties_factory=team_of)
    app = build_app(registry)
    app[DENIED] = set()
    return await aiohttp_client(app)


@pytest.fixture
async def open_session(
    aiohttp_client: AiohttpClient, server: Client
) -> AsyncIterator[Opener]:
    """Open a client session of a new browser (its own cookie jar) of ``server``."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_(team: str = "none", **options: Any) -> Session:
            browser = await aiohttp_client(server.server)
            url = browser.make_url("/live").with_query(team=team)
            session = await connect(url, session=browser.session, **options)
            stack.push_async_callback(session.close)
            return session

        yield open_


@pytest.fixture
def registry(server: Client) -> SessionWSRegistry:
    return registry_of(server)


def record_states(session: Session) -> asyncio.Queue[SessionState]:
    states: asyncio.Queue[SessionState] = asyncio.Queue()
    session.add_state_listener(lambda old, new: states.put_nowait(new))
    return states


# to a path
async def test_request_to_a_server_handler(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    seen: list[RequestContext] = []

    async def add(value: Any, context: RequestContext) -> Any:
        seen.append(context)
        return value["a"] + value["b"]

    registration = await registry.messaging.add_request_handler("calc/add", add)
    session = await open_session()
    async with asyncio.timeout(TIMEOUT):
        assert (
            await session.messaging.send_request_to_path(
                "calc/add/ints", {"a": 1, "b": 2}
            )
            == 3
        )
        with pytest.raises(NoHandlerError) as caught:
            await session.messaging.send_request_to_path("calc/sub", 1)
    assert caught.value.code is ErrorCode.NO_HANDLER
    assert isinstance(caught.value, ProtocolError)
    [context] = seen
    assert context.path == "calc/add/ints"
    assert context.handler_path == "calc/add"
    assert context.sender == session.session_id
    await registration.close()


async def test_server_code_requests_a_client_handler(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    seen: list[RequestContext] = []

    def double(value: Any, context: RequestContext) -> Any:  # a sync handler
        seen.append(context)
        return value * 2

    session = await open_session(team="red")
    async with asyncio.timeout(TIMEOUT):
        registration = await session.messaging.add_request_handler(
            "jobs", double, session_properties=["team"]
        )
        assert registration.path == "jobs"
        assert registration.addressed is False
        assert await registry.messaging.send_request_to_path("jobs/7", 21) == 42
    [context] = seen
    assert context.path == "jobs/7"
    assert context.handler_path == "jobs"
    assert context.sender is None  # server code
    assert context.addressed is False


async def test_a_client_handler_serves_another_session(open_session: Opener) -> None:
    handling = await open_session(team="red")
    sending = await open_session(team="blue")
    seen: list[RequestContext] = []

    async def upper(value: Any, context: RequestContext) -> Any:
        seen.append(context)
        await asyncio.sleep(0)  # a real async handler
        return value.upper()

    async with asyncio.timeout(TIMEOUT):
        await handling.messaging.add_request_handler(
            "text/upper", upper, session_properties=["team"]
        )
        assert await sending.messaging.send_request_to_path("text/upper", "hi") == "HI"
    [context] = seen
    assert context.sender == sending.session_id
    assert dict(context.session_properties) == {"team": "blue"}


# to a session
async def test_a_request_addressed_to_a_session(open_session: Opener) -> None:
    alice = await open_session(team="red")
    bob = await open_session(team="blue")
    assert alice.session_id != bob.session_id
    seen: list[RequestContext] = []

    def inbox(value: Any, context: RequestContext) -> Any:
        seen.append(context)
        return {"got": value}

    async with asyncio.timeout(TIMEOUT):
        registration = await alice.messaging.add_stream_handler("inbox", inbox)
        assert registration.addressed is True
        answer = await bob.messaging.send_request_to_session(
            "inbox/private", alice.session_id, "hello"
        )
        assert answer == {"got": "hello"}
        # addressed handlers do not serve the path itself
        with pytest.raises(NoHandlerError):
            await bob.messaging.send_request_to_path("inbox", "hello")
        with pytest.raises(NoSuchSessionError):
            await bob.messaging.send_request_to_session("inbox", "nobody", "x")
        with pytest.raises(NoHandlerError):  # bob serves nothing
            await alice.messaging.send_request_to_session("inbox", bob.session_id, 1)
    [context] = seen
    assert context.sender == bob.session_id
    assert context.addressed is True
    assert context.path == "inbox/private"
    assert context.handler_path == "inbox"


async def test_addressed_false_is_a_request_handler(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    session = await open_session()
    async with asyncio.timeout(TIMEOUT):
        registration = await session.messaging.add_stream_handler(
            "plain", lambda value, context: value + 1, addressed=False
        )
        assert registration.addressed is False
        assert await registry.messaging.send_request_to_path("plain", 1) == 2
        with pytest.raises(HandlerConflictError):
            await session.messaging.add_request_handler("plain", lambda v, c: v)


# to a filter
async def test_a_filter_send_gathers_every_answer(open_session: Opener) -> None:
    reds = [await open_session(team="red") for _ in range(3)]
    await open_session(team="blue")  # not matched
    sender = await open_session(team="blue")
    first_may_answer = asyncio.Event()

    async def slow(value: Any, context: RequestContext) -> Any:
        await first_may_answer.wait()  # answers after the other two
        return "slow"

    def fast(value: Any, context: RequestContext) -> Any:
        return "fast"

    def refuse(value: Any, context: RequestContext) -> Any:
        raise RejectedError("not today")

    called: list[FilterResponse] = []

    def on_response(response: FilterResponse) -> None:
        called.append(response)
        if len(called) == 2:
            first_may_answer.set()

    async with asyncio.timeout(TIMEOUT):
        for session, handler in zip(reds, (slow, fast, refuse), strict=True):
            await session.messaging.add_stream_handler("poll", handler)
        responses = await sender.messaging.send_request_to_filter(
            "team eq 'red'", "poll/q1", {"q": 1}, on_response=on_response
        )
        assert responses.expected == 3
        got = [response async for response in responses]
        assert await responses.wait() == frozenset()
    assert responses.unanswered == frozenset()
    by_session = {r.session: r for r in got}
    assert set(by_session) == {s.session_id for s in reds}
    assert by_session[reds[0].session_id].value == "slow"
    assert by_session[reds[1].session_id].result() == "fast"
    refused = by_session[reds[2].session_id]
    assert not refused.ok
    assert isinstance(refused.error, RejectedError)
    assert refused.error.message == "not today"
    assert got[-1].session == reds[0].session_id  # in the order they answered
    assert called == got


async def test_a_filter_send_reports_who_did_not_answer(open_session: Opener) -> None:
    quiet = await open_session(team="red")
    talker = await open_session(team="red")
    sender = await open_session()
    cancelled = asyncio.Event()

    async def never(value: Any, context: RequestContext) -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with asyncio.timeout(TIMEOUT):
        await quiet.messaging.add_stream_handler("poll", never)
        await talker.messaging.add_stream_handler("poll", lambda v, c: "here")
        responses = await sender.messaging.send_request_to_filter(
            "team eq 'red'", "poll", None, timeout=0.5
        )
        assert await responses.wait() == frozenset({quiet.session_id})
        assert [r.value async for r in responses] == ["here"]
        await quiet.close()  # its handler's task ends with the connection
        await cancelled.wait()


async def test_concurrent_filter_sends_do_not_mix(open_session: Opener) -> None:
    reds = [await open_session(team="red") for _ in range(3)]
    sender = await open_session()
    arrived = 0
    all_in = asyncio.Event()

    async def echo(value: Any, context: RequestContext) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == 6:
            all_in.set()
        await all_in.wait()  # both sends are in flight at every session
        return value

    async with asyncio.timeout(TIMEOUT):
        for session in reds:
            await session.messaging.add_stream_handler("echo", echo)
        one, two = await asyncio.gather(
            sender.messaging.send_request_to_filter("team eq 'red'", "echo", 1),
            sender.messaging.send_request_to_filter("team eq 'red'", "echo", 2),
        )
        values_one = [r.value async for r in one]
        values_two = [r.value async for r in two]
    assert values_one == [1, 1, 1]
    assert values_two == [2, 2, 2]


async def test_a_filter_that_matches_nobody(open_session: Opener) -> None:
    sender = await open_session()
    async with asyncio.timeout(TIMEOUT):
        responses = await sender.messaging.send_request_to_filter(
            "team eq 'green'", "poll", 1
        )
        assert responses.expected == 0
        assert await responses.wait() == frozenset()
        assert [r async for r in responses] == []


async def test_a_bad_filter_says_where(open_session: Opener) -> None:
    text = "team eq 'red' and"
    with pytest.raises(FilterSyntaxError) as parsed:
        parse_filter(text)
    assert parsed.value.position > 0
    session = await open_session()
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(BadFilterError) as caught:
            await session.messaging.send_request_to_filter(text, "poll", 1)
    assert caught.value.code is ErrorCode.BAD_FILTER
    assert caught.value.position == parsed.value.position


async def test_a_filter_send_ends_when_the_connection_does(
    open_session: Opener,
) -> None:
    quiet = await open_session(team="red")
    talker = await open_session(team="red")
    sender = await open_session()

    async def never(value: Any, context: RequestContext) -> Any:
        await asyncio.Event().wait()

    answered = asyncio.Event()
    async with asyncio.timeout(TIMEOUT):
        await quiet.messaging.add_stream_handler("poll", never)
        await talker.messaging.add_stream_handler("poll", lambda v, c: "here")
        responses = await sender.messaging.send_request_to_filter(
            "team eq 'red'", "poll", None, on_response=lambda r: answered.set()
        )
        await answered.wait()
        await sender.close()
        # the handles of who did not answer are not known to the client
        assert await responses.wait() == frozenset()
    assert responses.received == 1
    assert [r.value async for r in responses] == ["here"]


# handlers
async def test_a_second_local_registration_conflicts_without_a_round_trip(
    open_session: Opener,
) -> None:
    session = await open_session()
    async with asyncio.timeout(TIMEOUT):
        await session.messaging.add_request_handler("a/b", lambda v, c: v)
        await session.messaging.add_stream_handler("a/b", lambda v, c: v)  # addressed
        await session.close()
    assert session.closed
    with pytest.raises(HandlerConflictError) as caught:
        await session.messaging.add_request_handler("a/b", lambda v, c: v)
    assert caught.value.code is ErrorCode.HANDLER_CONFLICT
    with pytest.raises(HandlerConflictError):
        await session.messaging.add_stream_handler("a/b", lambda v, c: v)
    for registration in session.messaging.registrations:
        await registration.close()  # nothing to remove: no error
    assert session.messaging.registrations == []


async def test_paths_and_arguments_are_checked_locally(open_session: Opener) -> None:
    session = await open_session()
    messaging = session.messaging
    for path in ("", "a//b", "/a", "a/", "a b", "x" * 257):
        with pytest.raises(ValueError, match="message path"):
            await messaging.add_request_handler(path, lambda v, c: v)
        with pytest.raises(ValueError, match="message path"):
            await messaging.send_request_to_path(path, 1)
        with pytest.raises(ValueError, match="message path"):
            await messaging.send_request_to_filter("all", path, 1)
    with pytest.raises(TypeError):
        await messaging.add_request_handler("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await messaging.add_request_handler("a", lambda v, c: v, "team")
    for timeout in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            await messaging.send_request_to_path("a", 1, timeout=timeout)
    with pytest.raises(ValueError, match="handle"):
        await messaging.send_request_to_session("a", "", 1)
    assert messaging.registrations == []


async def test_rejections_and_failures_reach_the_sender(
    open_session: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    handling = await open_session()
    sending = await open_session()

    def refuse(value: Any, context: RequestContext) -> Any:
        raise RejectedError(f"no {value}")

    async def fail(value: Any, context: RequestContext) -> Any:
        raise KeyError("bug")

    def unjsonable(value: Any, context: RequestContext) -> Any:
        return object()

    def huge(value: Any, context: RequestContext) -> Any:
        return "x" * handling.limits["max_frame_size"]

    caplog.set_level(logging.ERROR, LOGGER)
    async with asyncio.timeout(TIMEOUT):
        await handling.messaging.add_request_handler("refuse", refuse)
        await handling.messaging.add_request_handler("fail", fail)
        await handling.messaging.add_request_handler("object", unjsonable)
        await handling.messaging.add_request_handler("huge", huge)
        with pytest.raises(RejectedError) as refused:
            await sending.messaging.send_request_to_path("refuse", "way")
        assert refused.value.message == "no way"
        assert refused.value.code is ErrorCode.REJECTED
        with pytest.raises(RejectedError) as failed:
            await sending.messaging.send_request_to_path("fail", 1)
        assert failed.value.message == HANDLER_FAILED
        with pytest.raises(RejectedError) as bad_value:
            await sending.messaging.send_request_to_path("object", 1)
        assert bad_value.value.message == HANDLER_FAILED
        with pytest.raises(RejectedError) as too_large:
            await sending.messaging.send_request_to_path("huge", 1)
        assert too_large.value.message == HANDLER_FAILED
    logged = [r for r in caplog.records if r.name == LOGGER]
    assert any(
        "'fail' failed" in r.getMessage() and r.exc_info is not None for r in logged
    )
    assert any("JSON cannot carry" in r.getMessage() for r in logged)
    assert any("too large" in r.getMessage() for r in logged)
    assert handling.state is SessionState.CONNECTED  # the connection stays


async def test_close_a_registration(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    session = await open_session()
    async with asyncio.timeout(TIMEOUT):
        registration = await session.messaging.add_request_handler(
            "svc", lambda v, c: "first"
        )
        assert await registry.messaging.send_request_to_path("svc", 0) == "first"
        await registration.close()
        assert registration.closed
        await registration.close()  # idempotent
        with pytest.raises(NoHandlerError):
            await registry.messaging.send_request_to_path("svc", 0)
        assert session.messaging.registrations == []
        again = await session.messaging.add_request_handler("svc", lambda v, c: "2nd")
        assert await registry.messaging.send_request_to_path("svc", 0) == "2nd"
        assert session.messaging.registrations == [again]


async def test_registrations_are_sent_again_after_a_reconnection(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    session = await open_session(
        team="red", reconnect=True, reconnect_delay=0.01, reconnect_max_delay=0.05
    )
    states = record_states(session)
    async with asyncio.timeout(TIMEOUT):
        await session.messaging.add_request_handler("kept", lambda v, c: "kept")
        addressed = await session.messaging.add_stream_handler(
            "direct", lambda v, c: "direct"
        )
        closed = await session.messaging.add_request_handler("gone", lambda v, c: 1)
        await closed.close()
        connection = session.connection_id
        await registry.close_all()  # 1001: the client reconnects
        assert await states.get() is SessionState.RECONNECTING
        assert await states.get() is SessionState.CONNECTED
        assert session.connection_id != connection
        resending = session.messaging._resending
        assert resending is not None
        await resending
        other = await open_session()  # close_all closed the others for good
        assert await registry.messaging.send_request_to_path("kept", 0) == "kept"
        assert (
            await other.messaging.send_request_to_session(
                "direct", session.session_id, 0
            )
            == "direct"
        )
        with pytest.raises(NoHandlerError):  # closed: not sent again
            await registry.messaging.send_request_to_path("gone", 0)
        # a second registration is refused locally, still
        with pytest.raises(HandlerConflictError):
            await session.messaging.add_stream_handler("direct", lambda v, c: 0)
        await addressed.close()
        with pytest.raises(NoHandlerError):
            await other.messaging.send_request_to_session(
                "direct", session.session_id, 0
            )


async def test_a_handler_is_cancelled_with_its_connection(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    session = await open_session()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(value: Any, context: RequestContext) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with asyncio.timeout(TIMEOUT):
        await session.messaging.add_request_handler("hang", hang)
        sending = asyncio.create_task(
            registry.messaging.send_request_to_path("hang", 0, timeout=TIMEOUT)
        )
        await started.wait()
        await session.close()
        await cancelled.wait()
        with pytest.raises(MessagingError) as caught:
            await sending
    assert caught.value.code is ErrorCode.SESSION_CLOSED


async def test_the_server_times_out_before_the_client(
    registry: SessionWSRegistry, open_session: Opener
) -> None:
    # the client waits past a send's timeout, whatever its request_timeout
    handling = await open_session()
    sending = await open_session(request_timeout=0.2)

    async def hang(value: Any, context: RequestContext) -> Any:
        await asyncio.Event().wait()

    async with asyncio.timeout(TIMEOUT):
        await handling.messaging.add_request_handler("hang", hang)
        with pytest.raises(MessagingTimeoutError) as caught:
            await sending.messaging.send_request_to_path("hang", 0, timeout=0.5)
    assert caught.value.code is ErrorCode.TIMEOUT


async def test_refusals_of_the_policy(server: Client, open_session: Opener) -> None:
    session = await open_session()
    server.app[DENIED].update({REGISTER_HANDLER, SEND_TO_PATH})
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(MessagingForbiddenError) as caught:
            await session.messaging.add_request_handler("svc", lambda v, c: v)
        assert caught.value.code is ErrorCode.FORBIDDEN
        assert session.messaging.registrations == []  # not kept
        with pytest.raises(MessagingForbiddenError):
            await session.messaging.send_request_to_path("svc", 1)


async def test_a_registration_refused_after_a_reconnection(
    server: Client, open_session: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(server)
    session = await open_session(reconnect=True, reconnect_delay=0.01)
    states = record_states(session)

    async def reconnect() -> None:
        await registry.close_all()
        assert await states.get() is SessionState.RECONNECTING
        assert await states.get() is SessionState.CONNECTED
        resending = session.messaging._resending
        assert resending is not None
        await resending

    async with asyncio.timeout(TIMEOUT):
        registration = await session.messaging.add_request_handler(
            "svc", lambda v, c: "ok"
        )
        server.app[DENIED].add(REGISTER_HANDLER)
        await reconnect()
        assert any(
            "Could not register" in r.getMessage() and r.levelno == logging.WARNING
            for r in caplog.records
        )
        with pytest.raises(NoHandlerError):
            await registry.messaging.send_request_to_path("svc", 0)
        # kept: the next connection tries again
        assert session.messaging.registrations == [registration]
        server.app[DENIED].clear()
        await reconnect()
        assert await registry.messaging.send_request_to_path("svc", 0) == "ok"


# against a fake server: what the real one should never do
class Fake:
    """A websocket endpoint that sends a hello, then answers each frame by a script."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.after_hello: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda f: [
            {"op": "result", "id": f["id"], "data": {}}
        ]

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=[SUBPROTOCOL])
        await ws.prepare(request)
        hello = {"op": "hello", "version": 1, "session": "s", "connection": "c"}
        for frame in [hello, *self.after_hello]:
            await ws.send_str(json.dumps(frame))
        async for msg in ws:
            frame = json.loads(msg.data)
            self.received.put_nowait(frame)
            # sent back to back: the reader gets them before the caller resumes
            for reply in self.answer(frame):
                await ws.send_str(json.dumps(reply))
        return ws


@pytest.fixture
async def fake(aiohttp_client: AiohttpClient) -> tuple[Fake, Client]:
    endpoint = Fake()
    app = web.Application()
    app.router.add_get("/fake", endpoint.handler)
    return endpoint, await aiohttp_client(app)


async def test_a_request_for_no_handler_of_this_connection(
    fake: tuple[Fake, Client], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, client = fake
    request = {
        "op": "request",
        "path": "nope",
        "handler": "nope",
        "addressed": False,
        "data": None,
        "session": None,
        "properties": {},
    }
    endpoint.after_hello = [
        {"op": "response", "request": 99, "data": 1},  # of no send: ignored
        request,  # no conversation: ignored
        {**request, "conversation": 7},
    ]
    async with (
        asyncio.timeout(TIMEOUT),
        connect(client.make_url("/fake"), session=client.session) as session,
    ):
        answer = await endpoint.received.get()
        assert session.state is SessionState.CONNECTED
    assert answer["op"] == "answer"
    assert "id" not in answer
    assert answer["conversation"] == 7
    assert answer["error"] == NO_HANDLER_HERE
    assert "data" not in answer
    assert any("without a conversation" in r.getMessage() for r in caplog.records)


async def test_responses_right_behind_the_result_are_kept(
    fake: tuple[Fake, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, client = fake
    monkeypatch.setattr(messaging_client, "_GRACE", 0.1)

    def answer(frame: dict[str, Any]) -> list[dict[str, Any]]:
        rid = frame["id"]
        if frame["filter"] == "bad result":
            return [{"op": "result", "id": rid, "data": {"expected": "2"}}]
        return [
            {"op": "result", "id": rid, "data": {"expected": 3}},
            {"op": "response", "request": rid, "session": "a", "data": 1},
            {
                "op": "response",
                "request": rid,
                "session": "b",
                "error": {"code": "session_closed", "message": "gone"},
            },
            {"op": "response", "request": rid, "session": "c", "error": "no"},
            # and no done frame
        ]

    endpoint.answer = answer
    async with (
        asyncio.timeout(TIMEOUT),
        connect(
            client.make_url("/fake"), session=client.session, request_timeout=0.2
        ) as session,
    ):
        responses = await session.messaging.send_request_to_filter(
            "all", "p", None, timeout=0.1
        )
        assert responses.expected == 3
        # ended by the client's own deadline (request_timeout here)
        assert await responses.wait() == frozenset()
        got = [r async for r in responses]
        with pytest.raises(MessagingError) as caught:
            await session.messaging.send_request_to_filter("bad result", "p", None)
    assert caught.value.code is ErrorCode.INTERNAL
    assert [r.session for r in got] == ["a", "b", "c"]
    assert got[0].value == 1
    assert isinstance(got[1].error, SessionClosedError)
    assert isinstance(got[2].error, RejectedError)
    assert got[2].error.message == "no"
    assert session.messaging._filters == {}


async def test_a_cancelled_registration_is_removed(
    fake: tuple[Fake, Client],
) -> None:
    endpoint, client = fake
    endpoint.answer = lambda frame: (
        [] if frame["op"] == "add_handler" else [{"op": "result", "id": frame["id"]}]
    )
    async with (
        asyncio.timeout(TIMEOUT),
        connect(client.make_url("/fake"), session=client.session) as session,
    ):
        adding = asyncio.create_task(
            session.messaging.add_request_handler("svc", lambda v, c: v)
        )
        assert (await endpoint.received.get())["op"] == "add_handler"
        adding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await adding
        removing = await endpoint.received.get()
    assert removing["op"] == "remove_handler"
    assert removing["path"] == "svc"
    assert removing["addressed"] is False
    assert session.messaging.registrations == []
