"""Messaging of the browser client, session-ws.js, in a real headless Chromium.

Tabs of separate browser contexts are separate sessions; each registers
handlers, or sends requests to a path, to another tab's session handle and
to a filter, against a real aiohttp server whose code sends too
(``registry.messaging``). Playwright drives Debian's ``chromium``
(``executable_path``, no browser download); one browser serves the module,
so the async tests share the module's loop. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser

from aiohttp_session_ws import (
    Action,
    SessionWSRegistry,
)
from aiohttp_session_ws.messaging.errors import NoHandlerError, RejectedError

from . import browser_pages as pages
from .chromium import launched

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEST_PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>session-ws.js messaging test page</title>
<script type="module">
import * as client from "/session-ws/session-ws.js";
window.client = client;
window.seen = [];  // the requests the handlers got: [name, value, context]
window.hold = (promise) => { promise.catch(() => {}); return promise; };
</script>
"""

FORBIDDEN_PREFIX = "private/"
"""Paths the test policy refuses: everything else it allows."""


def allow_but_private(request: web.Request, action: Action) -> bool:
    """The test policy: messaging anywhere but below ``private/``."""
    return not (action.path or "").startswith(FORBIDDEN_PREFIX)


Server = pages.Server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    """The test app on a free port."""
    registry = SessionWSRegistry(authorize=allow_but_private)
    async with pages.running(Server, registry, TEST_PAGE) as running:
        yield running


class Tab(pages.Tab):
    """A page of a fresh browser context: a session of its own."""

    async def caught(self, expression: str) -> dict[str, Any]:
        """What a promise of the page gave: its value, or the error's fields."""
        result: dict[str, Any] = await self.run(
            f"""async () => {{
              try {{
                return {{resolved: await (async () => {expression})()}};
              }} catch (e) {{
                return {{
                  name: e.name, code: e.code ?? null, message: e.message,
                  serverMessage: e.serverMessage ?? null,
                  position: e.position ?? null,
                  messaging: e instanceof client.MessagingError,
                  protocol: e instanceof client.ProtocolError,
                  rejected: e instanceof client.RejectedError,
                  lost: e instanceof client.ConnectionLostError,
                }};
              }}
            }}"""
        )
        return result


@pytest_asyncio.fixture(loop_scope="module")
async def tabs(browser: Browser, server: Server) -> AsyncIterator[list[Tab]]:
    """Two tabs of two sessions on the test app, not connected yet."""
    async with pages.opened_tabs(browser, server, Tab) as opened:
        yield opened


REGISTER = """async () => {
  const record = (name, result) => (value, context) => {
    seen.push([name, value, context]);
    return result(value, context);
  };
  window.regs = {
    double: await s.messaging.addRequestHandler(
      "calc/double", record("double", (v) => v * 2),
      {sessionProperties: ["$SessionId"]}),
    stream: await s.messaging.addStreamHandler(
      "calc", record("stream", (v, c) => ({to: s.sessionId, got: v, at: c.path}))),
  };
  return [regs.double.path, regs.double.addressed, regs.stream.addressed];
}"""
"""Register a path handler (calc/double) and an addressed one (calc and below)."""


async def test_requests_to_a_path_a_session_and_a_filter_come_back(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect()
    sender_handle = await sender.connect()
    assert await handler.run(REGISTER) == ["calc/double", False, True]
    messaging = server.registry.messaging

    # server code: to the path, then to the tab's session
    assert await messaging.send_request_to_path("calc/double", 21) == 42
    answer = await messaging.send_request_to_session("calc/x/y", handle, "hi")
    assert answer == {"to": handle, "got": "hi", "at": "calc/x/y"}
    contexts = await handler.run("() => seen.map(([n, v, c]) => [n, v, c])")
    assert contexts == [
        [
            "double",
            21,
            {
                "path": "calc/double",
                "handlerPath": "calc/double",
                "sender": None,
                "sessionProperties": {},
                "addressed": False,
            },
        ],
        [
            "stream",
            "hi",
            {
                "path": "calc/x/y",
                "handlerPath": "calc",
                "sender": None,
                "sessionProperties": {},
                "addressed": True,
            },
        ],
    ]

    # another tab: to the path (its properties ride along), and to the session
    assert (
        await sender.run("() => s.messaging.sendRequestToPath('calc/double', 5)") == 10
    )
    context = await handler.run("() => seen.at(-1)[2]")
    assert context["sender"] == sender_handle
    assert context["sessionProperties"] == {"$SessionId": sender_handle}
    answer = await sender.run(
        "(h) => s.messaging.sendRequestToSession('calc/z', h, [1, 2], {timeout: 2000})",
        handle,
    )
    assert answer == {"to": handle, "got": [1, 2], "at": "calc/z"}

    # to a filter: the count, then each response as it comes, then the end
    got = await sender.run(
        """async (h) => {
          const heard = [];
          const responses = await s.messaging.sendRequestToFilter(
            `$SessionId is '${h}'`, "calc/f", {n: 1},
            {onResponse: (r) => heard.push(r.session)});
          const expected = responses.expected;
          const items = [];
          for await (const r of responses) items.push([r.session, r.value, r.error]);
          return {expected, items, heard, done: await responses.done,
                  unanswered: responses.unanswered, received: responses.received};
        }""",
        handle,
    )
    assert got == {
        "expected": 1,
        "items": [[handle, {"to": handle, "got": {"n": 1}, "at": "calc/f"}, None]],
        "heard": [handle],
        "done": {"unanswered": []},
        "unanswered": [],
        "received": 1,
    }

    # server code to a filter: only sessions with an addressed handler count
    responses = await messaging.send_request_to_filter("all", "calc/all", "everyone")
    assert responses.expected == 1
    items = [r async for r in responses]
    assert [(r.session, r.value, r.error) for r in items] == [
        (handle, {"to": handle, "got": "everyone", "at": "calc/all"}, None)
    ]

    # a filter nobody matches is over at once
    got = await sender.run(
        """async () => {
          const r = await s.messaging.sendRequestToFilter(
            "$Principal is 'x'", "calc", 1);
          const items = [];
          for await (const item of r) items.push(item);
          return [r.expected, items, await r.done];
        }"""
    )
    assert got == [0, [], {"unanswered": []}]


async def test_a_rejected_error_goes_back_with_its_message(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect()
    await sender.connect()
    await handler.run(
        """async () => {
          await s.messaging.addRequestHandler("no/thanks", () => {
            throw new client.RejectedError("not today");
          });
          await s.messaging.addRequestHandler("broken", async () => {
            throw new Error("a bug");  // the caller is not told what
          });
          await s.messaging.addStreamHandler("no", async (v) => {
            if (v === "no") throw new client.RejectedError("said no");
            return "yes";
          });
        }"""
    )
    error = await sender.caught("s.messaging.sendRequestToPath('no/thanks', 1)")
    assert error["rejected"]
    assert error["messaging"]
    assert error["protocol"]
    assert (error["name"], error["code"], error["serverMessage"]) == (
        "RejectedError",
        "rejected",
        "not today",
    )
    error = await sender.caught("s.messaging.sendRequestToPath('broken', 1)")
    assert (error["code"], error["serverMessage"]) == ("rejected", "the handler failed")
    with pytest.raises(RejectedError, match="not today"):
        await server.registry.messaging.send_request_to_path("no/thanks", None)

    # in a filter send, each responder's error is its own
    got = await sender.run(
        """async (h) => {
          const responses = await s.messaging.sendRequestToFilter(
            `$SessionId is '${h}'`, "no/x", "no");
          const items = [];
          for await (const r of responses) {
            const e = r.error;
            items.push([r.session, r.value, e?.name, e?.code, e?.serverMessage,
                        e instanceof client.RejectedError]);
          }
          return items;
        }""",
        handle,
    )
    assert got == [[handle, None, "RejectedError", "rejected", "said no", True]]


async def test_messaging_errors_carry_their_code(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect()
    await sender.connect()
    await handler.run("() => s.messaging.addRequestHandler('taken', () => 1)")

    error = await sender.caught("s.messaging.sendRequestToPath('nobody/home', 1)")
    assert (error["messaging"], error["code"]) == (True, "no_handler")
    error = await sender.caught(
        "s.messaging.sendRequestToSession('taken', 'nobody', 1)"
    )
    assert (error["messaging"], error["code"]) == (True, "no_such_session")
    error = await sender.caught(
        "s.messaging.sendRequestToSession('taken', " + repr(handle) + ", 1)"
    )  # the session has no addressed handler there
    assert (error["messaging"], error["code"]) == (True, "no_handler")
    error = await sender.caught("s.messaging.sendRequestToFilter('all and', 'x', 1)")
    assert (error["messaging"], error["code"], error["position"]) == (
        True,
        "bad_filter",
        7,
    )
    error = await sender.caught("s.messaging.sendRequestToPath('private/x', 1)")
    assert (error["messaging"], error["code"]) == (True, "forbidden")
    error = await sender.caught("s.messaging.addRequestHandler('private/y', () => 1)")
    assert (error["messaging"], error["code"]) == (True, "forbidden")
    error = await sender.caught("s.messaging.sendRequestToPath('a//b', 1)")
    assert (error["messaging"], error["code"]) == (True, "bad_frame")

    # one registration per (path, addressed): the second is a conflict
    error = await handler.caught("s.messaging.addRequestHandler('taken', () => 2)")
    assert (error["messaging"], error["code"]) == (True, "handler_conflict")
    assert await handler.run(
        "() => s.messaging.addStreamHandler('taken', () => 3).then((r) => r.addressed)"
    )

    # what cannot go out is refused before it is sent
    for expression, name in [
        ("s.messaging.addRequestHandler('x', 'not a function')", "TypeError"),
        ("s.messaging.addRequestHandler(1, () => 1)", "TypeError"),
        (
            "s.messaging.addRequestHandler('x', () => 1, {sessionProps: []})",
            "TypeError",
        ),
        ("s.messaging.addStreamHandler('x', () => 1, {addressed: 'yes'})", "TypeError"),
        ("s.messaging.sendRequestToPath('x', 1, {timeout: 0})", "RangeError"),
        ("s.messaging.sendRequestToPath('x', 10n)", "TypeError"),
        ("s.messaging.sendRequestToSession('x', null, 1)", "TypeError"),
        (
            "s.messaging.sendRequestToFilter('all', 'x', 1, {onResponse: 1})",
            "TypeError",
        ),
    ]:
        error = await sender.caught(expression)
        assert error["name"] == name, expression

    # a handler that answers nothing JSON can carry fails; the caller is told
    await handler.run("() => s.messaging.addRequestHandler('odd', () => 10n)")
    error = await sender.caught("s.messaging.sendRequestToPath('odd', 1)")
    assert (error["code"], error["serverMessage"]) == ("rejected", "the handler failed")


async def test_a_closed_registration_gets_no_more_requests(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    await handler.connect()
    await sender.connect()
    await handler.run(
        "async () => {"
        " window.reg = await s.messaging.addRequestHandler('x', () => 1); }"
    )
    assert await sender.run("() => s.messaging.sendRequestToPath('x', 0)") == 1
    assert await handler.run("async () => [await reg.close(), reg.closed]") == [
        None,
        True,
    ]
    await handler.run("() => reg.close()")  # again: nothing
    error = await sender.caught("s.messaging.sendRequestToPath('x', 0)")
    assert error["code"] == "no_handler"
    with pytest.raises(NoHandlerError):
        await server.registry.messaging.send_request_to_path("x", 0)
    # the path is free again
    await handler.run("() => s.messaging.addRequestHandler('x', () => 2)")
    assert await sender.run("() => s.messaging.sendRequestToPath('x', 0)") == 2


async def test_sessions_that_do_not_answer_in_time_are_unanswered(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect()
    await sender.connect()
    await handler.run(
        "() => s.messaging.addStreamHandler('slow', () => new Promise(() => {}))"
    )
    got = await sender.run(
        """async (h) => {
          const responses = await s.messaging.sendRequestToFilter(
            `$SessionId is '${h}'`, "slow", 1, {timeout: 300});
          const items = [];
          for await (const r of responses) items.push(r);
          return [responses.expected, items, await responses.done];
        }""",
        handle,
    )
    assert got == [1, [], {"unanswered": [handle]}]
    error = await sender.caught(
        f"s.messaging.sendRequestToSession('slow', {handle!r}, 1, {{timeout: 300}})"
    )
    assert (error["messaging"], error["code"]) == (True, "timeout")


async def test_registrations_are_sent_again_after_a_reconnect(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect(
        reconnect=True, reconnectDelay=10, reconnectMaxDelay=50
    )
    await sender.connect()
    await handler.run(REGISTER)
    old = await handler.run("() => s.connectionId")

    assert await server.registry.close_all() == 2  # 1001: both tabs' connections
    await handler.until(f"s.state === 'connected' && s.connectionId !== {old!r}")
    assert await handler.run("() => s.sessionId") == handle
    # the client sends its add_handler right after the new hello: poll briefly
    for _ in range(50):
        try:
            answer = await server.registry.messaging.send_request_to_path(
                "calc/double", 4, timeout=1.0
            )
            break
        except NoHandlerError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the path handler was not registered again")
    assert answer == 8
    answer = await server.registry.messaging.send_request_to_session(
        "calc", handle, "again"
    )
    assert answer == {"to": handle, "got": "again", "at": "calc"}
    # the sender (no reconnect) is closed; a new connection sends to the tab
    await sender.connect()
    assert (
        await sender.run("() => s.messaging.sendRequestToPath('calc/double', 1)") == 2
    )


async def test_a_filter_send_ends_when_its_connection_is_lost(
    tabs: list[Tab], server: Server
) -> None:
    handler, sender = tabs
    handle = await handler.connect()
    await sender.connect()
    await handler.run(
        "() => s.messaging.addStreamHandler('slow', () => new Promise(() => {}))"
    )
    await sender.run(
        """async (h) => {
          window.responses = await s.messaging.sendRequestToFilter(
            `$SessionId is '${h}'`, "slow", 1, {timeout: 4000});
          window.next = hold(responses.next());
          hold(responses.done);
        }""",
        handle,
    )
    await sender.run("() => s.close()")
    for expression in ("next", "responses.done"):
        error = await sender.caught(expression)
        assert error["lost"], expression
