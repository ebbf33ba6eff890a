"""Request-response messaging across a Redis cluster, and its faults.

Two nodes in this process (each a real aiohttp server with a Redis registry)
or node B in its own OS process (``tests/cluster_node.py``: it has the server
handlers ``node/echo`` and ``node/slow``). Tabs speak the wire protocol
themselves (``tests/wire.py``). Faults: a node killed or stalled past its
lease, Redis restarted (empty, and with its data kept), a subscriber cut
silently, bad frames from a client. The sizes here run in ``make test``;
``make soak`` runs the mixed load many more times (``-m soak``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import SUBPROTOCOL, RedisSessionWSRegistry
from aiohttp_session_ws.backends.redis.backend import RedisBackend
from aiohttp_session_ws.backends.redis.handlers import PATH_ADDED
from aiohttp_session_ws.messaging import (
    FilterResponse,
    MessagingTimeoutError,
    MessagingUnavailableError,
    NoHandlerError,
    NoSuchSessionError,
    RejectedError,
    RequestContext,
    SessionClosedError,
)
from aiohttp_session_ws.protocol import ProtocolLimits

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    reconnected,
    registry_of,
    share_session,
)
from .nodes import NODE_TTL, StartNode
from .redis_server import RedisServer
from .tcp_proxy import SilentCutProxy
from .wire import Answer, WireTab, allow_all, echo, open_tab

LONG = 20.0
"""A request timeout far beyond what a failure may take to be reported."""
PROMPT = 3.0
"""What "at once" means for a failure across nodes: about the node TTL."""


def team_of(request: web.Request) -> dict[str, str]:
    """Each connection's ``team`` property comes from its URL."""
    return {"team": request.query.get("team", "none")}


def registry(client: Client) -> RedisSessionWSRegistry:
    found = registry_of(client)
    assert isinstance(found, RedisSessionWSRegistry)
    return found


def backend(client: Client) -> RedisBackend:
    return registry(client).backend


def const(value: Any) -> Answer:
    """Answer every request with ``value``."""
    return lambda frame: {"data": value}


def recording(seen: list[dict[str, Any]], answer: Answer = echo) -> Answer:
    """Answer with ``answer``, keeping each request frame in ``seen``."""

    def answer_(frame: dict[str, Any]) -> Any:
        seen.append(frame)
        return answer(frame)

    return answer_


def never(frame: dict[str, Any]) -> None:
    """Leave the request unanswered."""
    return None


class Cluster:
    """The nodes and tabs of one test; closes the tabs at the end."""

    def __init__(self, aiohttp_client: AiohttpClient) -> None:
        self._aiohttp_client = aiohttp_client
        self.tabs: list[WireTab] = []
        self.browser_of: dict[WireTab, Client] = {}

    async def node(self, url: str, prefix: str, **options: Any) -> Client:
        """A node in this process (its own aiohttp server), allow-all policy."""
        options.setdefault("node_ttl", NODE_TTL)
        options.setdefault("reconnect_max_delay", 0.5)
        options.setdefault("authorize", allow_all)
        options.setdefault("properties_factory", team_of)
        found = RedisSessionWSRegistry(url, prefix=prefix, **options)
        return await self._aiohttp_client(build_app(found))

    async def tab(
        self,
        node: Client,
        *,
        like: WireTab | None = None,
        answer: Answer | None = None,
        team: str = "none",
    ) -> WireTab:
        """A protocol tab on ``node``: of a new session, or of ``like``'s."""
        browser = await self._aiohttp_client(node.server)
        if like is not None:
            share_session(self.browser_of[like], browser)
        tab = await open_tab(browser, f"/live?team={team}")
        if like is not None:
            assert tab.handle == like.handle
        tab.answer = answer
        self.tabs.append(tab)
        self.browser_of[tab] = browser
        return tab

    async def close(self) -> None:
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                await tab.close()


@pytest.fixture
async def cluster(aiohttp_client: AiohttpClient) -> AsyncIterator[Cluster]:
    found = Cluster(aiohttp_client)
    yield found
    await found.close()


async def handles(tab: WireTab, path: str, *, addressed: bool = False) -> None:
    """Register a handler of ``tab`` (written to Redis when this returns)."""
    assert await tab.ok("add_handler", path=path, addressed=addressed) == {}


async def ask(
    tab: WireTab, op: str, wait: float = TIMEOUT, **args: Any
) -> dict[str, Any]:
    """Send a messaging op (its args may hold ``timeout``); its result/error frame."""
    return await tab.reply(await tab.send(op, **args), wait)


async def answer_of(tab: WireTab, op: str, **args: Any) -> Any:
    frame = await ask(tab, op, **args)
    assert frame["op"] == "result", frame
    return frame["data"]


async def error_of(tab: WireTab, op: str, wait: float = TIMEOUT, **args: Any) -> str:
    """The code of the error frame an op is answered with."""
    frame = await ask(tab, op, wait, **args)
    assert frame["op"] == "error", frame
    code: str = frame["code"]
    return code


async def filter_send(
    tab: WireTab, wait: float = TIMEOUT, **args: Any
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """A filter send: the expected count, the response frames, the done frame."""
    request_id = await tab.send("send_to_filter", **args)
    result = await tab.reply(request_id, wait)
    assert result["op"] == "result", result
    frames = [frame async for frame in tab.filter_frames(request_id, wait)]
    return result["data"]["expected"], frames[:-1], frames[-1]


async def barrier(*nodes: Client) -> None:
    """Each node has heard every note published to it before this call."""
    for node in nodes:
        await backend(node)._caught_up()


# 1. across two nodes of this process
async def test_a_request_to_a_path_reaches_a_handler_on_the_other_node(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    seen: list[dict[str, Any]] = []
    await handles(await cluster.tab(b, answer=recording(seen)), "svc")
    await barrier(a)
    sender = await cluster.tab(a)
    assert await answer_of(sender, "send_to_path", path="svc/x", data={"n": 1}) == {
        "n": 1
    }
    reply = await registry(a).messaging.send_request_to_path("svc/y", [2], timeout=5)
    assert reply == [2]
    first, second = seen
    assert (first["path"], first["handler"], first["addressed"]) == (
        "svc/x",
        "svc",
        False,
    )
    assert first["session"] == sender.handle
    assert second["path"] == "svc/y"
    assert second["session"] is None  # server code sent it


async def test_among_equal_handlers_the_local_one_answers(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    await handles(await cluster.tab(a, answer=const("a")), "eq")
    await handles(await cluster.tab(b, answer=const("b")), "eq")
    await barrier(a, b)
    sender_a, sender_b = await cluster.tab(a), await cluster.tab(b)
    for _ in range(5):
        assert await answer_of(sender_a, "send_to_path", path="eq/x") == "a"
        assert await answer_of(sender_b, "send_to_path", path="eq") == "b"
        assert await registry(b).messaging.send_request_to_path("eq/y", 0) == "b"


async def test_a_more_specific_handler_on_the_other_node_wins(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    await handles(await cluster.tab(a, answer=const("local")), "spec")

    def deep(value: Any, context: RequestContext) -> Any:
        return ["remote", context.path, context.handler_path]

    await registry(b).messaging.add_request_handler("spec/deep", deep)
    await barrier(a)
    sender = await cluster.tab(a)
    assert await answer_of(sender, "send_to_path", path="spec/deep/x") == [
        "remote",
        "spec/deep/x",
        "spec/deep",
    ]
    assert await answer_of(sender, "send_to_path", path="spec/other") == "local"
    assert await answer_of(sender, "send_to_path", path="spec") == "local"


async def test_a_request_to_a_session_reaches_its_tab_on_the_other_node(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    seen: list[dict[str, Any]] = []
    target = await cluster.tab(b, answer=recording(seen))
    await handles(target, "inbox", addressed=True)
    sender = await cluster.tab(a)
    assert (
        await answer_of(
            sender, "send_to_session", path="inbox/m", session=target.handle, data="hi"
        )
        == "hi"
    )
    assert (
        await registry(a).messaging.send_request_to_session("inbox", target.handle, 5)
        == 5
    )
    [first, second] = seen
    assert (first["path"], first["handler"], first["addressed"]) == (
        "inbox/m",
        "inbox",
        True,
    )
    assert first["session"] == sender.handle
    assert second["session"] is None


async def test_a_filter_send_counts_and_answers_the_sessions_of_both_nodes(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    targets: dict[str, str] = {}  # handle -> team
    for node in (a, b, a, b):
        team = "red" if len(targets) < 2 else "blue"
        tab = await cluster.tab(node, team=team)
        tab.answer = const(tab.handle)
        await handles(tab, "poll", addressed=True)
        targets[tab.handle] = team
    await cluster.tab(a, answer=echo)  # a session without the handler on each
    await cluster.tab(b, answer=echo)
    sender = await cluster.tab(a)
    expected, frames, done = await filter_send(
        sender, filter="all", path="poll/q", data=1
    )
    assert expected == 4
    assert sorted(f["session"] for f in frames) == sorted(targets)
    assert all(f["data"] == f["session"] for f in frames)
    assert done["unanswered"] == []
    expected, frames, done = await filter_send(
        sender, filter="team eq 'red'", path="poll", data=2
    )
    red = sorted(h for h, team in targets.items() if team == "red")
    assert expected == 2
    assert sorted(f["session"] for f in frames) == red
    # server code on the other node
    responses = await registry(b).messaging.send_request_to_filter(
        "all", "poll", 3, timeout=5
    )
    assert responses.expected == 4
    async with asyncio.timeout(TIMEOUT):
        got: list[FilterResponse] = [r async for r in responses]
    assert sorted(r.session for r in got) == sorted(targets)
    assert all(r.ok and r.value == r.session for r in got)
    assert responses.unanswered == frozenset()


async def test_a_session_handling_on_both_nodes_answers_once(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    seen_a: list[dict[str, Any]] = []
    seen_b: list[dict[str, Any]] = []
    tab_a = await cluster.tab(a, answer=recording(seen_a, const("a")))
    tab_b = await cluster.tab(b, like=tab_a, answer=recording(seen_b, const("b")))
    await handles(tab_a, "both", addressed=True)
    await handles(tab_b, "both", addressed=True)
    sender_a, sender_b = await cluster.tab(a), await cluster.tab(b)

    async def settled() -> int:
        """Requests the two tabs got, once nothing more is on its way."""
        await barrier(a, b)
        for tab in (tab_a, tab_b):
            if not tab.ws.closed:
                await tab.ok("ping")  # after any request frame sent before
        return len(seen_a) + len(seen_b)

    expected, frames, done = await filter_send(sender_a, filter="all", path="both")
    assert expected == 1
    assert [(f["session"], f["data"]) for f in frames] == [(tab_a.handle, "a")]
    assert done["unanswered"] == []
    assert await settled() == 1
    expected, frames, _ = await filter_send(sender_b, filter="all", path="both/x")
    assert expected == 1
    assert [f["data"] for f in frames] == ["b"]  # the sender's node's tab
    assert await settled() == 2
    assert (
        await answer_of(sender_a, "send_to_session", path="both", session=tab_a.handle)
        == "a"
    )
    assert await settled() == 3
    await tab_a.close()  # only the other node's tab is left
    assert (
        await answer_of(sender_a, "send_to_session", path="both", session=tab_b.handle)
        == "b"
    )
    assert await settled() == 4
    expected, frames, _ = await filter_send(sender_a, filter="all", path="both")
    assert (expected, [f["data"] for f in frames]) == (1, ["b"])
    assert await settled() == 5


async def test_each_error_across_nodes(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    remote = await cluster.tab(b, answer=echo)
    await handles(remote, "known", addressed=True)
    await handles(await cluster.tab(b, answer=lambda f: {"error": "nope"}), "rej/msg")
    await handles(await cluster.tab(b, answer=lambda f: {"error": ""}), "rej/empty")
    await handles(await cluster.tab(b, answer=never), "slow")

    def refuse(value: Any, context: RequestContext) -> Any:
        raise RejectedError("no thanks")

    def crash(value: Any, context: RequestContext) -> Any:
        raise RuntimeError("a bug")

    await registry(b).messaging.add_request_handler("rej/server", refuse)
    await registry(b).messaging.add_request_handler("rej/crash", crash)
    await barrier(a)
    sender = await cluster.tab(a)
    messaging = registry(a).messaging
    # no_handler
    assert await error_of(sender, "send_to_path", path="nothing/here") == "no_handler"
    assert (
        await error_of(sender, "send_to_session", path="other", session=remote.handle)
        == "no_handler"
    )
    with pytest.raises(NoHandlerError):
        await messaging.send_request_to_path("nothing", 1)
    # no_such_session
    assert (
        await error_of(sender, "send_to_session", path="known", session="nobody")
        == "no_such_session"
    )
    with pytest.raises(NoSuchSessionError):
        await messaging.send_request_to_session("known", "x" * 22, 1)
    # rejected: with the handler's message, an empty one, a server handler's
    frame = await ask(sender, "send_to_path", path="rej/msg")
    assert (frame["code"], frame["message"]) == ("rejected", "nope")
    frame = await ask(sender, "send_to_path", path="rej/empty")
    assert (frame["code"], frame["message"]) == ("rejected", "")
    frame = await ask(sender, "send_to_path", path="rej/server")
    assert (frame["code"], frame["message"]) == ("rejected", "no thanks")
    frame = await ask(sender, "send_to_path", path="rej/crash")
    assert (frame["code"], frame["message"]) == ("rejected", "the handler failed")
    with pytest.raises(RejectedError) as rejected:
        await messaging.send_request_to_path("rej/msg", 1)
    assert rejected.value.message == "nope"
    # timeout: after the request's own timeout, not the server's
    started = time.monotonic()
    assert await error_of(sender, "send_to_path", path="slow", timeout=0.5) == "timeout"
    assert 0.45 <= time.monotonic() - started < PROMPT
    with pytest.raises(MessagingTimeoutError):
        await messaging.send_request_to_path("slow", 1, timeout=0.3)


@pytest.mark.parametrize("op", ["send_to_path", "send_to_session"])
async def test_a_handling_tab_that_closes_fails_the_request_at_once(
    cluster: Cluster, redis_server: RedisServer, prefix: str, op: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    target = await cluster.tab(b, answer=None)
    await handles(target, "closing", addressed=op == "send_to_session")
    await barrier(a)
    sender = await cluster.tab(a)
    args: dict[str, Any] = {"path": "closing", "timeout": LONG}
    if op == "send_to_session":
        args["session"] = target.handle
    request_id = await sender.send(op, **args)
    await target.next_request()
    await target.close()
    started = time.monotonic()
    frame = await sender.reply(request_id, LONG)
    assert (frame["op"], frame["code"]) == ("error", "session_closed")
    assert time.monotonic() - started < PROMPT
    # server code too
    again = await cluster.tab(b, like=target if op == "send_to_session" else None)
    await handles(again, "closing", addressed=op == "send_to_session")
    await barrier(a)
    messaging = registry(a).messaging
    if op == "send_to_session":
        call = messaging.send_request_to_session(
            "closing", again.handle, 1, timeout=LONG
        )
    else:
        call = messaging.send_request_to_path("closing", 1, timeout=LONG)
    task = asyncio.ensure_future(call)
    await again.next_request()
    await again.close()
    started = time.monotonic()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(task, LONG)
    assert time.monotonic() - started < PROMPT


async def test_the_sender_s_properties_reach_a_handler_on_the_other_node(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    seen: list[dict[str, Any]] = []
    handler = await cluster.tab(b, answer=recording(seen))
    assert (
        await handler.ok(
            "add_handler", path="props", properties=["team", "color", "$SessionId"]
        )
        == {}
    )
    await barrier(a)
    sender = await cluster.tab(a, team="red")
    session_id = cookie_ws_id(cluster.browser_of[sender])
    assert await registry(a).set_session_properties(session_id, {"color": "blue"})
    assert await answer_of(sender, "send_to_path", path="props", data=1) == 1
    [frame] = seen
    assert frame["properties"] == {
        "team": "red",
        "color": "blue",
        "$SessionId": sender.handle,
    }


async def test_a_request_s_timeout_is_clamped_to_the_sender_s_limit(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    limits = ProtocolLimits(request_timeout=0.5)
    a = await cluster.node(redis_server.url, prefix, limits=limits)
    b = await cluster.node(redis_server.url, prefix)
    await handles(await cluster.tab(b, answer=never), "slow")
    await barrier(a)
    sender = await cluster.tab(a)
    started = time.monotonic()
    assert await error_of(sender, "send_to_path", path="slow", timeout=LONG) == (
        "timeout"
    )
    assert 0.45 <= time.monotonic() - started < PROMPT


async def test_a_non_json_response_of_a_handler_on_the_other_node_is_rejected(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    """As for a filter send's responses (``ops._forward``): ``rejected``, with
    the generic message, at once; not an ``unavailable`` that blames the node."""
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    await registry(b).messaging.add_request_handler("odd", lambda v, c: {1, 2})
    await barrier(a)
    sender = await cluster.tab(a)
    frame = await ask(sender, "send_to_path", path="odd")
    assert (frame["op"], frame["code"], frame["message"]) == (
        "error",
        "rejected",
        "the handler failed",
    )


class HeldWrites:
    """Holds a node's writes of its handler paths until :meth:`release`."""

    def __init__(self, node: Client) -> None:
        store = backend(node).handler_store
        write = store.write
        self.writing = asyncio.Event()
        self._released = asyncio.Event()

        async def held(reset: bool) -> bool:
            self.writing.set()
            await self._released.wait()
            return await write(reset)

        store.write = held  # type: ignore[method-assign]

    def release(self) -> None:
        self._released.set()


@pytest.mark.parametrize("left", ["on_that_node", "on_the_caller"])
async def test_a_request_routed_by_a_stale_table_still_finds_a_handler(
    cluster: Cluster, redis_server: RedisServer, prefix: str, left: str
) -> None:
    """Node B dropped its handler of ``x/y``; node A has not heard yet.

    A less specific handler of ``x`` (on B itself, or on A) serves the path
    meanwhile: the request must not be refused ``no_handler``.
    """
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    fallback = await cluster.tab(b if left == "on_that_node" else a, answer=const("x"))
    await handles(fallback, "x")
    specific = await cluster.tab(b, answer=const("x/y"))
    await handles(specific, "x/y")
    await barrier(a)
    sender = await cluster.tab(a)
    assert await answer_of(sender, "send_to_path", path="x/y/z") == "x/y"
    held = HeldWrites(b)
    removal = await specific.send("remove_handler", path="x/y")
    await asyncio.wait_for(held.writing.wait(), TIMEOUT)  # B has dropped it
    try:
        assert await answer_of(sender, "send_to_path", path="x/y/z") == "x"
    finally:
        held.release()
    assert (await specific.reply(removal))["data"] == {"removed": True}
    await barrier(a)
    assert await answer_of(sender, "send_to_path", path="x/y/z") == "x"


# 2. local work first
class CommandCount:
    """Counts this backend's Redis calls, but its heartbeat's."""

    def __init__(self, found: RedisBackend) -> None:
        self.calls: list[str] = []
        command = found._command

        async def counted(call: Any) -> Any:
            task = asyncio.current_task()
            name = task.get_name() if task is not None else "?"
            if not name.startswith("redis-heartbeat-"):
                self.calls.append(name)
            return await command(call)

        found._command = counted  # type: ignore[method-assign]


async def test_a_request_whose_target_is_on_this_node_never_touches_redis(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    # the same path on both nodes: the local one is taken without asking
    await handles(await cluster.tab(a, answer=const("a")), "here")
    await handles(await cluster.tab(b, answer=const("b")), "here")
    target = await cluster.tab(a, answer=echo)
    await handles(target, "mine", addressed=True)
    await handles(
        await cluster.tab(b, like=target, answer=const("b")), "mine", addressed=True
    )
    await registry(a).messaging.add_request_handler("server", lambda v, c: v)
    sender = await cluster.tab(a)
    await barrier(a, b)
    await backend(a)._flush()
    counter = CommandCount(backend(a))
    messaging = registry(a).messaging
    for value in range(3):
        assert await answer_of(sender, "send_to_path", path="here/x") == "a"
        assert (
            await answer_of(
                sender,
                "send_to_session",
                path="mine",
                session=target.handle,
                data=value,
            )
            == value
        )
        assert (
            await answer_of(sender, "send_to_path", path="server", data=value) == value
        )
        assert await messaging.send_request_to_path("here", 0) == "a"
        assert await messaging.send_request_to_session("mine/y", target.handle, 1) == 1
    assert counter.calls == []


# 3. node B killed mid-request
@pytest.mark.parametrize("handler", ["server", "tab"])
async def test_a_node_killed_mid_request_fails_it_within_the_node_ttl(
    cluster: Cluster,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
    handler: str,
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await start_node(redis_server.url)
    await barrier(a)
    messaging = registry(a).messaging
    assert await messaging.send_request_to_path("node/echo", "up", timeout=5) == "up"
    tab = None
    if handler == "server":
        task = asyncio.ensure_future(
            messaging.send_request_to_path("node/slow", "k", timeout=LONG)
        )
        assert await b.said("SLOW") == '"k"'
    else:
        tab = await open_tab(browser, b.url("/live"))
        await handles(tab, "b/tab", addressed=True)
        await handles(tab, "b/tab")
        await barrier(a)
        task = asyncio.ensure_future(
            messaging.send_request_to_session("b/tab", tab.handle, "k", timeout=LONG)
        )
        assert (await tab.next_request())["data"] == "k"
    b.process.send_signal(signal.SIGKILL)
    started = time.monotonic()
    try:
        with pytest.raises((SessionClosedError, MessagingUnavailableError)):
            await asyncio.wait_for(task, LONG)
        assert time.monotonic() - started < PROMPT
        # its registrations went with it (the 'gone' note came first)
        with pytest.raises(NoHandlerError):
            await messaging.send_request_to_path("node/echo", 1, timeout=5)
        if tab is not None:
            with pytest.raises(NoHandlerError):
                await messaging.send_request_to_path("b/tab", 1, timeout=5)
            with pytest.raises((NoSuchSessionError, NoHandlerError)):
                await messaging.send_request_to_session("b/tab", tab.handle, 1)
    finally:
        if tab is not None:
            await tab.close()


@pytest.mark.parametrize("fault", ["killed", "stopped"])
async def test_a_filter_send_ends_within_the_node_ttl_when_a_node_goes(
    cluster: Cluster,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
    fault: str,
) -> None:
    """Killed while its tab holds the request (phase two), or stopped before
    the send (phase one waits on it): the send ends within about the node TTL."""
    a = await cluster.node(redis_server.url, prefix)
    b = await start_node(redis_server.url)
    local = await cluster.tab(a, answer=const("a"))
    await handles(local, "f", addressed=True)
    remote = await open_tab(browser, b.url("/live"))
    await handles(remote, "f", addressed=True)
    messaging = registry(a).messaging
    try:
        if fault == "killed":
            responses = await messaging.send_request_to_filter(
                "all", "f", 1, timeout=LONG
            )
            assert responses.expected == 2
            await remote.next_request()
            b.process.send_signal(signal.SIGKILL)
            started = time.monotonic()
            async with asyncio.timeout(PROMPT):
                got = {r.session: r async for r in responses}
            assert got[local.handle].value == "a"
            error = got[remote.handle].error
            assert isinstance(error, SessionClosedError)
            assert responses.unanswered == frozenset()
        else:
            b.process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            async with asyncio.timeout(PROMPT):
                responses = await messaging.send_request_to_filter(
                    "all", "f", 1, timeout=LONG
                )
                assert responses.expected == 1  # B was reaped meanwhile
                assert [r.value async for r in responses] == ["a"]
        assert time.monotonic() - started < PROMPT
    finally:
        if fault == "stopped":
            b.process.send_signal(signal.SIGCONT)
        await remote.close()


# 4. node B stalled past its lease
def path_added(node: Client, node_id: str, path: str) -> asyncio.Event:
    """Set once ``node`` has taken the note that ``node_id`` serves ``path``."""
    store = backend(node).handler_store
    note = store.note
    event = asyncio.Event()
    wanted = PATH_ADDED + f"{node_id}:{path}".encode()

    def noted(frame: bytes) -> None:
        note(frame)
        if frame == wanted:
            event.set()

    store.note = noted  # type: ignore[method-assign]
    return event


async def test_a_node_stalled_past_its_lease_fails_the_request_then_rejoins(
    cluster: Cluster,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await start_node(redis_server.url)
    await barrier(a)
    messaging = registry(a).messaging
    assert await messaging.send_request_to_path("node/echo", 1, timeout=5) == 1
    left = asyncio.Event()
    registry(a)._bus.on_nodes_left.append(
        lambda nodes: left.set() if b.node_id in nodes else None
    )
    back = path_added(a, b.node_id, "node/echo")
    task = asyncio.ensure_future(
        messaging.send_request_to_path("node/slow", "stalled", timeout=LONG)
    )
    assert await b.said("SLOW") == '"stalled"'
    b.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises((MessagingUnavailableError, SessionClosedError)):
            await asyncio.wait_for(task, LONG)
        assert time.monotonic() - started < PROMPT
        assert left.is_set()  # A reaped B: the 'gone' note failed it
        with pytest.raises(NoHandlerError):
            await messaging.send_request_to_path("node/echo", 2, timeout=5)
    finally:
        b.process.send_signal(signal.SIGCONT)
    # B finds itself reaped, rejoins and writes its paths again
    await asyncio.wait_for(back.wait(), 10)
    assert await messaging.send_request_to_path("node/echo", 3, timeout=5) == 3


# 5. Redis restarted between two requests
@pytest.mark.parametrize("keep_data", [False, True], ids=["empty", "kept"])
async def test_redis_restarted_between_requests(
    cluster: Cluster, prefix: str, keep_data: bool
) -> None:
    server = RedisServer(config={"appendonly": "yes"} if keep_data else None)
    server.start()
    try:
        await redis_restart_round(cluster, server, prefix, keep_data)
    finally:
        server.cleanup()


async def redis_restart_round(
    cluster: Cluster, server: RedisServer, prefix: str, keep_data: bool
) -> None:
    a = await cluster.node(server.url, prefix, command_timeout=1.0)
    b = await cluster.node(server.url, prefix, command_timeout=1.0)
    await handles(await cluster.tab(b, answer=const("far")), "far")
    target = await cluster.tab(b, answer=echo)
    await handles(target, "inbox", addressed=True)
    await handles(await cluster.tab(a, answer=const("near")), "near")
    sender = await cluster.tab(a)
    await barrier(a, b)
    assert await answer_of(sender, "send_to_path", path="far") == "far"
    assert (
        await answer_of(
            sender, "send_to_session", path="inbox", session=target.handle, data=1
        )
        == 1
    )
    back = [reconnected(registry(node)) for node in (a, b)]
    server.stop()
    # while it is down: across nodes fails at once, this node still answers
    for args in (
        {"op": "send_to_path", "path": "far"},
        {"op": "send_to_session", "path": "inbox", "session": target.handle},
        {"op": "send_to_filter", "filter": "all", "path": "inbox"},
    ):
        started = time.monotonic()
        assert await error_of(sender, wait=LONG, timeout=LONG, **args) == "unavailable"
        assert time.monotonic() - started < PROMPT
    assert await answer_of(sender, "send_to_path", path="near") == "near"
    started = time.monotonic()
    with pytest.raises(MessagingUnavailableError):
        await registry(a).messaging.send_request_to_path("far", 1, timeout=LONG)
    assert time.monotonic() - started < PROMPT
    server.start()
    async with asyncio.timeout(15):
        for event in back:
            await event.wait()
    assert registry(a).healthy
    assert registry(b).healthy
    await barrier(a, b)
    assert await answer_of(sender, "send_to_path", path="far/again") == "far"
    assert (
        await answer_of(
            sender, "send_to_session", path="inbox", session=target.handle, data=2
        )
        == 2
    )
    expected, frames, _ = await filter_send(sender, filter="all", path="inbox")
    assert (expected, [f["session"] for f in frames]) == (1, [target.handle])


async def test_redis_lost_while_a_request_is_in_flight_fails_it_promptly(
    cluster: Cluster, own_redis_server: RedisServer, prefix: str
) -> None:
    """The reply cannot come back while Redis is down (and one published then
    is lost): the caller should learn ``unavailable`` at once, as a request
    sent during the outage does, not wait out its timeout."""
    url = own_redis_server.url
    a = await cluster.node(url, prefix, command_timeout=1.0)
    b = await cluster.node(url, prefix, command_timeout=1.0)
    target = await cluster.tab(b, answer=None)
    await handles(target, "far")
    await barrier(a)
    sender = await cluster.tab(a)
    timeout = 8.0
    request_id = await sender.send("send_to_path", path="far", timeout=timeout)
    request = await target.next_request()
    own_redis_server.stop()
    started = time.monotonic()
    try:
        await target.send_answer(request["conversation"], data=1)  # goes nowhere
        frame = await sender.reply(request_id, timeout + 1)
        took = time.monotonic() - started
        assert (frame["op"], frame.get("code")) == ("error", "unavailable"), frame
        assert took < PROMPT, f"failed only after {took:.1f} s"
    finally:
        own_redis_server.start()


# 6. a silent cut of a subscriber while a request is in flight
async def test_a_silent_cut_while_a_request_is_in_flight(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    proxy = SilentCutProxy(redis_server.port)
    await proxy.start()
    try:
        a = await cluster.node(redis_server.url, prefix)
        b = await cluster.node(proxy.url, prefix)
        target = await cluster.tab(b, answer=None)
        await handles(target, "cut")
        await barrier(a)
        sender = await cluster.tab(a)
        back = reconnected(registry(b))
        first = await sender.send("send_to_path", path="cut", data=1, timeout=4.0)
        request = await target.next_request()
        assert proxy.cut_subscribers() == 1
        cut_at = time.monotonic()
        # published while B is deaf (or after it resubscribed): lost or served
        second = await sender.send("send_to_path", path="cut", data=2, timeout=2.0)
        target.answer = echo
        await target.send_answer(request["conversation"], data=1)
        frame = await sender.reply(first, 4.0 + 1)
        assert (
            frame == {"op": "result", "id": first, "data": 1} or frame["op"] == "error"
        )
        frame = await sender.reply(second, 2.0 + 1)
        assert frame["op"] == "result" or frame["code"] == "timeout", frame
        assert time.monotonic() - cut_at < 2.0 + 1
        await asyncio.wait_for(back.wait(), TIMEOUT)
        await barrier(a, b)
        assert await answer_of(sender, "send_to_path", path="cut", data=3) == 3
    finally:
        await proxy.close()


# 7. bad input does not hurt others
async def raw_tab(node: Client) -> aiohttp.ClientWebSocketResponse:
    ws = await node.ws_connect("/live", protocols=(SUBPROTOCOL,))
    assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["op"] == "hello"
    return ws


async def raw_reply(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
    await ws.send_str(text)
    frame: dict[str, Any] = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    return frame


async def test_bad_input_gets_clear_errors_and_hurts_no_other_session(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    a = await cluster.node(redis_server.url, prefix)
    b = await cluster.node(redis_server.url, prefix)
    handler = await cluster.tab(a, answer=None)
    await handles(handler, "ok")
    await handles(handler, "ok", addressed=True)
    await handles(await cluster.tab(b, answer=echo), "far")
    await barrier(a)
    good = await cluster.tab(a)
    bad = await cluster.tab(a)
    ws = await raw_tab(await cluster._aiohttp_client(a.server))

    pings = iter(range(1000, 2000))

    async def ignored(text: str) -> None:
        """The frame gets no reply at all: a ping after it is answered next."""
        ping = next(pings)
        await ws.send_str(text)
        frame = await raw_reply(ws, json.dumps({"op": "ping", "id": ping}))
        assert (frame["op"], frame["id"]) == ("result", ping), (text, frame)

    async def others_still_work() -> None:
        request_id = await good.send("send_to_path", path="ok", data="p")
        frame = await handler.next_request()
        # another session answering that conversation changes nothing
        await ignored(
            json.dumps(
                {"op": "answer", "conversation": frame["conversation"], "data": "x"}
            )
        )
        await handler.send_answer(frame["conversation"], data="p!")
        assert (await good.reply(request_id))["data"] == "p!"
        handler.answer = echo
        assert (
            await answer_of(
                good, "send_to_session", path="ok", session=handler.handle, data="s"
            )
            == "s"
        )
        handler.answer = None
        assert await answer_of(good, "send_to_path", path="far", data="f") == "f"

    await others_still_work()
    # malformed answer frames: an error frame without an id
    malformed: list[dict[str, Any]] = [
        {},  # no conversation
        {"conversation": "1"},
        {"conversation": 1.5},
        {"conversation": True},
        {"conversation": 1, "error": 5},
        {"conversation": 1, "extra": 1},
        {"conversation": 1, "id": 3},  # an answer takes no id
    ]
    for args in malformed:
        frame = await raw_reply(ws, json.dumps({"op": "answer", **args}))
        assert (frame["op"], frame["id"], frame["code"]) == (
            "error",
            None,
            "bad_frame",
        ), args
    for text in ['{"op":"answer","conversation":', "[1,2]", "null"]:
        frame = await raw_reply(ws, text)
        assert (frame["op"], frame["code"]) == ("error", "bad_frame"), text
    # unknown conversations: a late answer is no error
    for conversation in (987654321, -1, 0, 2**53):
        await ignored(
            json.dumps({"op": "answer", "conversation": conversation, "error": "x"})
        )
    await others_still_work()
    # an oversized request frame
    frame = await raw_reply(
        ws,
        json.dumps(
            {"op": "send_to_path", "id": 8, "path": "ok", "data": "x" * 100_000}
        ),
    )
    assert (frame["op"], frame["code"]) == ("error", "too_large")
    assert handler.requests.empty()
    # bad paths and timeouts
    assert await error_of(bad, "send_to_path", path="a//b") == "bad_frame"
    assert await error_of(bad, "send_to_path", path="x" * 300) == "bad_frame"
    assert await error_of(bad, "send_to_path", path="ok", timeout=0) == "bad_frame"
    assert await error_of(bad, "send_to_path", path="ok", timeout=-1) == "bad_frame"
    assert (
        await error_of(bad, "send_to_session", path="ok", session="s" * 5000)
        == "no_such_session"
    )
    # a filter of 5,000 characters, and one that does not parse
    frame = await ask(bad, "send_to_filter", filter="a" * 5000, path="ok")
    assert (frame["op"], frame["code"]) == ("error", "bad_filter")
    assert isinstance(frame["position"], int)
    frame = await ask(bad, "send_to_filter", filter="team eq", path="ok")
    assert (frame["code"], frame["position"]) == ("bad_filter", 7)
    assert handler.requests.empty()
    await others_still_work()
    assert await bad.ok("ping") == {}  # the bad tab is still served
    await ws.close()


# a mixed load with tabs closing under it: each request ends, once, in time
async def mixed_load(cluster: Cluster, url: str, prefix: str, rounds: int) -> None:
    limits = ProtocolLimits(rate=10_000, burst=10_000)  # a load, not a flood
    a = await cluster.node(url, prefix, limits=limits)
    b = await cluster.node(url, prefix, limits=limits)
    nodes = (a, b)
    live: list[WireTab] = []

    async def new_handler(node: Client) -> WireTab:
        tab = await cluster.tab(node, answer=echo)
        await handles(tab, "load")
        await handles(tab, "load", addressed=True)
        live.append(tab)
        return tab

    for node in nodes * 3:
        await new_handler(node)
    await barrier(a, b)
    senders = [await cluster.tab(node) for node in nodes]
    timeout = 2.0
    allowed = {"session_closed", "no_handler", "no_such_session"}

    async def one(index: int) -> str:
        sender = senders[index % 2]
        target = random.choice(live)
        kind = index % 3
        if kind == 0:
            frame = await ask(
                sender,
                "send_to_path",
                timeout + 1,
                path="load/x",
                data=index,
                timeout=timeout,
            )
        elif kind == 1:
            frame = await ask(
                sender,
                "send_to_session",
                timeout + 1,
                path="load",
                session=target.handle,
                data=index,
                timeout=timeout,
            )
        else:
            expected, frames, done = await filter_send(
                sender,
                timeout + 1,
                filter="all",
                path="load",
                data=index,
                timeout=timeout,
            )
            sessions = [f["session"] for f in frames] + done["unanswered"]
            assert len(sessions) == len(set(sessions)) == expected
            for f in frames:
                assert f.get("data") == index or f["error"]["code"] in allowed, f
            return "filter"
        if frame["op"] == "result":
            assert frame["data"] == index
            return "ok"
        assert frame["code"] in allowed, frame
        return str(frame["code"])

    outcomes: dict[str, int] = {}
    for start in range(0, rounds, 20):
        batch = [asyncio.ensure_future(one(i)) for i in range(start, start + 20)]
        # a tab closes mid-batch, another opens
        victim = live.pop(random.randrange(len(live)))
        await victim.close()
        await new_handler(random.choice(nodes))
        for outcome in await asyncio.gather(*batch):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"mixed load of {rounds} requests:", outcomes)
    assert outcomes.get("ok", 0) > rounds // 3, outcomes
    for node in nodes:
        # nothing is left waiting on either node
        messaging = registry(node).messaging
        assert not messaging._conversations
        assert not messaging._filter_sends
        assert not messaging._held


async def test_a_mixed_load_with_closing_tabs_ends_every_request(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    await mixed_load(cluster, redis_server.url, prefix, 60)


@pytest.mark.soak
async def test_soak_a_mixed_load_with_closing_tabs(
    cluster: Cluster, redis_server: RedisServer, prefix: str
) -> None:
    await mixed_load(cluster, redis_server.url, prefix, 10_000)
