"""The demo page in a real headless Chromium: tabs of one session, 375 px wide.

Two pages of one browser context share the cookie, so they are two tabs of
one session; on two demo nodes that share a redis-server and the cookie key
they are one session across the cluster. Two browser contexts are two
users, who log in and send each other requests, and follow each other in
the activity feed (the event bus), also across a lost connection. Debian's
``chromium`` is driven by playwright with ``executable_path`` (no browser
download); ``make test`` installs both. One browser serves the module, so
the tests share its loop.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from aiohttp_session_ws import REGISTRY_APP_KEY, SessionWSRegistry
from demo import make_app
from demo.key import random_key

from .chromium import launched
from .redis_server import RedisServer

TIMEOUT_MS = 5_000

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with launched() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A phone-sized context: its pages are tabs of one session."""
    context = await browser.new_context(viewport={"width": 375, "height": 740})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        yield context
    finally:
        await context.close()


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, port: int | None = None
) -> AsyncIterator[TestServer]:
    """``app`` on a free port of 127.0.0.1 (or on ``port``)."""
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def node() -> AsyncIterator[TestServer]:
    """One demo node on the memory backend."""
    async with serving(make_app(random_key())) as server:
        yield server


def registry_of(server: TestServer) -> SessionWSRegistry:
    return server.app[REGISTRY_APP_KEY]


async def open_tab(context: BrowserContext, server: TestServer) -> Page:
    """A tab of the context's session, on ``server``, once it is connected."""
    page = await context.new_page()
    await page.goto(str(server.make_url("/")))
    await expect(page.locator("#state")).to_have_text("Connected")
    return page


async def push(page: Page, text: str) -> None:
    """Type ``text`` into the page's push box and send it."""
    await page.locator("#text").fill(text)
    await page.locator("#push button").click()


async def test_two_tabs_at_375px_share_pushes_and_tell_which_button_closed_them(
    context: BrowserContext, node: TestServer
) -> None:
    first = await open_tab(context, node)
    second = await open_tab(context, node)  # the same cookie: the same session
    for page in (first, second):
        await expect(page.locator("#connections")).to_have_text("2")

    # which node and backend serve the page
    assert await first.locator("#node").text_content() == f"127.0.0.1:{node.port}"
    assert "memory" in (await first.locator("#backend").text_content() or "")

    # the session's public handle, never the secret session ws id
    [session_ws_id] = list(registry_of(node))
    handle = registry_of(node).public_handle(session_ws_id)
    for page in (first, second):
        await expect(page.locator("#session")).to_have_text(handle)
        assert str(session_ws_id) not in await page.content()
    connections = [
        await p.locator("#connection").text_content() for p in (first, second)
    ]
    assert connections[0] != connections[1]

    # the ids fit the narrow screen: a few lines at most, not one a character
    for selector in ("#session", "#connection"):
        box = await first.locator(selector).bounding_box()
        line = await first.locator(selector).evaluate(
            "e => parseFloat(getComputedStyle(e).lineHeight) || 20"
        )
        assert box is not None
        assert box["height"] <= 3 * line
    page_width = await first.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 375  # nothing sticks out sideways

    # a push typed in one tab shows in both, as text
    await push(first, "hello <b>tabs</b>")
    for page in (first, second):
        await expect(page.locator("#pushes li").first).to_have_text("hello <b>tabs</b>")
    await expect(first.locator("#result")).to_have_text(
        "/push: 200 Pushed to 2 connections."
    )
    await expect(first.locator("#text")).to_have_value("")
    await push(second, "and back")
    await expect(first.locator("#pushes li").first).to_have_text("and back")

    # one tab closes: the other's count follows
    await second.close()
    await expect(first.locator("#connections")).to_have_text("1")
    second = await open_tab(context, node)
    await expect(first.locator("#connections")).to_have_text("2")

    await first.locator("#logout").click()
    await expect(first.locator("#state")).to_contain_text("logout in this tab")
    await expect(second.locator("#state")).to_contain_text(
        "login, logout or reset in another tab"
    )
    await expect(first.locator("#result")).to_contain_text("2 websockets")
    await expect(second.locator("#reconnect")).to_be_enabled()
    for page in (first, second):
        await expect(page.locator("#session")).to_have_text("\u2013")


async def test_a_reset_closes_the_tab_and_a_reconnect_gets_a_new_handle(
    context: BrowserContext, node: TestServer
) -> None:
    page = await open_tab(context, node)
    old = await page.locator("#session").text_content()
    await page.locator("#reset").click()
    await expect(page.locator("#state")).to_have_text(
        "Closed, code 1000 (closed by the server: reset in this tab)"
    )
    await expect(page.locator("#result")).to_have_text(
        "/reset: 200 New session ws id. Closing 1 websocket of the old id."
    )
    await page.locator("#reconnect").click()
    await expect(page.locator("#state")).to_have_text("Connected")
    await expect(page.locator("#session")).not_to_have_text(old or "")
    await expect(page.locator("#connections")).to_have_text("1")


async def test_a_server_shutdown_is_told_and_the_tab_reconnects(
    context: BrowserContext, node: TestServer
) -> None:
    page = await open_tab(context, node)
    old = await page.locator("#connection").text_content()
    await page.evaluate(
        """() => {
          window.seen = [];
          new MutationObserver(() => seen.push(document.title)).observe(
            document.getElementById("state"), {childList: true});
        }"""
    )
    assert await registry_of(node).close_all() == 1  # 1001, as on shutdown
    await expect(page.locator("#connection")).not_to_have_text(old or "")
    await expect(page.locator("#state")).to_have_text("Connected")
    seen = await page.evaluate("seen")
    assert seen[0] == (  # the server's reason, when it gives one
        "Reconnecting\u2026 the connection closed, code 1001 (Server shutdown) "
        f"\u2013 127.0.0.1:{node.port}"
    )
    assert seen[-1] == f"Connected \u2013 127.0.0.1:{node.port}"


async def test_two_tabs_of_one_session_on_two_nodes_see_each_others_pushes(
    context: BrowserContext, redis_server: RedisServer
) -> None:
    """The issue's acceptance: one session, a tab on each node of a cluster."""
    key = random_key()  # the nodes share it, so they read each other's cookie
    async with (
        serving(make_app(key, redis_url=redis_server.url)) as one,
        serving(make_app(key, redis_url=redis_server.url)) as other,
    ):
        first = await open_tab(context, one)
        second = await open_tab(context, other)  # the cookie of 127.0.0.1
        assert await first.locator("#node").text_content() == f"127.0.0.1:{one.port}"
        assert await second.locator("#node").text_content() == (
            f"127.0.0.1:{other.port}"
        )
        for page in (first, second):
            await expect(page.locator("#backend")).to_contain_text("Redis at")
            await expect(page.locator("#connections")).to_have_text("2")
        handle = await first.locator("#session").text_content()
        await expect(second.locator("#session")).to_have_text(handle or "")

        await push(first, "typed on the first node")
        for page in (first, second):
            await expect(page.locator("#pushes li")).to_have_text(
                ["typed on the first node"]
            )
        await push(second, "typed on the second node")
        for page in (first, second):
            await expect(page.locator("#pushes li")).to_have_text(
                ["typed on the second node", "typed on the first node"]
            )


@contextlib.asynccontextmanager
async def user_tab(browser: Browser, server: TestServer) -> AsyncIterator[Page]:
    """A tab of a browser context of its own (a user's), connected to ``server``."""
    context = await browser.new_context(viewport={"width": 375, "height": 740})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield await open_tab(context, server)
    finally:
        await context.close()


async def log_in(page: Page, user: str, roles: str) -> str:
    """Log the tab in as ``user``; return its new public handle."""
    old = await page.locator("#session").text_content()
    await page.locator("#login-user").select_option(user)
    await page.locator("#login button").click()
    await expect(page.locator("#user")).to_have_text(f"{user} (roles {roles})")
    await expect(page.locator("#state")).to_have_text("Connected")
    await expect(page.locator("#answering")).to_have_text(
        "Answering requests sent to the path demo/echo and to this session on "
        f"demo/echo, as {user}."
    )
    handle = await page.locator("#session").text_content()
    assert handle
    assert handle != old  # the login's new id
    return handle


async def send(page: Page, kind: str, message: str, target: str = "") -> None:
    """Send a request from the page's messaging box."""
    await page.locator("#kind").select_option(kind)
    await page.locator("#target").fill(target)
    await page.locator("#message").fill(message)
    await page.locator("#send button").click()


async def test_two_users_on_two_nodes_send_requests_by_path_session_and_filter(
    browser: Browser, redis_server: RedisServer
) -> None:
    key = random_key()
    async with (
        serving(make_app(key, redis_url=redis_server.url)) as one,
        serving(make_app(key, redis_url=redis_server.url)) as other,
        user_tab(browser, one) as alice,
        user_tab(browser, other) as bob,
    ):
        on_one, on_other = f"127.0.0.1:{one.port}", f"127.0.0.1:{other.port}"
        responses = {page: page.locator("#responses li") for page in (alice, bob)}

        # anonymous: nothing to answer, and the policy refuses to send
        await expect(bob.locator("#user")).to_have_text(
            "nobody: log in to send and answer requests"
        )
        await send(bob, "path", "anyone?")
        await expect(responses[bob]).to_have_count(2)
        await expect(responses[bob].nth(1)).to_contain_text("Error: forbidden: ")

        alice_handle = await log_in(alice, "alice", "admin, user")
        bob_handle = await log_in(bob, "bob", "user")

        # by path: bob stops answering it, so alice's tab on the other node does
        await bob.locator("#answer").uncheck()
        await expect(bob.locator("#answering")).to_have_text(
            "Answering requests sent to this session on demo/echo, as bob."
        )
        await send(bob, "path", "hello alice")
        await expect(responses[bob]).to_have_text(
            [
                'To the path demo/echo: "hello alice"',
                f'alice on {on_one} echoed "hello alice"',
            ]
        )
        await expect(alice.locator("#handled li").first).to_have_text(
            'bob asked the path demo/echo: "hello alice"'
        )

        # by session: alice to bob's handle, across the nodes
        await send(alice, "session", "hi bob", bob_handle)
        await expect(responses[alice]).to_have_text(
            [
                f'To session {bob_handle} on demo/echo: "hi bob"',
                f'bob on {on_other} echoed "hi bob"',
            ]
        )
        await expect(bob.locator("#handled li").first).to_have_text(
            'alice asked this session: "hi bob"'
        )

        # alice's handler throws RejectedError: its message comes back
        await alice.locator("#refuse").check()
        await send(bob, "session", "please", alice_handle)
        await expect(responses[bob].nth(1)).to_have_text(
            "Error: rejected: alice refuses requests"
        )

        # by filter: every user's session, each response as it comes
        await send(bob, "filter", "all of you", "hasRoles ['user']")
        await expect(responses[bob]).to_have_count(5)
        lines = await responses[bob].all_text_contents()
        assert lines[:2] == [
            "To the filter hasRoles ['user'] on demo/echo: \"all of you\"",
            "Expected 2 responses",
        ]
        assert sorted(lines[2:4]) == sorted(
            [
                f"{alice_handle}: Error: rejected: alice refuses requests",
                f'{bob_handle}: bob on {on_other} echoed "all of you"',
            ]
        )
        assert lines[4] == "Unanswered: none"
        await alice.locator("#refuse").uncheck()
        await send(alice, "filter", "just bob", "$Principal is 'bob'")
        await expect(responses[alice]).to_have_text(
            [
                "To the filter $Principal is 'bob' on demo/echo: \"just bob\"",
                "Expected 1 response",
                f'{bob_handle}: bob on {on_other} echoed "just bob"',
                "Unanswered: none",
            ]
        )

        # a filter that does not parse says where
        await send(alice, "filter", "x", "hasRoles")
        await expect(responses[alice].nth(1)).to_contain_text("Error: bad_filter: ")
        await expect(responses[alice].nth(1)).to_contain_text("(at character 8)")

        # bob answers the path again: his own node's handler comes first
        await bob.locator("#answer").check()
        await expect(bob.locator("#answering")).to_contain_text("to the path")
        await send(bob, "path", "me?")
        await expect(responses[bob].nth(1)).to_have_text(
            f'bob on {on_other} echoed "me?"'
        )


def document(page: Page, index: int) -> tuple[Locator, Locator, Locator]:
    """The state line, the Edit button and the Release button of a document."""
    return (
        page.locator(f"#doc-{index}-state"),
        page.locator(f"#doc-{index}-edit"),
        page.locator(f"#doc-{index}-release"),
    )


def waiting_for(user: str, handle: str) -> re.Pattern[str]:
    """The state line of the first in line: its place, or the line's length
    when the backend does not tell the queue."""
    return re.compile(
        re.escape(f"Waiting for {user} (session {handle}) to finish. ")
        + r"(You are number 1 of 1 in line\.|Waiting in line: 1 session\.)$"
    )


def token_of(text: str | None) -> int:
    """The fencing token a holder's state line shows."""
    found = re.search(r"fencing token (\d+)\)", text or "")
    assert found, text
    return int(found[1])


async def test_two_users_take_turns_editing_a_document(
    browser: Browser, node: TestServer
) -> None:
    async with user_tab(browser, node) as alice, user_tab(browser, node) as bob:
        state, edit, _ = document(alice, 0)
        await expect(state).to_have_text("Log in to edit.")
        await expect(edit).to_be_disabled()
        alice_handle = await log_in(alice, "alice", "admin, user")
        await log_in(bob, "bob", "user")
        for page in (alice, bob):
            await expect(document(page, 0)[0]).to_have_text("Free: nobody edits it.")
        assert "UNLOCK_ON_CONNECTION_LOSS" in (
            await alice.locator("#editing-hint").text_content() or ""
        )

        # alice edits: her tab holds the lock, bob's tab names her
        a_state, a_edit, a_release = document(alice, 0)
        await a_edit.click()
        await expect(a_state).to_contain_text(
            "You are editing docs/readme in this tab (fencing token "
        )
        await expect(a_release).to_be_visible()
        await expect(a_edit).to_be_hidden()
        first_token = token_of(await a_state.text_content())
        b_state, b_edit, b_release = document(bob, 0)
        await expect(b_state).to_have_text(
            f"Being edited by alice (session {alice_handle}). Nobody waits."
        )

        # bob waits in line; alice's tab sees him wait
        await b_edit.click()
        await expect(b_state).to_have_text(waiting_for("alice", alice_handle))
        await expect(b_edit).to_have_text("Stop waiting")
        await expect(a_state).to_contain_text("1 waiting.")

        # alice releases: bob's tab holds it, with a larger token
        await a_release.click()
        await expect(b_state).to_contain_text(
            "You are editing docs/readme in this tab (fencing token "
        )
        assert token_of(await b_state.text_content()) > first_token
        await expect(b_release).to_be_visible()
        await expect(a_state).to_contain_text("Being edited by bob (session ")

        # alice waits for it, then stops waiting: the line is empty again
        await a_edit.click()
        await expect(b_state).to_contain_text("1 waiting.")
        await expect(a_edit).to_have_text("Stop waiting")
        await a_edit.click()
        await expect(a_state).to_contain_text("You stopped waiting.")
        await expect(b_state).to_contain_text("Nobody waits.")

        # alice waits again; bob logs out: it is handed on to alice
        await a_edit.click()
        await expect(b_state).to_contain_text("1 waiting.")
        await bob.locator("#logout").click()
        await expect(a_state).to_contain_text(
            "You are editing docs/readme in this tab (fencing token "
        )
        await expect(b_state).to_contain_text("This tab lost the edit lock: ")


async def test_closing_the_holders_tab_hands_the_lock_on_across_two_nodes(
    browser: Browser, redis_server: RedisServer
) -> None:
    key = random_key()
    async with (
        serving(make_app(key, redis_url=redis_server.url)) as one,
        serving(make_app(key, redis_url=redis_server.url)) as other,
        user_tab(browser, other) as bob,
    ):
        await log_in(bob, "bob", "user")
        b_state, b_edit, _ = document(bob, 1)
        async with user_tab(browser, one) as alice:
            alice_handle = await log_in(alice, "alice", "admin, user")
            a_state, a_edit, _ = document(alice, 1)
            await a_edit.click()
            await expect(a_state).to_contain_text(
                "You are editing docs/plan in this tab (fencing token "
            )
            token = token_of(await a_state.text_content())
            await expect(b_state).to_have_text(
                f"Being edited by alice (session {alice_handle}). Nobody waits."
            )
            await b_edit.click()
            await expect(b_state).to_have_text(waiting_for("alice", alice_handle))
            await expect(a_state).to_contain_text("1 waiting.")
            # the other documents stay free
            await expect(document(bob, 0)[0]).to_have_text("Free: nobody edits it.")
        # alice's tab closed: its connection-scoped lock goes to bob, on the other node
        await expect(b_state).to_contain_text(
            "You are editing docs/plan in this tab (fencing token "
        )
        assert token_of(await b_state.text_content()) > token
        await expect(bob.locator("#node")).to_have_text(f"127.0.0.1:{other.port}")


RECONNECT_MS = 20_000
"""Milliseconds a tab may take to reconnect to a node that came back: its
backoff grew while the node was away."""

FOLLOWING = "Following the activity feed: demo/* and session_ws/session/*."
REPLAYED = " (replayed: missed while disconnected)"


def feed_line(page: Page, text: str) -> Locator:
    """The activity feed's line that holds ``text``."""
    return page.locator("#feed li", has_text=text)


async def say(page: Page, text: str) -> None:
    """Say ``text`` in the activity feed."""
    await page.locator("#said").fill(text)
    await page.locator("#say button").click()
    await expect(page.locator("#said")).to_have_value("")


async def test_a_tab_back_from_a_lost_connection_shows_what_it_missed_replayed(
    browser: Browser, redis_server: RedisServer
) -> None:
    """Alice's node goes away and comes back; meanwhile bob acts on the other."""
    key = random_key()
    async with (
        serving(make_app(key, redis_url=redis_server.url)) as other,
        user_tab(browser, other) as bob,
        contextlib.AsyncExitStack() as stack,
    ):
        one = await stack.enter_async_context(
            serving(make_app(key, redis_url=redis_server.url))
        )
        port = one.port
        alice = await stack.enter_async_context(user_tab(browser, one))
        await expect(alice.locator("#feed-state")).to_have_text(
            "Log in to follow the activity feed."
        )
        await log_in(alice, "alice", "admin, user")
        await expect(alice.locator("#feed-state")).to_have_text(FOLLOWING)
        bob_handle = await log_in(bob, "bob", "user")

        # live: bob's login and session, and what he says
        await expect(feed_line(alice, "bob logged in")).to_have_text("bob logged in")
        # (the principal, when the node knew it as the session started)
        await expect(feed_line(alice, f"session {bob_handle} started")).to_be_visible()
        await say(bob, "hello alice")
        await expect(feed_line(alice, "hello alice")).to_have_text(
            'bob says "hello alice"'
        )
        await expect(feed_line(alice, "hello alice")).not_to_have_class("replayed")

        # alice's node goes away: her tab keeps trying
        await one.close()
        await expect(alice.locator("#state")).to_contain_text("Reconnecting")
        await expect(alice.locator("#feed-state")).to_contain_text(
            "Reconnecting: the events meanwhile come once the connection is back"
        )
        # meanwhile bob, on the other node, says something and edits a document
        await say(bob, "while you were away")
        b_state, b_edit, _ = document(bob, 0)
        await b_edit.click()
        await expect(b_state).to_contain_text("You are editing docs/readme")
        token = token_of(await b_state.text_content())
        await expect(feed_line(bob, "bob edits docs/readme")).to_be_visible()

        # the node is back on its port: the tab reconnects and replays
        await stack.enter_async_context(
            serving(make_app(key, redis_url=redis_server.url), port)
        )
        await expect(alice.locator("#state")).to_have_text(
            "Connected", timeout=RECONNECT_MS
        )
        away = feed_line(alice, "while you were away")
        await expect(away).to_have_text('bob says "while you were away"' + REPLAYED)
        await expect(away).to_have_class("replayed")
        edit = feed_line(alice, "bob edits docs/readme")
        await expect(edit).to_have_text(
            f"bob edits docs/readme (fencing token {token}){REPLAYED}"
        )
        await expect(alice.locator("#feed-state")).to_have_text(FOLLOWING)

        # then live again; each event once, newest first
        await say(bob, "welcome back")
        await expect(feed_line(alice, "welcome back")).to_have_text(
            'bob says "welcome back"'
        )
        lines = await alice.locator("#feed li").all_text_contents()
        edited = f"bob edits docs/readme (fencing token {token}){REPLAYED}"
        mine = [line for line in lines if line.startswith("bob says") or line == edited]
        assert mine == [
            'bob says "welcome back"',
            edited,
            'bob says "while you were away"' + REPLAYED,
            'bob says "hello alice"',
        ]
        assert len(lines) == len(set(lines))


async def test_a_tab_whose_missed_events_are_gone_says_so(browser: Browser) -> None:
    """A memory node restarts: its event log is a new one, the old one lost."""
    key = random_key()
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(serving(make_app(key)))
        port = one.port
        alice = await stack.enter_async_context(user_tab(browser, one))
        await log_in(alice, "alice", "admin, user")
        await expect(alice.locator("#feed-state")).to_have_text(FOLLOWING)
        await say(alice, "before the restart")
        await expect(feed_line(alice, "before the restart")).to_be_visible()
        await one.close()
        await expect(alice.locator("#state")).to_contain_text("Reconnecting")
        await stack.enter_async_context(serving(make_app(key), port))
        await expect(alice.locator("#state")).to_have_text(
            "Connected", timeout=RECONNECT_MS
        )
        state = alice.locator("#feed-state")
        await expect(state).to_contain_text(
            "Some events were missed and could not be replayed (the event history "
            "was lost"
        )
        await expect(state).to_contain_text("the feed goes on with new ones.")
        await expect(state).to_have_class("lost")
        # and it goes on live
        await say(alice, "after the restart")
        await expect(feed_line(alice, "after the restart")).to_have_text(
            'alice says "after the restart"'
        )
