"""The protocol endpoint over real sockets: hello, ops, errors, limits, slow readers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    SUBPROTOCOL,
    ProtocolLimits,
    SessionWSRegistry,
    session_ws,
)
from aiohttp_session_ws.authorization import Action
from aiohttp_session_ws.endpoint import serve_protocol

from .apps import TIMEOUT, Client, build_app, cookie_ws_id, registry_of


async def live_client(
    aiohttp_client: AiohttpClient, registry: SessionWSRegistry | None = None
) -> Client:
    return await aiohttp_client(build_app(registry))


async def connect(client: Client, path: str = "/live") -> tuple[Any, dict[str, Any]]:
    ws = await client.ws_connect(path, protocols=(SUBPROTOCOL,))
    hello = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    return ws, hello


async def ask(ws: Any, frame: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
    reply: dict[str, Any] = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    return reply


async def test_hello_gives_the_handle_never_the_id(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await live_client(aiohttp_client)
    ws, hello = await connect(client)
    assert ws.protocol == SUBPROTOCOL
    session_ws_id = cookie_ws_id(client)
    assert hello["op"] == "hello"
    assert hello["version"] == 1
    assert hello["session"] == registry_of(client).public_handle(session_ws_id)
    assert session_ws_id not in json.dumps(hello)
    assert hello["limits"]["max_frame_size"] == 64 * 1024
    assert await ask(ws, {"op": "ping", "id": 7}) == {
        "op": "result",
        "id": 7,
        "data": {},
    }
    props = (await ask(ws, {"op": "properties", "id": 8}))["data"]
    assert props["$SessionId"] == hello["session"]
    assert props["$ConnectionId"] == hello["connection"]
    assert props["$ClientIP"] == "127.0.0.1"
    assert props["$Transport"] == "websocket"
    assert session_ws_id not in json.dumps(props)
    await ws.close()


async def test_the_subprotocol_must_be_offered(aiohttp_client: AiohttpClient) -> None:
    client = await live_client(aiohttp_client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/live")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("frame", "code", "frame_id"),
    [
        ("not json", "bad_frame", None),
        ("[1, 2]", "bad_frame", None),
        ('{"op": "ping"}', "bad_frame", None),
        ('{"op": "ping", "id": -1}', "bad_frame", None),
        ('{"op": "ping", "id": true}', "bad_frame", None),
        ('{"op": 3, "id": 1}', "bad_frame", 1),
        ('{"op": "nope", "id": 2}', "unknown_op", 2),
        ('{"op": "hello", "id": 2}', "unknown_op", 2),
        ('{"op": "ping", "id": 3, "extra": 1}', "bad_frame", 3),
        ('{"op": "properties", "id": 4, "session": 5}', "bad_frame", 4),
        ('{"op": "properties", "id": 5, "session": "nobody"}', "forbidden", 5),
        ('{"op": "ping", "id": 6, "pad": "' + "x" * 70_000 + '"}', "too_large", None),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_connection_goes_on(
    aiohttp_client: AiohttpClient, frame: str, code: str, frame_id: int | None
) -> None:
    client = await live_client(aiohttp_client)
    ws, _ = await connect(client)
    reply = await ask(ws, frame)
    assert reply["op"] == "error"
    assert (reply["code"], reply["id"]) == (code, frame_id)
    assert isinstance(reply["message"], str)
    assert reply["message"]
    assert (await ask(ws, {"op": "ping", "id": 9}))["op"] == "result"
    assert registry_of(client).stats().errors == {code: 1}
    await ws.close()


async def test_a_binary_frame_is_refused(aiohttp_client: AiohttpClient) -> None:
    client = await live_client(aiohttp_client)
    ws, _ = await connect(client)
    await ws.send_bytes(b"\x00")
    reply = json.loads((await ws.receive(timeout=TIMEOUT)).data)
    assert reply["code"] == "bad_frame"
    await ws.close()


async def test_a_policy_may_allow_reading_another_session(
    aiohttp_client: AiohttpClient,
) -> None:
    asked: list[Action] = []

    async def policy(request: web.Request, action: Action) -> bool:
        asked.append(action)
        return True

    client = await live_client(aiohttp_client, SessionWSRegistry(authorize=policy))
    other = await aiohttp_client(client.server)
    ws, _ = await connect(client)
    other_ws, other_hello = await connect(other)
    registry = registry_of(client)
    assert await registry.set_session_properties(cookie_ws_id(other), {"team": "b"})
    reply = await ask(
        ws, {"op": "properties", "id": 1, "session": other_hello["session"]}
    )
    assert reply["data"] == {"$SessionId": other_hello["session"], "team": "b"}
    assert asked == [
        Action("properties", "session_ws.view_session", other_hello["session"])
    ]
    missing = await ask(ws, {"op": "properties", "id": 2, "session": "x" * 22})
    assert missing["code"] == "not_found"
    await ws.close()
    await other_ws.close()


async def test_user_properties_and_the_factory(aiohttp_client: AiohttpClient) -> None:
    def factory(request: web.Request) -> dict[str, Any]:
        return {"tab": request.query.get("tab", "?"), "$Roles": ["b", "a"]}

    client = await live_client(
        aiohttp_client, SessionWSRegistry(properties_factory=factory)
    )
    ws, _ = await connect(client, "/live?tab=1")
    registry = registry_of(client)
    session_ws_id = cookie_ws_id(client)
    assert await registry.set_session_properties(session_ws_id, {"lang": "en"})
    props = (await ask(ws, {"op": "properties", "id": 1}))["data"]
    assert props["tab"] == "1"
    assert props["lang"] == "en"
    assert props["$Roles"] == '"a","b"'
    assert await registry.set_session_properties(session_ws_id, {"lang": None})
    props = (await ask(ws, {"op": "properties", "id": 2}))["data"]
    assert "lang" not in props
    with pytest.raises(ValueError, match="fixed properties"):
        await registry.set_session_properties(session_ws_id, {"$Principal": "x"})
    with pytest.raises(ValueError, match="invalid"):
        await registry.set_session_properties(session_ws_id, {"a b": "x"})
    with pytest.raises(ValueError, match="must be a str"):
        await registry.set_session_properties(session_ws_id, {"a": 1})  # type: ignore[dict-item]
    await ws.close()


async def test_push_reaches_every_protocol_connection_of_the_session(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await live_client(aiohttp_client)
    stranger = await aiohttp_client(client.server)
    first, _ = await connect(client)
    second, _ = await connect(client)
    raw = await client.ws_connect("/ws")  # not a protocol connection
    other, _ = await connect(stranger)
    registry = registry_of(client)
    assert await registry.send_to_session(cookie_ws_id(client), {"n": 1}) == 2
    for ws in (first, second):
        push = json.loads((await ws.receive(timeout=TIMEOUT)).data)
        assert push == {"op": "push", "data": {"n": 1}}
    assert await registry.broadcast("all") == 3
    for ws in (first, second, other):
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["data"] == "all"
    with pytest.raises(TypeError):
        await registry.send_to_session(cookie_ws_id(client), object())
    stats = registry.stats()
    assert (stats.connections, stats.protocol_connections, stats.sessions) == (4, 3, 2)
    for ws in (first, second, raw, other):
        await ws.close()


async def test_too_many_pending_requests_get_limit(
    aiohttp_client: AiohttpClient,
) -> None:
    release = asyncio.Event()
    registry = SessionWSRegistry(limits=ProtocolLimits(max_pending=2))

    async def slow(connection: Any, request: Any) -> str:
        await release.wait()
        return "done"

    from aiohttp_session_ws.protocol import Op

    registry.ops.add(Op("slow", slow))
    client = await live_client(aiohttp_client, registry)
    ws, _ = await connect(client)
    for n in range(2):
        await ws.send_str(json.dumps({"op": "slow", "id": n}))
    reply = await ask(ws, {"op": "slow", "id": 2})
    assert (reply["code"], reply["id"]) == ("limit", 2)
    assert registry.stats().pending_requests == 2
    release.set()
    answers = [json.loads((await ws.receive(timeout=TIMEOUT)).data) for _ in range(2)]
    assert sorted(a["id"] for a in answers) == [0, 1]
    await ws.close()


async def test_a_request_that_takes_too_long_times_out(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry(limits=ProtocolLimits(request_timeout=0.05))

    async def hang(connection: Any, request: Any) -> None:
        await asyncio.Event().wait()

    from aiohttp_session_ws.protocol import Op

    registry.ops.add(Op("hang", hang))
    client = await live_client(aiohttp_client, registry)
    ws, _ = await connect(client)
    reply = await ask(ws, {"op": "hang", "id": 1})
    assert (reply["code"], reply["id"]) == ("timeout", 1)
    await ws.close()


async def test_over_the_rate_errors_then_closes_1008(
    aiohttp_client: AiohttpClient,
) -> None:
    limits = ProtocolLimits(rate=0.001, burst=3, rate_close_after=5)
    client = await live_client(aiohttp_client, SessionWSRegistry(limits=limits))
    ws, _ = await connect(client)
    ping = json.dumps({"op": "ping", "id": 1})
    for _ in range(3):
        assert (await ask(ws, ping))["op"] == "result"
    for _ in range(4):
        refused = await ask(ws, ping)
        assert (refused["code"], refused["id"]) == ("limit", 1)
    await ws.send_str(ping)
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1008
    assert registry_of(client).stats().rate_closes == 1


async def test_a_reader_that_stalls_loses_old_pushes_not_memory(
    aiohttp_client: AiohttpClient,
) -> None:
    limits = ProtocolLimits(max_queue=8)
    client = await live_client(aiohttp_client, SessionWSRegistry(limits=limits))
    ws, _ = await connect(client)
    registry = registry_of(client)
    session_ws_id = cookie_ws_id(client)
    # the client's socket stops reading: the server's write buffer fills
    client_transport = ws._response.connection.transport
    client_transport.pause_reading()
    payload = "x" * 60_000
    for n in range(200):
        await registry.send_to_session(session_ws_id, {"n": n, "pad": payload})
    stats = registry.stats()
    assert stats.queue_drops > 0
    client_transport.resume_reading()
    seen: list[int] = []
    missed = 0
    while len(seen) + missed < 200:
        frame = json.loads((await ws.receive(timeout=TIMEOUT)).data)
        missed += frame.get("missed", 0)
        seen.append(frame["data"]["n"])
    assert seen == sorted(seen)
    assert seen[-1] == 199
    assert missed == stats.queue_drops == 200 - len(seen)
    await ws.close()


async def test_overflow_close_policy_closes_1013(aiohttp_client: AiohttpClient) -> None:
    limits = ProtocolLimits(max_queue=4, overflow="close")
    client = await live_client(aiohttp_client, SessionWSRegistry(limits=limits))
    ws, _ = await connect(client)
    registry = registry_of(client)
    client_transport = ws._response.connection.transport
    client_transport.pause_reading()
    for _ in range(100):
        await registry.send_to_session(cookie_ws_id(client), {"pad": "x" * 60_000})
    assert registry.stats().overflow_closes == 1
    client_transport.resume_reading()
    while True:
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1013


async def test_an_app_handler_can_serve_the_protocol(
    aiohttp_client: AiohttpClient,
) -> None:
    opened: list[str] = []

    async def live(request: web.Request) -> web.WebSocketResponse:
        async with session_ws(request, protocols=[SUBPROTOCOL]) as ws:
            opened.append("open")
            await serve_protocol(request, ws)
        return ws

    async def not_registered(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        with pytest.raises(RuntimeError, match="session_ws"):
            await serve_protocol(request, ws)
        await ws.close()
        return ws

    app = build_app(routes=[web.get("/mine", live), web.get("/bad", not_registered)])
    client = await aiohttp_client(app)
    ws, hello = await connect(client, "/mine")
    assert hello["op"] == "hello"
    assert opened == ["open"]
    await ws.close()
    bad = await client.ws_connect("/bad")
    assert (await bad.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.CLOSE


async def test_a_frame_over_four_times_the_limit_closes_1009(
    aiohttp_client: AiohttpClient,
) -> None:
    limits = ProtocolLimits(max_frame_size=1000)
    client = await live_client(aiohttp_client, SessionWSRegistry(limits=limits))
    ws, hello = await connect(client)
    assert hello["limits"]["max_frame_size"] == 1000
    reply = await ask(ws, "x" * 3000)  # too large, but read: an error frame
    assert reply["code"] == "too_large"
    await ws.send_str("x" * 5000)
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1009


async def test_the_origin_check_applies_to_the_endpoint(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await live_client(aiohttp_client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect(
            "/live", protocols=(SUBPROTOCOL,), origin="https://evil.example"
        )
    assert caught.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/live", origin="https://evil.example")
    assert caught.value.status == 403  # the origin is checked first
    plain = await client.get("/live")
    assert plain.status == 400  # not an upgrade


async def test_a_closed_session_closes_its_protocol_connections(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await live_client(aiohttp_client)
    ws, _ = await connect(client)
    registry = registry_of(client)
    assert await registry.close_all_session(cookie_ws_id(client)) == 1
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1000
    assert registry.stats().protocol_connections == 0


async def test_an_op_may_answer_with_a_code_of_its_own(
    aiohttp_client: AiohttpClient,
) -> None:
    from aiohttp_session_ws import Op, ProtocolError

    async def quota(connection: Any, request: Any) -> None:
        raise ProtocolError("quota", "over the quota")

    registry = SessionWSRegistry()
    registry.ops.add(Op("spend", quota))
    client = await live_client(aiohttp_client, registry)
    ws, _ = await connect(client)
    reply = await ask(ws, {"op": "spend", "id": 4})
    assert (reply["code"], reply["id"]) == ("quota", 4)
    assert registry.stats().errors == {"quota": 1}
    await ws.close()


@pytest.mark.parametrize(
    "values", [{"a\x00b": "x"}, {"\ud800": "x"}, {"k": "\udc80"}, {"": "x"}]
)
async def test_property_keys_and_values_must_be_text(
    aiohttp_client: AiohttpClient, values: dict[str, str]
) -> None:
    client = await live_client(aiohttp_client)
    ws, _ = await connect(client)
    with pytest.raises(ValueError, match="property"):
        await registry_of(client).set_session_properties(cookie_ws_id(client), values)
    await ws.close()


async def test_a_failing_properties_factory_closes_1011(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    def factory(request: web.Request) -> dict[str, Any]:
        return {"bad key": "x"}

    client = await live_client(
        aiohttp_client, SessionWSRegistry(properties_factory=factory)
    )
    ws = await client.ws_connect("/live", protocols=(SUBPROTOCOL,))
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1011
    assert "Could not make the properties" in caplog.text
