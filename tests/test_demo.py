"""The demo app through real HTTP and websockets, its key, and its command line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

import demo.__main__ as demo_main
from aiohttp_session_ws import (
    DEFAULT_SESSION_KEY,
    REGISTRY_APP_KEY,
    RedisSessionWSRegistry,
    get_registry,
    session_ws,
)
from aiohttp_session_ws.client import Pushes
from aiohttp_session_ws.client import Session as LiveSession
from aiohttp_session_ws.client import connect as connect_live
from aiohttp_session_ws.events import Event, EventPayloadJson
from aiohttp_session_ws.events.service import EventsUnavailableError
from aiohttp_session_ws.messaging.errors import RejectedError
from aiohttp_session_ws.messaging.requests import RequestContext
from aiohttp_session_ws.protocol import ErrorCode, ProtocolError
from demo import make_app
from demo.app import COOKIE_NAME, FEED_TYPES, describe_backend, send_frames
from demo.app import count_connections as demo_count
from demo.key import (
    KEY_ENV_VAR,
    MAKE_KEY_COMMAND,
    InvalidKeyError,
    encode_key,
    load_key,
    random_key,
)
from demo.page import DOCUMENTS, INDEX_HTML, render_page

from .redis_server import RedisServer

Client = TestClient[web.Request, web.Application]
WebSocket = aiohttp.ClientWebSocketResponse
TIMEOUT = 5.0
"""Bounds every wait, so a hang fails fast."""
TICK = 0.02
REPO = Path(__file__).resolve().parent.parent


# helpers


@pytest.fixture
def key() -> bytes:
    return random_key()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, key: bytes) -> Client:
    return await aiohttp_client(make_app(key, tick_interval=TICK))


def env_key(key: bytes) -> str:
    """The key as the environment variable holds it."""
    return encode_key(key)


def cookie_value(client: Client) -> str | None:
    cookies = client.session.cookie_jar.filter_cookies(URL(str(client.make_url("/"))))
    morsel = cookies.get(COOKIE_NAME)
    return None if morsel is None else morsel.value


def cookie_ws_id(client: Client, key: bytes) -> object:
    """The session ws id in the client's (encrypted) session cookie."""
    value = cookie_value(client)
    assert value is not None, "the client has no session cookie"
    data = json.loads(Fernet(env_key(key).encode()).decrypt(value.encode()))
    return data["session"].get(DEFAULT_SESSION_KEY)


async def receive_json(ws: WebSocket) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def connect(client: Client) -> tuple[WebSocket, dict[str, Any]]:
    """Open /ws in the client's session; return it and its first frame."""
    ws = await asyncio.wait_for(client.ws_connect("/ws"), TIMEOUT)
    return ws, await receive_json(ws)


async def tick_with(ws: WebSocket, connections: int) -> dict[str, Any]:
    """Read ticks until one counts ``connections``."""

    async def read() -> dict[str, Any]:
        while True:
            data = await receive_json(ws)
            assert "tick" in data, data
            if data["connections"] == connections:
                return data

    return await asyncio.wait_for(read(), TIMEOUT)


async def until_close(ws: WebSocket) -> aiohttp.WSMessage:
    """Skip ticks until the server closes the socket; return the close message.

    Check the code in the message (``msg.data``), not ``ws.close_code``: the
    server drops the connection right after its close frame, and the aiohttp
    client may then report 1006 for its own, failed, close reply.
    """

    async def read() -> aiohttp.WSMessage:
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                return msg

    return await asyncio.wait_for(read(), TIMEOUT)


# the page


async def test_page_is_served_and_starts_a_session(client: Client, key: bytes) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    for needle in (
        "import { connect, RejectedError, SessionLockScope, SessionState } from "
        '"/session-ws/session-ws.js";',
        '<button id="doc-0-edit" disabled>Edit</button>',
        "UNLOCK_ON_CONNECTION_LOSS",
        'action="/login"',
        '<option value="bob">bob (user)</option>',
        'connect("/live"',
        'action="/push"',
        'href="/reset"',
        'href="/logout"',
        "closeCode",
    ):
        assert needle in page
    session_ws_id = cookie_ws_id(client, key)
    assert isinstance(session_ws_id, str)
    assert session_ws_id not in page  # a secret: the page shows the public handle
    assert "Session ws id" not in page


async def test_page_names_its_node_and_backend(client: Client) -> None:
    page = await (await client.get("/")).text()
    node = f"127.0.0.1:{client.port}"
    assert f'<code id="node">{node}</code>' in page
    assert f"<title>aiohttp-session-ws demo &ndash; {node}</title>" in page
    assert '<dd id="backend">memory (this process only)</dd>' in page


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_page_names_an_ipv6_node_in_brackets(
    aiohttp_server: AiohttpServer, key: bytes
) -> None:
    server = await aiohttp_server(make_app(key, tick_interval=TICK), host="::1")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://[::1]:{server.port}/") as resp,
    ):
        page = await resp.text()
    assert f'<code id="node">[::1]:{server.port}</code>' in page


async def test_page_on_a_unix_socket_names_the_host_it_was_asked_for(
    key: bytes, tmp_path: Path
) -> None:
    runner = web.AppRunner(make_app(key, tick_interval=TICK))
    await runner.setup()
    path = str(tmp_path / "demo.sock")
    await web.UnixSite(runner, path).start()
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as http,
            http.get("http://demo.example/") as resp,
        ):
            page = await resp.text()
    finally:
        await runner.cleanup()
    assert '<code id="node">demo.example</code>' in page


def test_backend_names_redis_without_its_credentials() -> None:
    assert describe_backend() == "memory (this process only)"
    assert describe_backend("redis://127.0.0.1:6379/0") == (
        "Redis at redis://127.0.0.1:6379/0"
    )
    described = describe_backend("redis://user:s3cret@redis.example:6380/2")
    assert described == "Redis at redis://redis.example:6380/2"
    described = describe_backend("rediss://redis.example/0?password=s3cret")
    assert described == "Redis at rediss://redis.example/0"
    socket_url = "unix:///run/redis.sock?db=0&password=s3cret"
    assert describe_backend(socket_url) == "Redis at unix:///run/redis.sock"


def test_the_page_escapes_what_it_names() -> None:
    page = render_page(
        node="<b>[::1]:80</b>", backend="a & b", client='/x"</script>.js'
    )
    assert "&lt;b&gt;[::1]:80&lt;/b&gt;" in page
    assert "a &amp; b" in page
    # in the script, a string literal: JSON, with no end tag in it
    assert 'from "/x\\"\\u003c/script>.js";' in page
    assert "{{" not in page


def css_rules(selector: str, page: str = INDEX_HTML) -> list[str]:
    """The declarations of every CSS rule whose selector list names ``selector``."""
    return [
        body
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", page)
        if selector in [s.strip() for s in selectors.split(",")]
    ]


def test_the_id_wraps_anywhere_and_narrow_screens_get_one_column() -> None:
    """At 375 px the id must not wrap a character per line beside its label."""
    assert any("overflow-wrap: anywhere" in rule for rule in css_rules("#session"))
    narrow = re.search(
        r"@media \(max-width: (\d+)rem\) \{(.*?)\n  \}", INDEX_HTML, re.S
    )
    assert narrow, "no rule for narrow screens"
    assert int(narrow[1]) * 16 >= 375
    [one_column] = css_rules("dl", narrow[2] + "}")
    assert "grid-template-columns: minmax(0, 1fr)" in one_column
    # wide screens: the value column may shrink below its content's width
    assert any("minmax(0, 1fr)" in rule for rule in css_rules("dl"))


PAGE_HARNESS = """\
class Element {
  #text = "";
  constructor(text = "") {
    Object.assign(this, {textContent: text, className: "", disabled: false,
                         checked: false});
    this.children = [];
  }
  get textContent() { return this.#text; }
  set textContent(value) { this.#text = String(value); }  // as the DOM does
  addEventListener(type, listener) { this["on" + type] = listener; }
  prepend(child) { child.parent = this; this.children.unshift(child); }
  get lastChild() { return this.children.at(-1); }
  remove() { this.parent.children.splice(this.parent.children.indexOf(this), 1); }
}
const elements = {node: new Element("127.0.0.1:8081")};
const el = (id) => (elements[id] ??= new Element());
globalThis.document = {
  getElementById: el, title: "", createElement: () => new Element(),
};
el("answer").checked = true;
globalThis.fetch = async (path) => ({ok: true, status: 200, text: async () => ""});
globalThis.FormData = class { *[Symbol.iterator]() { yield ["user", "bob"]; } };

// a stand-in for session-ws.js
const SessionState = {CONNECTING: "connecting", CONNECTED: "connected",
                      RECONNECTING: "reconnecting", CLOSED: "closed"};
const SessionLockScope = {UNLOCK_ON_SESSION_LOSS: 0, UNLOCK_ON_CONNECTION_LOSS: 1};
const sessions = [];
let refuse = false;
let loggedIn = false;
async function connect(url, options) {
  if (refuse) throw new Error("refused");
  const listeners = [], pushListeners = [], n = sessions.length;
  const registered = [];
  const register = (kind) => async (path, handler, options) => {
    registered.push([kind, path, options]);
    return {close: async () => {}};
  };
  const user = loggedIn ? {$Principal: "bob", $Roles: '"user"'} : {};
  const locked = [];
  const requests = [];
  const subscribed = [];
  const session = {
    url, options, state: "connected", closeCode: null, closeReason: "",
    connectionId: "c" + n, sessionId: "h" + n, registered, requests, subscribed,
    events: {
      subscribe: async (types, options) => {
        subscribed.push([types, Object.keys(options).sort()]);
        const sub = {lastId: null, position: "5-0", epoch: "e", recovered: null,
                     reason: null, close: async () => {},
                     onNotRecovered(listener) { sub.notRecovered = listener; }};
        session.feed = {sub, onEvent: options.onEvent};
        return sub;
      },
      register: async () => null,
    },
    properties: async () => ({$SessionId: "h" + n, ...user}),
    messaging: {
      addRequestHandler: register("addRequestHandler"),
      addStreamHandler: register("addStreamHandler"),
    },
    addStateListener(listener) { listeners.push(listener); },
    onPush(listener) { pushListeners.push(listener); },
    request: async (op, args) => {
      requests.push([op, args ?? null]);
      return op === "connections" ? {count: 2} : null;
    },
    locked,
    lockInfo: async (name) => ({name, owner: null, sequence: null, scope: null,
                                waiting: 0, queue: []}),
    lock: async (name, options) => {
      locked.push([name, options.scope, options.signal instanceof AbortSignal]);
      return {name, sequence: 7, scope: options.scope, owner: "h" + n,
              isOwned: true, onLost() {}, unlock: async () => true};
    },
    set(state, code, reason = "") {
      const old = session.state;
      Object.assign(session, {state, closeCode: code ?? session.closeCode,
                              closeReason: reason});
      for (const listener of listeners) listener(old, state);
    },
    push(data) { for (const listener of pushListeners) listener(data); },
  };
  sessions.push(session);
  return session;
}

%s

const flush = () => new Promise((resolve) => setTimeout(resolve));
const states = [];
const seen = () => states.push(el("state").textContent);
const current = () => sessions.at(-1);
await flush();  // the page's start() has connected
seen();
const first = {
  connection: el("connection").textContent, session: el("session").textContent,
  connections: el("connections").textContent, options: current().options,
  url: current().url, reconnect: el("reconnect").disabled,
  user: el("user").textContent, registered: current().registered,
  documents: [0, 1, 2].map((i) => el("doc-" + i + "-state").textContent),
};
const close = async (code, reason = "") => {
  current().set("closed", code, reason);
  seen();
  await el("reconnect").onclick();
};
await close(1000);                      // another tab's reset or logout
await el("logout").onclick();           // this tab's logout, answered before the close
await close(1000);
const pending = el("reset").onclick();  // the close comes before the answer
await close(1000);
await pending;
await close(1000);                      // a later close: the press is forgotten
await close(1000, "a reason");
current().set("reconnecting", 1001);
seen();
current().set("connected");
seen();
sessions[0].set("closed", 1006);        // an old session: no news
await close(1006);
current().push({kind: "connections", count: 3});
const connections = el("connections").textContent;
for (let i = 0; i < 25; i++) current().push({kind: "text", text: "<b>" + i + "</b>"});
for (const data of [{kind: "other"}, null, "text"]) current().push(data);
const pushes = el("pushes").children.map((item) => item.textContent);
loggedIn = true;                        // this tab's login: it connects again
el("login").onsubmit({preventDefault() {}, target: null});
current().set("closed", 1000);
seen();
await flush();
seen();
const free = el("doc-1-state").textContent;
await el("doc-1-edit").onclick();       // Edit: the document's edit lock
await flush();
const feedText = el("feed-state").textContent;
const json = (data) => ({type: "json", data});
current().feed.onEvent({id: "1-0", type: "demo/login", payload: json({user: "bob"}),
                        replayed: true});
current().feed.onEvent({id: "1-1", type: "session_ws/session/started",
                        payload: json({session: "h9", principal: "carol"}),
                        replayed: false});
const granted = {user: "carol", name: "docs/plan", sequence: 3};
current().feed.onEvent({id: "1-2", type: "demo/lock/granted", replayed: false,
                        payload: json(granted)});
current().feed.sub.notRecovered("the history was lost");
const login = {
  user: el("user").textContent, answering: el("answering").textContent,
  registered: current().registered, free, locked: current().locked,
  editing: el("doc-1-state").textContent,
  release: el("doc-1-release").hidden, edit: el("doc-1-edit").hidden,
  subscribed: current().subscribed, feedState: feedText,
  activity: current().requests.filter(([op]) => op === "activity"),
  feed: el("feed").children.map((item) => [item.textContent, item.className]),
  lost: el("feed-state").textContent, lostClass: el("feed-state").className,
};
const anonymous = sessions[0].subscribed;
refuse = true;
await el("reconnect").onclick();
seen();
console.log(JSON.stringify({
  states, first, connections, pushes, login, anonymous, title: document.title,
  reconnect: el("reconnect").disabled,
}));
process.exit(0);  // the page refreshes its documents on a timer
"""
"""Runs the page's script with stand-ins for the DOM, fetch and the client."""

CLIENT_IMPORT = (
    "import { connect, RejectedError, SessionLockScope, SessionState } from "
    '"/session-ws/session-ws.js";\n'
)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_page_says_who_closed_it_when_run() -> None:
    page = render_page(node="n", backend="b", client="/session-ws/session-ws.js")
    script = re.search(r'<script type="module">\n(.*)</script>', page, re.DOTALL)
    assert script
    assert CLIENT_IMPORT in script[1]
    done = subprocess.run(
        ["node", "--input-type=module", "-"],
        input=PAGE_HARNESS % script[1].replace(CLIENT_IMPORT, ""),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(done.stdout)
    closed = "Closed, code 1000 (closed by the server: "
    assert seen["states"] == [
        "Connected",
        closed + "login, logout or reset in another tab)",
        closed + "logout in this tab)",
        closed + "reset in this tab)",
        closed + "login, logout or reset in another tab)",
        "Closed, code 1000 (a reason)",
        "Reconnecting\u2026 the connection closed, code 1001 "
        "(going away: the server is shutting down)",
        "Connected",
        "Closed, code 1006 (connection lost)",
        "Connecting\u2026",  # by itself, after the close of the login's old id
        "Connected",
        "Could not connect: refused",
    ]
    assert seen["first"] == {
        "connection": "c0",
        "session": "h0",
        "connections": "2",  # asked with the demo's op
        "options": {"reconnect": True},
        "url": "/live",
        "reconnect": True,  # the button is disabled while connected
        "user": "nobody: log in to send and answer requests",
        "registered": [],  # anonymous: no handlers
        "documents": ["Log in to edit."] * 3,
    }
    echo = {"sessionProperties": ["$Principal"]}
    assert seen["login"] == {
        "user": "bob (roles user)",
        "answering": "Answering requests sent to the path demo/echo and to this "
        "session on demo/echo, as bob.",
        "registered": [
            ["addStreamHandler", "demo/echo", {"addressed": True, **echo}],
            ["addRequestHandler", "demo/echo", echo],
        ],
        "free": "Free: nobody edits it.",
        # connection-scoped, with a signal to stop waiting
        "locked": [["docs/plan", 1, True]],
        "editing": "You are editing docs/plan in this tab (fencing token 7). "
        "Nobody waits.",
        "release": False,
        "edit": True,
        # the activity feed: subscribed once logged in, each event on a line
        "subscribed": [[["demo/*", "session_ws/session/*"], ["onEvent"]]],
        "feedState": "Following the activity feed: demo/* and session_ws/session/*.",
        "activity": [["activity", {"what": "lock", "name": "docs/plan"}]],
        "feed": [
            ["carol edits docs/plan (fencing token 3)", ""],
            ["carol's session h9 started", ""],
            ["bob logged in (replayed: missed while disconnected)", "replayed"],
        ],
        "lost": "Some events were missed and could not be replayed (the history "
        "was lost): the feed goes on with new ones.",
        "lostClass": "lost",
    }
    assert seen["anonymous"] == []  # no feed before the login
    assert seen["connections"] == "3"
    assert seen["pushes"] == [
        f"<b>{i}</b>" for i in range(24, 4, -1)
    ]  # 20, newest first
    assert seen["title"] == "Could not connect: refused \u2013 127.0.0.1:8081"
    assert seen["reconnect"] is False


def test_the_page_says_who_closed_it() -> None:
    """1000 carries no reason: the tab that pressed a button says which one."""
    assert "pressed = path.slice(1)" in INDEX_HTML
    assert 'pressed + " in this tab"' in INDEX_HTML
    assert '"login, logout or reset in another tab"' in INDEX_HTML
    assert "if (reason) return reason;" in INDEX_HTML


# /live and /push


async def live(client: Client) -> LiveSession:
    """Open the page's protocol connection in the client's session."""
    return await asyncio.wait_for(
        connect_live(client.make_url("/live"), session=client.session), TIMEOUT
    )


async def next_push(pushes: Pushes) -> Any:
    return await asyncio.wait_for(pushes.__anext__(), TIMEOUT)


async def next_text(pushes: Pushes) -> Any:
    """The next push of a text, past those of the connection count."""

    async def read() -> Any:
        async for data in pushes:
            if data["kind"] == "text":
                return data
        raise AssertionError("the session closed")

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_live_speaks_the_protocol_and_counts_the_sessions_sockets(
    client: Client, key: bytes
) -> None:
    first = await live(client)
    session_ws_id = cookie_ws_id(client, key)
    assert first.session_id != session_ws_id  # the public handle, not the secret
    assert await first.request("connections") == {"count": 1}
    pushes = first.pushes()

    second = await live(client)
    assert second.session_id == first.session_id  # one session
    assert await next_push(pushes) == {"kind": "connections", "count": 2}
    assert await second.request("connections") == {"count": 2}
    raw, hello = await connect(client)  # /ws counts too
    assert hello["connections"] == 3
    assert await first.request("connections") == {"count": 3}
    await second.close()
    assert await next_push(pushes) == {"kind": "connections", "count": 2}
    await raw.close()
    assert await first.ping_server() >= 0
    await first.close()


async def test_live_refuses_an_upgrade_without_the_subprotocol(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await asyncio.wait_for(client.ws_connect("/live"), TIMEOUT)
    assert refused.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await asyncio.wait_for(
            client.ws_connect("/live", protocols=["other", "aiohttp-session-ws.v10"]),
            TIMEOUT,
        )
    assert refused.value.status == 400


async def test_push_reaches_every_tab_of_the_session_and_no_other(
    client: Client, aiohttp_client: AiohttpClient, key: bytes
) -> None:
    tabs = [await live(client) for _ in range(2)]
    feeds = [tab.pushes() for tab in tabs]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as jar:
        stranger = await asyncio.wait_for(
            connect_live(client.make_url("/live"), session=jar), TIMEOUT
        )
        strangers = stranger.pushes()
        async with client.post("/push", data={"text": "héllo <b>"}) as resp:
            assert resp.status == 200
            assert await resp.text() == "Pushed to 2 connections.\n"
        for feed in feeds:
            assert await next_text(feed) == {"kind": "text", "text": "héllo <b>"}
        await stranger.ping_server()  # a round trip: a push would have come first
        await stranger.close()
        assert [data async for data in strangers] == []
    for tab in tabs:
        await tab.close()


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        ({}, "Nothing to push: give the form field text.\n"),
        ({"text": "  "}, "Nothing to push: give the form field text.\n"),
        ({"text": "x" * 501}, "Too long: at most 500 characters, not 501.\n"),
    ],
)
async def test_push_refuses_what_it_cannot_send(
    client: Client, data: dict[str, str], answer: str
) -> None:
    async with client.post("/push", data=data) as resp:
        assert resp.status == 400
        assert await resp.text() == answer


async def test_push_with_no_connection_says_so(client: Client) -> None:
    async with client.post("/push", data={"text": "anyone?"}) as resp:
        assert await resp.text() == "Pushed to 0 connections.\n"
    tab = await live(client)
    async with client.post("/push", data={"text": "one"}) as resp:
        assert await resp.text() == "Pushed to 1 connection.\n"
    await tab.close()


async def test_the_page_gets_the_browser_client(client: Client) -> None:
    async with client.get("/session-ws/session-ws.js") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/javascript"
        assert "export async function connect" in await resp.text()


# /ws


async def test_first_frame_is_the_session_and_its_count(
    client: Client, key: bytes
) -> None:
    await client.get("/")
    ws, first = await connect(client)
    assert first == {"session": cookie_ws_id(client, key), "connections": 1}
    await ws.close()


async def test_first_socket_starts_a_session_without_the_page(
    client: Client, key: bytes
) -> None:
    ws, first = await connect(client)
    assert first["session"] == cookie_ws_id(client, key)
    assert first["connections"] == 1
    await ws.close()


async def test_ticks_count_up_and_carry_the_count(client: Client) -> None:
    ws, _ = await connect(client)
    ticks = [await receive_json(ws) for _ in range(3)]
    assert ticks == [{"tick": k, "connections": 1} for k in (1, 2, 3)]
    await ws.close()


async def test_what_the_client_sends_is_ignored(client: Client) -> None:
    ws, _ = await connect(client)
    await ws.send_str("hello?")
    await ws.send_bytes(b"\x00")
    assert await receive_json(ws) == {"tick": 1, "connections": 1}
    assert await receive_json(ws) == {"tick": 2, "connections": 1}
    await ws.close()


async def test_two_sockets_of_one_session_are_counted(client: Client) -> None:
    ws1, first1 = await connect(client)
    ws2, first2 = await connect(client)
    assert first2 == {"session": first1["session"], "connections": 2}
    await tick_with(ws1, connections=2)

    await ws2.close()
    await tick_with(ws1, connections=1)
    await ws1.close()


async def test_another_session_is_counted_apart(client: Client) -> None:
    ws, first = await connect(client)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        other.ws_connect(client.make_url("/ws")) as other_ws,
    ):
        other_first = await receive_json(other_ws)
        assert other_first["session"] != first["session"]
        assert other_first["connections"] == 1
    await ws.close()


async def test_same_origin_socket_passes_and_foreign_origin_is_refused(
    client: Client,
) -> None:
    origin = str(client.make_url("/").origin())
    ws = await asyncio.wait_for(
        client.ws_connect("/ws", headers={"Origin": origin}), TIMEOUT
    )
    assert (await receive_json(ws))["connections"] == 1
    await ws.close()

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await asyncio.wait_for(
            client.ws_connect("/ws", headers={"Origin": "http://evil.example"}),
            TIMEOUT,
        )
    assert refused.value.status == 403


async def test_frames_stop_quietly_on_a_closed_socket(
    aiohttp_client: AiohttpClient, key: bytes
) -> None:
    """The ticker ends (no error) when its socket closed under it."""
    ended: asyncio.Queue[str] = asyncio.Queue()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        async with session_ws(request) as ws:
            await ws.close()
            registry = get_registry(request)
            await asyncio.wait_for(send_frames(ws, registry, "an-id", TICK), TIMEOUT)
            ended.put_nowait("returned")
        return ws

    app = make_app(key, tick_interval=TICK)
    app.router.add_get("/closed", handler)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/closed")
    assert (await ws.receive(timeout=TIMEOUT)).type is WSMsgType.CLOSE
    assert await asyncio.wait_for(ended.get(), TIMEOUT) == "returned"


# /logout and /reset


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_logout_closes_every_socket_and_starts_a_new_session(
    client: Client, key: bytes, method: str
) -> None:
    await client.get("/")
    old_id = cookie_ws_id(client, key)
    ws1, _ = await connect(client)
    ws2, _ = await connect(client)

    resp = await client.request(method, "/logout")
    assert resp.status == 200
    assert await resp.text() == "Logged out. Closing 2 websockets of this session.\n"

    for ws in (ws1, ws2):
        msg = await until_close(ws)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == WSCloseCode.OK
    assert cookie_value(client) is None  # the session cookie is gone

    ws3, first = await connect(client)
    assert first["session"] != old_id
    assert first == {"session": cookie_ws_id(client, key), "connections": 1}
    await ws3.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_reset_closes_every_socket_and_gives_a_new_id(
    client: Client, key: bytes, method: str
) -> None:
    ws1, first1 = await connect(client)
    ws2, _ = await connect(client)

    resp = await client.request(method, "/reset")
    assert resp.status == 200
    assert await resp.text() == (
        "New session ws id. Closing 2 websockets of the old id.\n"
    )
    new_id = cookie_ws_id(client, key)
    assert new_id != first1["session"]

    for ws in (ws1, ws2):
        msg = await until_close(ws)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == WSCloseCode.OK

    ws3, first3 = await connect(client)
    assert first3 == {"session": new_id, "connections": 1}
    await ws3.close()


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/logout", "Logged out. This session had no open websocket.\n"),
        ("/reset", "New session ws id. The old id had no open websocket.\n"),
    ],
)
async def test_a_session_without_sockets_is_told_so(
    client: Client, path: str, text: str
) -> None:
    await client.get("/")
    resp = await client.post(path)
    assert resp.status == 200
    assert await resp.text() == text


async def test_one_socket_is_counted_in_the_singular(client: Client) -> None:
    ws, _ = await connect(client)
    resp = await client.post("/logout")
    assert await resp.text() == "Logged out. Closing 1 websocket of this session.\n"
    assert (await until_close(ws)).type is WSMsgType.CLOSE


async def test_logout_spares_other_sessions(client: Client) -> None:
    ws, _ = await connect(client)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        other.ws_connect(client.make_url("/ws")) as other_ws,
    ):
        await receive_json(other_ws)
        resp = await client.post("/logout")
        assert resp.status == 200
        assert (await until_close(ws)).type is WSMsgType.CLOSE
        # The other session's socket stays open and keeps ticking.
        assert "tick" in await receive_json(other_ws)
        assert not other_ws.closed


# login, and messaging between logged-in users


async def log_in(http: aiohttp.ClientSession, url: URL, user: str) -> str:
    """Log ``http``'s session in as ``user`` through ``POST /login``."""
    async with http.post(url / "login", data={"user": user}) as response:
        assert response.status == 200
        return await response.text()


async def until_closed(session: LiveSession) -> None:
    """Wait (bounded) until the server has closed ``session`` for good."""
    closed = asyncio.Event()
    remove = session.add_state_listener(lambda old, new: closed.set())
    try:
        if not session.closed:
            await asyncio.wait_for(closed.wait(), TIMEOUT)
    finally:
        remove()
    assert session.closed


async def test_login_puts_the_user_in_the_properties_under_a_new_id(
    client: Client, key: bytes
) -> None:
    anonymous = await live(client)
    properties = await anonymous.properties()
    assert "$Principal" not in properties
    assert "$Roles" not in properties
    old_id = cookie_ws_id(client, key)
    text = await log_in(client.session, client.make_url("/"), "alice")
    assert text == (
        "Logged in as alice (roles admin, user). "
        "Closing 1 websocket of the session before the login.\n"
    )
    assert cookie_ws_id(client, key) != old_id
    await until_closed(anonymous)  # the old id's
    alice = await live(client)
    properties = await alice.properties()
    assert properties["$Principal"] == "alice"
    assert properties["$Roles"] == '"admin","user"'
    assert properties["$SessionId"] == alice.session_id != anonymous.session_id
    await alice.close()

    assert await log_in(client.session, client.make_url("/"), "bob") == (
        "Logged in as bob (roles user). "
        "The session before the login had no open websocket.\n"
    )
    bob = await live(client)
    assert (await bob.properties())["$Principal"] == "bob"
    async with client.post("/logout") as response:
        assert response.status == 200
    await until_closed(bob)
    nobody = await live(client)
    assert "$Principal" not in await nobody.properties()  # the login is gone
    await nobody.close()


@pytest.mark.parametrize("data", [{"user": "mallory"}, {"user": ""}, {}])
async def test_login_refuses_who_is_not_a_demo_user(
    client: Client, data: dict[str, str]
) -> None:
    async with client.post("/login", data=data) as response:
        assert response.status == 400
        assert await response.text() == (
            "Unknown user: give the form field user, one of alice, bob, carol.\n"
        )


async def test_anonymous_sessions_may_not_do_messaging(client: Client) -> None:
    tab = await live(client)
    requests: list[tuple[str, dict[str, Any]]] = [
        ("add_handler", {"path": "demo/echo"}),
        ("add_handler", {"path": "demo/echo", "addressed": True}),
        ("send_to_path", {"path": "demo/echo", "data": 1}),
        ("send_to_session", {"path": "demo/echo", "session": tab.session_id}),
        ("send_to_filter", {"filter": "all", "path": "demo/echo"}),
    ]
    for op, args in requests:
        with pytest.raises(ProtocolError) as caught:
            await tab.request(op, **args)
        assert caught.value.code == ErrorCode.FORBIDDEN, op
    await tab.close()


async def test_logged_in_users_take_the_document_locks_and_no_other(
    client: Client,
) -> None:
    anonymous = await live(client)
    for op in ("lock", "lock_info"):
        with pytest.raises(ProtocolError) as caught:
            await anonymous.request(op, name="docs/readme")
        assert caught.value.code == ErrorCode.FORBIDDEN, op
    await log_in(client.session, client.make_url("/"), "carol")
    await until_closed(anonymous)
    carol = await live(client)
    for name in DOCUMENTS:
        held = await carol.request("lock", name=name, scope=1)
        assert (held["name"], held["owner"], held["scope"]) == (
            name,
            carol.session_id,
            1,
        )
        info = await carol.request("lock_info", name=name)
        assert (info["owner"], info["sequence"]) == (carol.session_id, held["sequence"])
        sequence = held["sequence"]
        assert await carol.request("unlock", name=name, sequence=sequence) == {
            "unlocked": True
        }
    for name in ("admin/x", "docsx", "other"):
        with pytest.raises(ProtocolError) as caught:
            await carol.request("lock", name=name)
        assert caught.value.code == ErrorCode.FORBIDDEN, name
    # the holder's principal, for the page that waits
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await log_in(http, client.make_url("/"), "bob")
        bob = await asyncio.wait_for(
            connect_live(client.make_url("/live"), session=http), TIMEOUT
        )
        properties = await bob.properties(session_id=carol.session_id)
        assert properties == {"$SessionId": carol.session_id, "user": "carol"}
        await bob.close()
    await carol.close()


async def test_logged_in_users_send_to_a_path_a_session_and_a_filter(
    client: Client,
) -> None:
    """bob answers on demo/echo; alice, in a session of her own, asks."""
    url = client.make_url("/")
    await log_in(client.session, url, "bob")
    bob = await live(client)
    asked: list[tuple[Any, str | None, dict[str, str]]] = []

    def echo(value: Any, context: RequestContext) -> dict[str, Any]:
        asked.append((value, context.sender, dict(context.session_properties)))
        if value == "no":
            raise RejectedError("bob refuses")
        return {"echo": value, "principal": "bob"}

    await bob.messaging.add_request_handler(
        "demo/echo", echo, session_properties=["$Principal"]
    )
    await bob.messaging.add_stream_handler("demo/echo", echo)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await log_in(http, url, "alice")
        alice = await asyncio.wait_for(
            connect_live(client.make_url("/live"), session=http), TIMEOUT
        )
        assert await alice.messaging.send_request_to_path("demo/echo", "hi") == {
            "echo": "hi",
            "principal": "bob",
        }
        assert asked == [("hi", alice.session_id, {"$Principal": "alice"})]
        assert await alice.messaging.send_request_to_session(
            "demo/echo", bob.session_id, "you"
        ) == {"echo": "you", "principal": "bob"}
        with pytest.raises(RejectedError, match="bob refuses"):
            await alice.messaging.send_request_to_session(
                "demo/echo", bob.session_id, "no"
            )
        responses = await alice.messaging.send_request_to_filter(
            "hasRoles ['user']", "demo/echo", "all"
        )
        assert responses.expected == 1  # alice registered no handler
        got = [(r.session, r.value) async for r in responses]
        assert got == [(bob.session_id, {"echo": "all", "principal": "bob"})]
        assert await responses.wait() == frozenset()
        await alice.close()
    await bob.close()


# the activity feed


async def next_event(subscription: Any) -> Event:
    return await asyncio.wait_for(anext(subscription), TIMEOUT)


def payload_of(event: Event) -> Any:
    assert isinstance(event.payload, EventPayloadJson)
    return event.payload.data


async def test_logged_in_users_follow_the_feed_and_say_things_in_it(
    client: Client,
) -> None:
    anonymous = await live(client)
    asked: list[tuple[str, dict[str, Any]]] = [
        ("subscribe", {"types": ["demo/*"]}),
        ("register_events", {"events": [{"type": "demo/chat/message"}]}),
        ("activity", {"what": "request", "to": "path", "path": "demo/echo"}),
    ]
    for op, args in asked:
        with pytest.raises(ProtocolError) as caught:
            await anonymous.request(op, **args)
        assert caught.value.code == ErrorCode.FORBIDDEN, op
    await log_in(client.session, client.make_url("/"), "carol")
    await until_closed(anonymous)
    carol = await live(client)
    sub = await carol.request("subscribe", types=list(FEED_TYPES))
    assert sub["recovered"] is None
    said = {"type": "json", "data": {"user": "carol", "text": "hi"}}
    await carol.request(
        "register_events", events=[{"type": "demo/chat/message", "payload": said}]
    )
    latest = await carol.request("query_latest", event_types=["demo/chat/*"])
    assert [e["payload"] for e in latest["events"]] == [said]
    refused: list[tuple[str, dict[str, Any]]] = [
        ("subscribe", {"types": ["*"]}),
        ("subscribe", {"types": ["session_ws/*"]}),
        ("query_latest", {}),  # every type
        ("register_events", {"events": [{"type": "demo/login"}]}),  # the server's
        ("register_events", {"events": [{"type": "session_ws/session/ended"}]}),
    ]
    for op, args in refused:
        with pytest.raises(ProtocolError) as caught:
            await carol.request(op, **args)
        assert caught.value.code == ErrorCode.FORBIDDEN, (op, args)
    await carol.close()


async def test_the_demo_registers_its_actions_and_the_sessions_as_events(
    client: Client,
) -> None:
    registry = get_registry_of(client)
    feed = await registry.events.subscribe([tuple(t.split("/")) for t in FEED_TYPES])
    url = client.make_url("/")
    await client.get("/")
    await log_in(client.session, url, "bob")
    login = await next_event(feed)
    assert (login.type, payload_of(login)) == (("demo", "login"), {"user": "bob"})
    bob = await live(client)
    started = await next_event(feed)
    assert started.type == ("session_ws", "session", "started")
    assert payload_of(started) == {"session": bob.session_id, "principal": "bob"}

    resp = await client.post("/push", data={"text": "secret text"})
    assert resp.status == 200
    pushed = await next_event(feed)
    assert (pushed.type, payload_of(pushed)) == (
        ("demo", "push"),
        {"user": "bob", "reached": 1},  # that it pushed, not what
    )

    # the page tells what its user did; the server checks the locks
    assert await bob.request("activity", what="lock", name="docs/plan") == {
        "recorded": False  # not its lock
    }
    held = await bob.request("lock", name="docs/plan", scope=1)
    assert await bob.request("activity", what="lock", name="docs/plan") == {
        "recorded": True
    }
    granted = await next_event(feed)
    assert (granted.type, payload_of(granted)) == (
        ("demo", "lock", "granted"),
        {"user": "bob", "name": "docs/plan", "sequence": held["sequence"]},
    )
    assert await bob.request("activity", what="unlock", name="docs/plan") == {
        "recorded": False  # it holds it still
    }
    await bob.request("unlock", name="docs/plan", sequence=held["sequence"])
    await bob.request("activity", what="unlock", name="docs/plan")
    released = await next_event(feed)
    assert (released.type, payload_of(released)) == (
        ("demo", "lock", "released"),
        {"user": "bob", "name": "docs/plan"},
    )
    await bob.request("activity", what="request", to="filter", path="demo/echo")
    asked = await next_event(feed)
    assert (asked.type, payload_of(asked)) == (
        ("demo", "messaging", "request"),
        {"user": "bob", "to": "filter", "path": "demo/echo"},
    )
    for args in [
        {"what": "dance"},
        {"what": "lock", "name": "admin/x"},
        {"what": "request", "to": "moon", "path": "x"},
    ]:
        with pytest.raises(ProtocolError) as caught:
            await bob.request("activity", **args)
        assert caught.value.code == ErrorCode.BAD_FRAME, args

    resp = await client.post("/logout")
    assert resp.status == 200
    out = await next_event(feed)
    assert (out.type, payload_of(out)) == (("demo", "logout"), {"user": "bob"})
    await until_closed(bob)
    feed.close()


async def test_an_action_goes_on_when_its_event_cannot_be_registered(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    registry = get_registry_of(client)

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise EventsUnavailableError("the event log cannot be reached")

    await client.get("/")
    with mock.patch.object(registry.events, "register", unavailable):
        resp = await client.post("/push", data={"text": "hi"})
    assert resp.status == 200
    assert "Could not register the event demo/push" in caplog.text


# the key


async def test_apps_with_one_key_share_sessions(
    aiohttp_client: AiohttpClient, key: bytes
) -> None:
    first = await aiohttp_client(make_app(key, tick_interval=TICK))
    second = await aiohttp_client(make_app(key, tick_interval=TICK))
    stranger = await aiohttp_client(make_app(random_key(), tick_interval=TICK))
    await first.get("/")
    session_ws_id = cookie_ws_id(first, key)
    cookie = cookie_value(first)
    assert cookie is not None
    for other in (second, stranger):
        other.session.cookie_jar.update_cookies(
            {COOKIE_NAME: cookie}, response_url=URL(str(other.make_url("/")))
        )

    ws, hello = await connect(second)
    assert hello["session"] == session_ws_id
    await ws.close()
    ws, hello = await connect(stranger)  # cannot read the cookie: a new session
    assert hello["session"] != session_ws_id
    await ws.close()


async def test_redis_nodes_share_sockets_and_logout(
    aiohttp_client: AiohttpClient, key: bytes, redis_server: RedisServer
) -> None:
    first = await aiohttp_client(
        make_app(key, tick_interval=TICK, redis_url=redis_server.url)
    )
    second = await aiohttp_client(
        make_app(key, tick_interval=TICK, redis_url=redis_server.url)
    )
    assert isinstance(get_registry_of(first), RedisSessionWSRegistry)
    await first.get("/")
    cookie = cookie_value(first)
    assert cookie is not None
    second.session.cookie_jar.update_cookies(
        {COOKIE_NAME: cookie}, response_url=URL(str(second.make_url("/")))
    )
    page = await (await second.get("/")).text()
    assert f'<code id="node">127.0.0.1:{second.port}</code>' in page
    assert f"Redis at {redis_server.url}" in page
    first_ws, _ = await connect(first)
    second_ws, hello = await connect(second)
    assert hello["connections"] == 2  # counted on both nodes
    async with first.get("/logout") as response:
        assert response.status == 200
        assert "Closing 2 websockets of this session." in await response.text()
    assert (await until_close(second_ws)).type is WSMsgType.CLOSE
    assert (await until_close(first_ws)).type is WSMsgType.CLOSE


async def test_a_push_on_one_redis_node_reaches_the_tabs_on_both(
    aiohttp_client: AiohttpClient, key: bytes, redis_server: RedisServer
) -> None:
    nodes = [
        await aiohttp_client(make_app(key, redis_url=redis_server.url))
        for _ in range(2)
    ]
    await nodes[0].get("/")
    cookie = cookie_value(nodes[0])
    assert cookie is not None
    nodes[1].session.cookie_jar.update_cookies(
        {COOKIE_NAME: cookie}, response_url=URL(str(nodes[1].make_url("/")))
    )
    tabs = [await live(node) for node in nodes]
    assert tabs[0].session_id == tabs[1].session_id  # one session, two nodes
    assert await tabs[1].request("connections") == {"count": 2}
    feeds = [tab.pushes() for tab in tabs]
    for sender in nodes:
        async with sender.post("/push", data={"text": f"from {sender.port}"}) as resp:
            assert await resp.text() == "Pushed to 2 connections.\n"
        for feed in feeds:
            assert await next_text(feed) == {
                "kind": "text",
                "text": f"from {sender.port}",
            }
    for tab in tabs:
        await tab.close()


async def test_the_count_falls_back_to_this_node_while_redis_is_down(
    aiohttp_client: AiohttpClient, key: bytes, own_redis_server: RedisServer
) -> None:
    client = await aiohttp_client(
        make_app(key, tick_interval=TICK, redis_url=own_redis_server.url)
    )
    ws, _ = await connect(client)
    own_redis_server.stop()
    assert await demo_count(get_registry_of(client), cookie_ws_id(client, key)) == 1
    async with client.post("/logout") as response:
        assert await response.text() == (
            "Logged out. Closing 1 websocket of this session on this node "
            "(Redis is down: the other nodes follow once it is back).\n"
        )
    assert (await until_close(ws)).type is WSMsgType.CLOSE


def get_registry_of(client: Client) -> Any:
    """The registry of the demo app behind ``client``."""
    app = client.app
    assert app is not None
    return app[REGISTRY_APP_KEY]


def test_parse_args_redis() -> None:
    args = demo_main.parse_args(["--redis", "redis://127.0.0.1:6379"])
    assert args.redis == "redis://127.0.0.1:6379"
    assert demo_main.parse_args([]).redis is None


def test_a_generated_key_is_loaded() -> None:
    value = Fernet.generate_key().decode()
    assert load_key({KEY_ENV_VAR: value}) == base64.urlsafe_b64decode(value)
    assert load_key({KEY_ENV_VAR: f"  {value}\n"}) == base64.urlsafe_b64decode(value)


def test_an_unset_key_is_none_and_random_keys_differ() -> None:
    assert load_key({}) is None
    assert load_key({"OTHER": "x"}) is None
    assert len(random_key()) == 32
    assert random_key() != random_key()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not a key",
        base64.urlsafe_b64encode(b"too short").decode(),
        base64.urlsafe_b64encode(bytes(33)).decode(),
        "!" + Fernet.generate_key().decode()[1:],
        "é" * 44,
    ],
)
def test_a_bad_key_says_how_to_make_one(value: str) -> None:
    with pytest.raises(InvalidKeyError) as error:
        load_key({KEY_ENV_VAR: value})
    message = str(error.value)
    assert KEY_ENV_VAR in message
    assert ".venv/bin/python -m demo.key" in message
    assert "32 bytes" in message
    if value:
        assert value not in message  # the value may be a secret: never echoed


def test_make_app_checks_its_arguments(key: bytes) -> None:
    with pytest.raises(ValueError, match="32 url-safe"):
        make_app(b"short")
    with pytest.raises(ValueError, match="tick_interval"):
        make_app(key, tick_interval=0)


# the command line


def test_parse_args_defaults() -> None:
    args = demo_main.parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_parse_args_host_and_port() -> None:
    args = demo_main.parse_args(["--host", "::1", "--port", "0"])
    assert (args.host, args.port) == ("::1", 0)


@pytest.mark.parametrize(
    ("port", "complaint"),
    [("http", "not a port number"), ("-1", "out of range"), ("65536", "out of range")],
)
def test_parse_args_refuses_bad_ports(
    port: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        demo_main.parse_args(["--port", port])
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_help_names_the_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        demo_main.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert KEY_ENV_VAR in out
    assert "--port" in out


class FakeServe:
    """Stands in for web.run_app: records what it was asked to serve."""

    def __init__(self) -> None:
        self.calls: list[tuple[web.Application, str, int]] = []

    def __call__(self, app: web.Application, host: str, port: int) -> None:
        self.calls.append((app, host, port))


async def test_main_serves_an_app_with_the_key_from_the_environment(
    aiohttp_client: AiohttpClient, key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = FakeServe()
    status = demo_main.main(
        ["--host", "127.0.0.1", "--port", "8181"],
        environ={KEY_ENV_VAR: env_key(key)},
        serve=serve,
    )
    assert status == 0
    assert capsys.readouterr().err == ""
    [(app, host, port)] = serve.calls
    assert (host, port) == ("127.0.0.1", 8181)

    client = await aiohttp_client(app)
    await client.get("/")
    assert isinstance(cookie_ws_id(client, key), str)  # sealed with that key


def test_main_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, "bad")
    serve = FakeServe()
    assert demo_main.main([], serve=serve) == 2
    assert serve.calls == []


def test_main_without_a_key_uses_a_random_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve = FakeServe()
    with caplog.at_level(logging.INFO, logger="demo"):
        assert demo_main.main([], environ={}, serve=serve) == 0
    [record] = caplog.records
    assert record.levelno == logging.INFO  # one process: nothing to share
    assert f"{KEY_ENV_VAR} is not set" in record.getMessage()
    [(_, host, port)] = serve.calls
    assert (host, port) == ("127.0.0.1", 8080)


def test_main_warns_when_a_cluster_node_has_no_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nodes with random keys cannot read each other's cookies: logout looks broken."""
    serve = FakeServe()
    argv = ["--redis", "redis://127.0.0.1:6379"]
    with caplog.at_level(logging.INFO, logger="demo"):
        assert demo_main.main(argv, environ={}, serve=serve) == 0
    [record] = caplog.records
    assert (record.name, record.levelno) == ("demo", logging.WARNING)
    message = record.getMessage()
    assert f"{KEY_ENV_VAR} is not set" in message
    assert f'export {KEY_ENV_VAR}="$({MAKE_KEY_COMMAND})"' in message
    [(app, _, _)] = serve.calls
    assert isinstance(app[REGISTRY_APP_KEY], RedisSessionWSRegistry)


def test_main_with_a_key_and_redis_does_not_warn(
    key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["--redis", "redis://127.0.0.1:6379"]
    environ = {KEY_ENV_VAR: env_key(key)}
    with caplog.at_level(logging.INFO, logger="demo"):
        assert demo_main.main(argv, environ=environ, serve=FakeServe()) == 0
    assert caplog.records == []


class FailingServe:
    """Stands in for web.run_app when it cannot listen."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    def __call__(self, app: web.Application, host: str, port: int) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.EADDRINUSE, "error while attempting to bind"),
            "demo: port 8080 is in use; pass --port or make demo PORT=...\n",
        ),
        (
            OSError(errno.EADDRNOTAVAIL, "error while attempting to bind"),
            "demo: cannot listen on 127.0.0.1 port 8080: "
            "cannot assign requested address\n",
        ),
    ],
)
def test_main_explains_why_it_cannot_listen_in_one_line(
    key: bytes, capsys: pytest.CaptureFixture[str], error: OSError, line: str
) -> None:
    environ = {KEY_ENV_VAR: env_key(key)}
    assert demo_main.main([], environ=environ, serve=FailingServe(error)) == 1
    assert capsys.readouterr().err == line


def test_main_lets_other_errors_through(key: bytes) -> None:
    error = OSError(errno.ENOENT, "not a listening problem")
    environ = {KEY_ENV_VAR: env_key(key)}
    with pytest.raises(OSError, match="not a listening problem"):
        demo_main.main([], environ=environ, serve=FailingServe(error))


def test_configure_logging_logs_info_with_time_and_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    basic_config = mock.Mock()
    monkeypatch.setattr(logging, "basicConfig", basic_config)
    demo_main.configure_logging()
    basic_config.assert_called_once_with(
        level=logging.INFO, format=demo_main.LOG_FORMAT
    )
    assert "%(asctime)s" in demo_main.LOG_FORMAT
    assert "%(name)s" in demo_main.LOG_FORMAT


def test_demo_key_prints_a_key_that_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "demo.key")  # as a fresh `python -m`
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("demo.key", run_name="__main__")
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    key = load_key({KEY_ENV_VAR: printed})
    assert key is not None
    assert printed == env_key(key) + "\n"


def test_main_with_a_bad_key_explains_and_serves_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve = FakeServe()
    assert demo_main.main([], environ={KEY_ENV_VAR: "oops"}, serve=serve) == 2
    assert serve.calls == []
    err = capsys.readouterr().err
    assert err.startswith("python -m demo: error: ")
    assert MAKE_KEY_COMMAND in err
    assert "Traceback" not in err


def test_serve_forever_runs_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    run_app = mock.Mock()
    monkeypatch.setattr(web, "run_app", run_app)
    app = web.Application()
    demo_main.serve_forever(app, "127.0.0.1", 8282)
    run_app.assert_called_once_with(app, host="127.0.0.1", port=8282)


def test_module_runs_as_main(monkeypatch: pytest.MonkeyPatch) -> None:
    run_app = mock.Mock()
    monkeypatch.setattr(web, "run_app", run_app)
    monkeypatch.setattr(sys, "argv", ["demo", "--port", "8383"])
    monkeypatch.setenv(KEY_ENV_VAR, env_key(random_key()))
    monkeypatch.delitem(sys.modules, "demo.__main__")  # as a fresh `python -m`
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("demo", run_name="__main__")
    assert exit_.value.code == 0
    assert run_app.call_args.kwargs == {"host": "127.0.0.1", "port": 8383}


# the real process


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV_VAR}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


def test_process_with_a_bad_key_exits_with_a_message_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=REPO,
        env=demo_env(**{KEY_ENV_VAR: "not-a-key"}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert KEY_ENV_VAR in done.stderr
    assert MAKE_KEY_COMMAND in done.stderr
    assert done.stdout == ""


def test_process_on_a_busy_port_says_so_in_one_line(key: bytes) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "demo", "--port", str(port)],
            cwd=REPO,
            env=demo_env(**{KEY_ENV_VAR: env_key(key)}),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == (
        f"demo: port {port} is in use; pass --port or make demo PORT=...\n"
    )
    assert done.stdout == ""


LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): ",
    re.MULTILINE,
)
"""A line of the demo's log: time, level, logger name."""


@contextlib.asynccontextmanager
async def running_demo(
    key: bytes, *args: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, URL]]:
    """``python -m demo --port 0 *args`` running; yields it and its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo",
        "--port",
        "0",
        *args,
        cwd=REPO,
        env=demo_env(**{KEY_ENV_VAR: env_key(key)}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        found = re.search(rb"Running on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        yield proc, URL(found[1].decode())
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.communicate(), 30)


@pytest.fixture
async def demo_process(
    key: bytes,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, URL]]:
    """``python -m demo --port 0`` running on the memory backend."""
    async with running_demo(key) as running:
        yield running


async def log_line(proc: asyncio.subprocess.Process, text: str) -> str:
    """Read the process's log until a line holds ``text``; return that line."""
    assert proc.stderr is not None
    stderr = proc.stderr

    async def read() -> str:
        while True:
            line = (await stderr.readline()).decode()
            assert line, f"the log ended before {text!r}"
            if text in line:
                return line

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_process_serves_and_closes_sockets_on_ctrl_c(
    demo_process: tuple[asyncio.subprocess.Process, URL], key: bytes
) -> None:
    proc, url = demo_process
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.text()
            assert "aiohttp-session-ws demo" in page
            assert f'<code id="node">{url.host}:{url.port}</code>' in page
        async with http.ws_connect(url / "ws") as ws:
            hello = await receive_json(ws)
            assert hello["connections"] == 1
            proc.send_signal(signal.SIGINT)
            msg = await until_close(ws)
            assert msg.type is WSMsgType.CLOSE
            assert msg.data == WSCloseCode.GOING_AWAY
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    # the log has time and logger name, at INFO: here the access log's line
    lines = [m.groupdict() for m in LOG_LINE.finditer(err.decode())]
    assert {"level": "INFO", "name": "aiohttp.access"} in lines


async def test_process_logs_a_redis_outage_and_the_recovery(
    key: bytes, own_redis_server: RedisServer
) -> None:
    async with running_demo(key, "--redis", own_redis_server.url) as (proc, _):
        own_redis_server.stop()
        lost = await log_line(proc, "lost Redis")
        assert LOG_LINE.match(lost)
        assert " WARNING aiohttp_session_ws.redis: " in lost
        own_redis_server.start()
        back = await log_line(proc, "is back in the cluster")
        assert " INFO aiohttp_session_ws.redis: " in back


# the README and the quickstart, run as written


def markdown_blocks(name: str) -> list[str]:
    """The ``python`` code blocks of a Markdown file of the checkout."""
    text = (REPO / name).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def rst_blocks(name: str) -> list[str]:
    """The ``python`` code blocks of a reStructuredText file, dedented."""
    text = (REPO / name).read_text()
    pattern = r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)"
    return [textwrap.dedent(m[1]) for m in re.finditer(pattern, text, re.MULTILINE)]


def run_server_code(code: str, monkeypatch: pytest.MonkeyPatch) -> web.Application:
    """Run a snippet as ``python app.py`` would; return the app it serves."""
    run_app = mock.Mock()
    monkeypatch.setattr(web, "run_app", run_app)
    exec(compile(code, "app.py", "exec"), {"__name__": "__main__"})
    [call] = run_app.call_args_list
    assert call.kwargs == {"host": "127.0.0.1", "port": 8080}
    app = call.args[0]
    assert isinstance(app, web.Application)
    return app


async def run_client_code(code: str, client: Client) -> None:
    """Run a client snippet's ``main()`` against ``client``'s server."""
    namespace: dict[str, Any] = {"__name__": "client"}
    exec(compile(code, "client.py", "exec"), namespace)
    assert namespace["SERVER"] == "http://127.0.0.1:8080"
    namespace["SERVER"] = f"http://127.0.0.1:{client.port}"
    await asyncio.wait_for(namespace["main"](), TIMEOUT)


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param(lambda: markdown_blocks("README.md")[:2], id="README"),
        pytest.param(lambda: rst_blocks("docs/quickstart.rst")[:2], id="quickstart"),
    ],
)
async def test_the_quickstart_runs_as_written(
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    blocks: Any,
) -> None:
    server_code, client_code = blocks()
    assert 'add_post("/logout", logout)' in server_code
    assert "aiohttp.CookieJar(unsafe=True)" in client_code
    client = await aiohttp_client(run_server_code(server_code, monkeypatch))

    page = await (await client.get("/")).text()
    assert '"/ws"' in page
    assert "fetch('/logout'" in page

    capsys.readouterr()
    await run_client_code(client_code, client)
    assert capsys.readouterr().out == "echo: hello\nCLOSE 1000\n"


def test_make_demo_installs_the_demo_extra_and_takes_a_port() -> None:
    # run from `make test` too: the outer make's variables must not leak in
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "demo", "PORT=9123"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=env,
    )
    commands = done.stdout.splitlines()
    assert ".venv/bin/python -m pip install --quiet -e '.[demo]'" in commands
    assert not [c for c in commands if "[demo,test" in c]
    assert commands[-1] == ".venv/bin/python -m demo --host 127.0.0.1 --port 9123"
