"""Messaging on one node: every addressing mode and error, over real websockets."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import Action, SessionWSRegistry
from aiohttp_session_ws.messaging import (
    BadFilterError,
    FilterResponse,
    HandlerConflictError,
    MessagingTimeoutError,
    NoHandlerError,
    NoSuchSessionError,
    RejectedError,
    RequestContext,
    SessionClosedError,
)
from aiohttp_session_ws.messaging.paths import check_path, prefixes

from .apps import Client, build_app
from .wire import TIMEOUT, WireTab, allow_all, echo, open_tab

Tabs = Callable[..., Awaitable[WireTab]]


def roles_factory(request: web.Request) -> dict[str, Any]:
    """Properties from the query string: ``?user=alice&roles=a,b&team=x``."""
    query = request.query
    found: dict[str, Any] = {}
    if "user" in query:
        found["$Principal"] = query["user"]
    if "roles" in query:
        found["$Roles"] = query["roles"].split(",")
    if "team" in query:
        found["team"] = query["team"]
    return found


@pytest.fixture
async def node(aiohttp_client: AiohttpClient) -> Client:
    registry = SessionWSRegistry(authorize=allow_all, properties_factory=roles_factory)
    return await aiohttp_client(build_app(registry))


@pytest.fixture
def tab(aiohttp_client: AiohttpClient, node: Client) -> Tabs:
    """Opens a protocol tab as a new browser (its own session) or in ``login``'s."""

    async def open_one(login: Client | None = None, query: str = "") -> WireTab:
        browser = login if login is not None else await aiohttp_client(node.server)
        return await open_tab(browser, "/live" + query)

    return open_one


def registry_of(node: Client) -> SessionWSRegistry:
    from .apps import registry_of as of

    return of(node)


# paths
def test_paths_and_their_prefixes() -> None:
    assert prefixes("a/b/c") == ("a/b/c", "a/b", "a")
    assert prefixes("a") == ("a",)
    assert check_path("chat/rooms/42") == "chat/rooms/42"
    for bad in ["", "/a", "a/", "a//b", "a b", "a\nb", "x" * 257, "/".join("a" * 33)]:
        with pytest.raises(ValueError, match="message path"):
            check_path(bad)


async def test_the_most_specific_path_answers(node: Client, tab: Tabs) -> None:
    sender, general, specific = await tab(), await tab(), await tab()
    assert await general.ok("add_handler", path="shop") == {}
    assert await specific.ok("add_handler", path="shop/cart") == {}
    general.answer = lambda f: {"data": ["general", f["path"], f["handler"]]}
    specific.answer = lambda f: {"data": ["specific", f["path"], f["handler"]]}
    assert await sender.ok("send_to_path", path="shop/cart/items", data=1) == [
        "specific",
        "shop/cart/items",
        "shop/cart",
    ]
    assert await sender.ok("send_to_path", path="shop/cart", data=1) == [
        "specific",
        "shop/cart",
        "shop/cart",
    ]
    assert await sender.ok("send_to_path", path="shop/orders", data=1) == [
        "general",
        "shop/orders",
        "shop",
    ]
    error = await sender.call("send_to_path", path="shops", data=1)
    assert (error["op"], error["code"]) == ("error", "no_handler")


async def test_equal_handlers_take_turns(node: Client, tab: Tabs) -> None:
    sender, first, second = await tab(), await tab(), await tab()
    for handler, name in [(first, "first"), (second, "second")]:
        await handler.ok("add_handler", path="work")
        handler.answer = lambda f, name=name: {"data": name}
    answers = [await sender.ok("send_to_path", path="work") for _ in range(4)]
    assert sorted(answers) == ["first", "first", "second", "second"]


async def test_a_server_handler_gets_the_sender_and_the_properties_it_asked(
    node: Client, tab: Tabs
) -> None:
    registry = registry_of(node)
    seen: list[RequestContext] = []

    async def handler(value: Any, context: RequestContext) -> Any:
        seen.append(context)
        return {"got": value}

    await registry.messaging.add_request_handler(
        "svc", handler, session_properties=["$Principal", "team"]
    )
    everything: list[RequestContext] = []
    await registry.messaging.add_request_handler(
        "all", lambda v, c: everything.append(c), session_properties=["*F", "*U"]
    )
    sender = await tab(query="?user=alice&roles=admin,user&team=red")
    await registry.set_session_properties(
        await _id_of(registry, sender), {"lang": "en"}
    )
    assert await sender.ok("send_to_path", path="svc/x", data=[1, 2]) == {"got": [1, 2]}
    (context,) = seen
    assert (context.path, context.handler_path, context.sender) == (
        "svc/x",
        "svc",
        sender.handle,
    )
    assert dict(context.session_properties) == {"$Principal": "alice", "team": "red"}
    assert not context.addressed
    assert await sender.ok("send_to_path", path="all") is None
    props = everything[0].session_properties
    assert props["$SessionId"] == sender.handle
    assert props["$Roles"] == '"admin","user"'
    assert (props["lang"], props["team"]) == ("en", "red")
    # server code as the sender: no handle, no properties
    assert await registry.messaging.send_request_to_path("svc", 3) == {"got": 3}
    assert seen[-1].sender is None
    assert not seen[-1].session_properties


async def _id_of(registry: SessionWSRegistry, tab: WireTab) -> Any:
    (peer,) = [p for p in registry.peers if p.handle == tab.handle]
    return peer.session_ws_id


async def test_a_server_handler_may_be_sync_and_reject_with_a_message(
    node: Client, tab: Tabs, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(node)

    def refuse(value: Any, context: RequestContext) -> Any:
        if value == "bad":
            raise RejectedError("not that one")
        if value == "bug":
            raise KeyError("secret detail")
        return value * 2

    await registry.messaging.add_request_handler("calc", refuse)
    sender = await tab()
    assert await sender.ok("send_to_path", path="calc", data=21) == 42
    error = await sender.call("send_to_path", path="calc", data="bad")
    assert (error["code"], error["message"]) == ("rejected", "not that one")
    with caplog.at_level(logging.ERROR):
        error = await sender.call("send_to_path", path="calc", data="bug")
    assert (error["code"], error["message"]) == ("rejected", "the handler failed")
    assert "secret detail" not in error["message"]
    assert "secret detail" in caplog.text  # logged on the server, not sent
    with pytest.raises(RejectedError, match="not that one"):
        await registry.messaging.send_request_to_path("calc", "bad")


async def test_a_client_handler_rejects_with_a_message(node: Client, tab: Tabs) -> None:
    sender, handler = await tab(), await tab()
    await handler.ok("add_handler", path="vote")
    handler.answer = lambda f: {"error": "closed for today"}
    error = await sender.call("send_to_path", path="vote", data=1)
    assert (error["code"], error["message"]) == ("rejected", "closed for today")


async def test_a_session_request_goes_to_its_newest_handling_connection(
    aiohttp_client: AiohttpClient, node: Client, tab: Tabs
) -> None:
    sender = await tab()
    login = await aiohttp_client(node.server)
    older, newer, other_path = await tab(login), await tab(login), await tab(login)
    assert older.handle == newer.handle == other_path.handle
    for one, name in [(older, "older"), (newer, "newer")]:
        await one.ok("add_handler", path="notes", addressed=True)
        one.answer = lambda f, name=name: {"data": [name, f["addressed"], f["session"]]}
    await other_path.ok("add_handler", path="elsewhere", addressed=True)
    # a path handler does not take addressed requests
    await other_path.ok("add_handler", path="notes")
    answer = await sender.ok("send_to_session", path="notes/1", session=older.handle)
    assert answer == ["newer", True, sender.handle]
    await newer.close()
    answer = await sender.ok("send_to_session", path="notes", session=older.handle)
    assert answer[0] == "older"
    error = await sender.call("send_to_session", path="other", session=older.handle)
    assert error["code"] == "no_handler"
    error = await sender.call("send_to_session", path="notes", session="A" * 22)
    assert error["code"] == "no_such_session"
    registry = registry_of(node)
    assert await registry.messaging.send_request_to_session(
        "notes", older.handle, "x"
    ) == ["older", True, None]
    with pytest.raises(NoSuchSessionError):
        await registry.messaging.send_request_to_session("notes", "nobody", 1)
    with pytest.raises(NoHandlerError):
        await registry.messaging.send_request_to_session("other", older.handle, 1)


async def test_a_filter_send_reaches_each_matching_session_once(
    aiohttp_client: AiohttpClient, node: Client, tab: Tabs
) -> None:
    sender = await tab()
    alice = await aiohttp_client(node.server)
    alice_tabs = [await tab(alice, "?user=alice&roles=admin,user") for _ in range(2)]
    bob = await tab(query="?user=bob&roles=user")
    carol = await tab(query="?user=carol&roles=user&team=blue")
    quiet = await tab(query="?user=dave&roles=admin")
    for one in [*alice_tabs, bob, carol, quiet]:
        await one.ok("add_handler", path="poll", addressed=True)
    for one in alice_tabs:
        one.answer = lambda f: {"data": "alice"}
    bob.answer = lambda f: {"error": "no opinion"}
    carol.answer = lambda f: {"data": {"carol": f["data"]}}
    # dave never answers

    request_id = await sender.send(
        "send_to_filter", filter="hasRoles ['user']", path="poll", data=7
    )
    assert await sender.reply(request_id) == {
        "op": "result",
        "id": request_id,
        "data": {"expected": 3},
    }
    frames = [f async for f in sender.filter_frames(request_id)]
    done = frames.pop()
    assert done == {
        "op": "response",
        "request": request_id,
        "done": True,
        "unanswered": [],
    }
    by_session = {f["session"]: f for f in frames}
    assert len(frames) == len(by_session) == 3
    assert by_session[alice_tabs[0].handle]["data"] == "alice"
    assert by_session[bob.handle]["error"] == {
        "code": "rejected",
        "message": "no opinion",
    }
    assert by_session[carol.handle]["data"] == {"carol": 7}

    # the one that does not answer is named once the timeout passed
    started = time.monotonic()
    request_id = await sender.send(
        "send_to_filter",
        filter="$Principal in ['dave' 'carol']",
        path="poll",
        timeout=0.5,
    )
    assert (await sender.reply(request_id))["data"] == {"expected": 2}
    frames = [f async for f in sender.filter_frames(request_id)]
    assert frames[-1]["unanswered"] == [quiet.handle]
    assert [f["session"] for f in frames[:-1]] == [carol.handle]
    assert 0.4 < time.monotonic() - started < 3
    await quiet.next_request()  # it was asked


async def test_concurrent_filter_sends_never_mix(node: Client, tab: Tabs) -> None:
    sender = await tab()
    handlers = [await tab(query="?team=red") for _ in range(3)]
    for one in handlers:
        await one.ok("add_handler", path="count", addressed=True)
        one.answer = echo
    ids = [
        await sender.send(
            "send_to_filter", filter="team eq 'red'", path="count", data=n
        )
        for n in range(5)
    ]
    for n, request_id in enumerate(ids):
        assert (await sender.reply(request_id))["data"] == {"expected": 3}
        frames = [f async for f in sender.filter_frames(request_id)]
        assert [f["data"] for f in frames[:-1]] == [n, n, n]


async def test_server_filter_sends_iterate_or_call_back(
    node: Client, tab: Tabs
) -> None:
    registry = registry_of(node)
    handlers = [await tab(query=f"?team={team}") for team in ["a", "a", "b"]]
    for one in handlers:
        await one.ok("add_handler", path="hi", addressed=True)
        one.answer = lambda f: {"data": f["data"] + 1}
    responses = await registry.messaging.send_request_to_filter("team eq 'a'", "hi", 1)
    assert responses.expected == 2
    got = [r async for r in responses]
    assert [r.result() for r in got] == [2, 2]
    assert {r.session for r in got} == {handlers[0].handle, handlers[1].handle}
    assert responses.unanswered == frozenset()

    called: list[FilterResponse] = []

    async def on_response(response: FilterResponse) -> None:
        called.append(response)

    responses = await registry.messaging.send_request_to_filter(
        "all", "hi", 5, on_response=on_response
    )
    assert await asyncio.wait_for(responses.wait(), TIMEOUT) == frozenset()
    assert sorted(r.value for r in called) == [6, 6, 6]
    nobody = await registry.messaging.send_request_to_filter("team eq 'z'", "hi", 1)
    assert nobody.expected == 0
    assert [r async for r in nobody] == []
    with pytest.raises(BadFilterError) as caught:
        await registry.messaging.send_request_to_filter("team eq", "hi", 1)
    assert caught.value.position == 7


async def test_a_bad_filter_says_where(node: Client, tab: Tabs) -> None:
    sender = await tab()
    error = await sender.call("send_to_filter", filter="all and (team eq 'x'", path="p")
    assert error["code"] == "bad_filter"
    assert error["position"] == 8
    error = await sender.call("send_to_filter", filter="x" * 5000, path="p")
    assert error["code"] == "bad_filter"
    assert await sender.ok("ping") == {}


async def test_handler_conflicts(node: Client, tab: Tabs) -> None:
    handler = await tab()
    await handler.ok("add_handler", path="p")
    error = await handler.call("add_handler", path="p")
    assert error["code"] == "handler_conflict"
    await handler.ok("add_handler", path="p", addressed=True)  # another kind
    assert await handler.ok("remove_handler", path="p") == {"removed": True}
    assert await handler.ok("remove_handler", path="p") == {"removed": False}
    await handler.ok("add_handler", path="p")  # free again
    registry = registry_of(node)
    registration = await registry.messaging.add_request_handler("srv", echo_value)
    with pytest.raises(HandlerConflictError):
        await registry.messaging.add_request_handler("srv", echo_value)
    await registration.close()
    await registration.close()
    await registry.messaging.add_request_handler("srv", echo_value)


def echo_value(value: Any, context: RequestContext) -> Any:
    return value


async def test_a_removed_or_closed_handler_takes_no_more_requests(
    node: Client, tab: Tabs
) -> None:
    sender, handler = await tab(), await tab()
    await handler.ok("add_handler", path="gone")
    await handler.ok("add_handler", path="gone", addressed=True)
    handler.answer = echo
    assert await sender.ok("send_to_path", path="gone", data=1) == 1
    await handler.ok("remove_handler", path="gone")
    assert (await sender.call("send_to_path", path="gone"))["code"] == "no_handler"
    await handler.close()
    error = await sender.call("send_to_session", path="gone", session=handler.handle)
    assert error["code"] in ("no_handler", "no_such_session")
    assert registry_of(node).stats().message_handlers == 0


async def test_a_handler_that_does_not_answer_times_out(
    node: Client, tab: Tabs
) -> None:
    sender, handler = await tab(), await tab()
    await handler.ok("add_handler", path="slow")
    started = time.monotonic()
    error = await sender.call("send_to_path", path="slow", data=1, timeout=0.3)
    assert error["code"] == "timeout"
    assert 0.25 < time.monotonic() - started < 3
    late = await handler.next_request()
    # too late: the caller gave up; a late answer is dropped, and no error
    await handler.send_answer(late["conversation"], data=1)
    assert await handler.ok("ping") == {}  # frames are served in order
    assert handler.errors.empty()
    registry = registry_of(node)
    with pytest.raises(MessagingTimeoutError):
        await registry.messaging.send_request_to_path("slow", 1, timeout=0.2)


async def test_a_handling_tab_that_closes_fails_the_request_at_once(
    node: Client, tab: Tabs
) -> None:
    sender, handler = await tab(), await tab()
    await handler.ok("add_handler", path="flaky")
    started = time.monotonic()
    request_id = await sender.send("send_to_path", path="flaky", data=1, timeout=20)
    await handler.next_request()
    await handler.close()
    error = await sender.reply(request_id)
    assert error["code"] == "session_closed"
    assert time.monotonic() - started < 3
    registry = registry_of(node)
    other = await tab()
    await other.ok("add_handler", path="flaky2")
    waiting = asyncio.ensure_future(
        registry.messaging.send_request_to_path("flaky2", 1, timeout=20)
    )
    await other.next_request()
    await other.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(waiting, TIMEOUT)


async def test_an_answer_only_answers_its_own_conversation(
    node: Client, tab: Tabs
) -> None:
    sender, handler, intruder = await tab(), await tab(), await tab()
    await handler.ok("add_handler", path="mine")
    request_id = await sender.send("send_to_path", path="mine", data=1)
    frame = await handler.next_request()
    await intruder.send_answer(frame["conversation"], data=666)  # ignored
    assert await intruder.ok("ping") == {}
    malformed: list[dict[str, Any]] = [
        {"op": "answer"},
        {"op": "answer", "conversation": "x"},
        {"op": "answer", "conversation": 1, "error": 5},
        {"op": "answer", "conversation": 1, "extra": 5},
        {"op": "answer", "id": 3, "conversation": 1},
    ]
    for bad in malformed:
        await handler.ws.send_str(json.dumps(bad))
        refused = await asyncio.wait_for(handler.errors.get(), TIMEOUT)
        assert (refused["code"], refused["id"]) == ("bad_frame", None), bad
    await handler.send_answer(frame["conversation"], data="real")
    assert (await sender.reply(request_id))["data"] == "real"
    # an answer is not a request: no result frame, no task, no pending count
    assert registry_of(node).stats().pending_requests == 0


async def test_bad_paths_and_arguments_are_refused(node: Client, tab: Tabs) -> None:
    one = await tab()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("add_handler", {"path": "a//b"}),
        ("add_handler", {"path": "ok", "properties": [""]}),
        ("send_to_path", {"path": "/x"}),
        ("send_to_path", {"path": "x", "timeout": 0}),
        ("send_to_session", {"path": "x"}),
        ("send_to_filter", {"path": "x"}),
    ]
    for op, args in cases:
        assert (await one.call(op, **args))["code"] == "bad_frame", (op, args)
    # an oversized request is refused (too_large, without an id) and the
    # connection goes on
    await one.ws.send_str(
        json.dumps({"op": "send_to_path", "id": 99, "path": "x" * 70000})
    )
    assert await one.ok("ping") == {}
    assert registry_of(node).stats().errors["too_large"] == 1


async def test_the_policy_is_asked_about_every_client_send_and_registration(
    aiohttp_client: AiohttpClient,
) -> None:
    asked: list[Action] = []

    def policy(request: web.Request, action: Action) -> bool:
        asked.append(action)
        return action.path != "secret"

    registry = SessionWSRegistry(authorize=policy)
    node = await aiohttp_client(build_app(registry))
    one = await open_tab(node, "/live")
    await registry.messaging.add_request_handler("secret", echo_value)
    assert (await one.call("send_to_path", path="secret"))["code"] == "forbidden"
    assert (await one.call("add_handler", path="secret"))["code"] == "forbidden"
    await one.ok("add_handler", path="open", properties=["$Principal"])
    assert [(a.op, a.permission, a.path) for a in asked[-2:]] == [
        ("add_handler", "session_ws.register_handler", "open"),
        ("add_handler", "session_ws.view_session", "open"),
    ]
    await one.call("send_to_session", path="open", session="h")
    assert (asked[-1].permission, asked[-1].session) == (
        "session_ws.send_to_session",
        "h",
    )
    await one.call("send_to_filter", path="open", filter="all")
    assert (asked[-1].permission, asked[-1].filter) == (
        "session_ws.send_to_session",
        "all",
    )
    # server code is never asked
    count = len(asked)
    assert await registry.messaging.send_request_to_path("secret", 4) == 4
    assert len(asked) == count


async def test_the_default_policy_denies_client_messaging(
    aiohttp_client: AiohttpClient,
) -> None:
    node = await aiohttp_client(build_app(SessionWSRegistry()))
    one = await open_tab(node, "/live")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("add_handler", {"path": "p"}),
        ("send_to_path", {"path": "p"}),
        ("send_to_session", {"path": "p", "session": one.handle}),
        ("send_to_filter", {"path": "p", "filter": "all"}),
    ]
    for op, args in cases:
        assert (await one.call(op, **args))["code"] == "forbidden"


async def test_a_handler_value_json_cannot_carry_is_a_clear_rejection(
    node: Client, tab: Tabs, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(node)
    await registry.messaging.add_request_handler("odd", lambda v, c: {1, 2})
    sender = await tab()
    with caplog.at_level(logging.ERROR):
        error = await sender.call("send_to_path", path="odd")
    assert (error["code"], error["message"]) == ("rejected", "the handler failed")
    assert "JSON cannot carry" in caplog.text
    assert await sender.ok("ping") == {}
