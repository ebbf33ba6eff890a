"""The aiohttp face, through real HTTP and websockets: setup, middleware, session_ws."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http.cookies import SimpleCookie

import aiohttp
import aiohttp_session
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

from aiohttp_session_ws import (
    DEFAULT_SESSION_KEY,
    REGISTRY_APP_KEY,
    REGISTRY_KEY,
    SessionWSRegistry,
    delete_session_ws_id,
    ensure_session_ws_id,
    get_registry,
    get_session_ws_id,
    new_session_ws_id,
    schedule_close_all_session_ws,
    session_ws,
    session_ws_middleware,
    setup,
    setup_session_ws,
)
from aiohttp_session_ws.web import SESSION_MIDDLEWARE_MISSING

from .apps import (
    HANDLER_EXITS,
    TIMEOUT,
    build_app,
    cookie_session,
    cookie_ws_id,
    echo_handler,
    expect_close,
    handler_exits,
    open_ws,
    registry_of,
)

routes = web.RouteTableDef()


@routes.get("/id")
async def show_id(request: web.Request) -> web.Response:
    return web.json_response({"id": await get_session_ws_id(request)})


@routes.post("/new")
async def renew_id(request: web.Request) -> web.Response:
    await new_session_ws_id(request)
    return web.json_response({"id": await get_session_ws_id(request)})


@routes.post("/delete")
async def drop_id(request: web.Request) -> web.Response:
    await delete_session_ws_id(request)
    return web.json_response({"id": await get_session_ws_id(request)})


@routes.post("/ensure")
async def make_sure(request: web.Request) -> web.Response:
    await ensure_session_ws_id(request)
    return web.json_response({"id": await get_session_ws_id(request)})


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    response = web.Response(text="bye")
    await schedule_close_all_session_ws(request, response)
    await new_session_ws_id(request)
    return response


@routes.post("/logout-redirect")
async def logout_redirect(request: web.Request) -> web.Response:
    redirect = web.HTTPFound("/id")
    await schedule_close_all_session_ws(request, redirect)
    (await aiohttp_session.get_session(request)).invalidate()
    raise redirect


CANCELLED_TASKS: list[asyncio.Task[None]] = []


@routes.post("/logout-cancelled")
async def logout_cancelled(request: web.Request) -> web.Response:
    response = web.Response(text="bye")
    await schedule_close_all_session_ws(request, response)
    CANCELLED_TASKS.append(request.task)
    request.task.cancel()  # the connection's task ends by cancellation
    return response


async def test_websocket_gets_an_id_and_its_cookie_rides_on_the_upgrade(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app(middleware=False))
    ws = await open_ws(client)
    session_id = cookie_ws_id(client)  # set by the 101 response alone
    assert list(registry_of(client)) == [session_id]
    await ws.close()


async def test_middleware_gives_every_session_an_id(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app(routes=routes))
    async with client.get("/id") as resp:
        shown = (await resp.json())["id"]
    assert isinstance(shown, str)
    assert len(shown) == 32
    assert cookie_ws_id(client) == shown


async def test_sockets_of_one_session_share_an_id(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app())
    first, second = await open_ws(client), await open_ws(client)
    registry = registry_of(client)
    session_id = cookie_ws_id(client)
    assert len(registry[session_id]) == 2
    assert await registry.count_connections(session_id) == 2
    records = registry.connections(session_id)
    assert {r.session_ws_id for r in records} == {session_id}
    assert len({r.connection_id for r in records}) == 2
    await first.close()
    await second.close()
    assert await handler_exits(client, 2) == [session_id, session_id]
    assert session_id not in registry
    assert registry.connections() == []
    assert await registry.connected_sessions() == frozenset()


async def test_id_helpers(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app(middleware=False, routes=routes))

    async def call(method: str, path: str) -> object:
        async with client.request(method, path) as resp:
            assert resp.status == 200
            return (await resp.json())["id"]

    assert await call("GET", "/id") is None
    first = await call("POST", "/ensure")
    assert isinstance(first, str)
    assert await call("POST", "/ensure") == first
    second = await call("POST", "/new")
    assert second not in (None, first)
    assert cookie_ws_id(client) == second
    assert await call("POST", "/delete") is None
    assert DEFAULT_SESSION_KEY not in cookie_session(client)


async def test_custom_async_id_factory_and_session_key(
    aiohttp_client: AiohttpClient,
) -> None:
    async def factory(request: web.Request) -> str:
        return f"user-{request.remote}"

    registry = SessionWSRegistry(id_factory=factory, session_key="ws")
    client = await aiohttp_client(build_app(registry, routes=routes))
    ws = await open_ws(client)
    assert cookie_session(client)["ws"] == "user-127.0.0.1"
    assert list(registry) == ["user-127.0.0.1"]
    await ws.close()


async def test_ws_kwargs_reach_the_websocket_response(
    aiohttp_client: AiohttpClient,
) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        async with session_ws(request, protocols=("chat.v1",), max_msg_size=16) as ws:
            async for _ in ws:
                pass
        return ws

    app = build_app()
    app.router.add_get("/chat", handler)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/chat", protocols=("chat.v1",))
    assert ws.protocol == "chat.v1"
    await ws.send_str("x" * 17)  # over max_msg_size: the server closes
    assert await expect_close(ws) == WSCloseCode.MESSAGE_TOO_BIG


async def test_plain_get_to_a_websocket_route_is_400_and_leaks_nothing(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app())
    async with client.get("/ws") as resp:
        assert resp.status == 400
    registry = registry_of(client)
    assert len(registry) == 0
    assert registry.connections() == []
    # shutdown closes nothing and raises nothing (1.1.1 raised here)
    assert await registry.close_all() == 0


async def test_logout_closes_every_socket_of_the_session_only(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app(routes=routes))
    tabs = [await open_ws(client), await open_ws(client)]
    old_id = cookie_ws_id(client)
    async with client.post("/logout") as resp:
        assert resp.status == 200
        assert resp.headers["Connection"].lower() == "close"
    for tab in tabs:
        assert await expect_close(tab) == WSCloseCode.OK
    assert await handler_exits(client, 2) == [old_id, old_id]
    assert cookie_ws_id(client) != old_id


async def test_logout_leaves_other_sessions_open(aiohttp_client: AiohttpClient) -> None:
    app = build_app(routes=routes)
    client = await aiohttp_client(app)
    other = await aiohttp_client(client.server)  # own cookie jar: another session
    mine, theirs = await open_ws(client), await open_ws(other)
    async with client.post("/logout") as resp:
        assert resp.status == 200
    await expect_close(mine)
    await theirs.send_str("still here")
    assert (await theirs.receive(timeout=TIMEOUT)).data == "still here"
    await theirs.close()


async def test_logout_with_a_raised_redirect(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app(routes=routes))
    tab = await open_ws(client)
    async with client.post("/logout-redirect", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/id"
    assert await expect_close(tab) == WSCloseCode.OK


async def test_logout_still_closes_when_the_connection_task_is_cancelled(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app(routes=routes))
    tab = await open_ws(client)
    try:
        async with client.post("/logout-cancelled") as resp:
            await resp.read()
    except aiohttp.ClientError:
        pass  # the cancellation may cut the response short
    assert await expect_close(tab) == WSCloseCode.OK
    connection_task = CANCELLED_TASKS.pop()
    assert connection_task.cancelled()  # 1.1.1's `await request.task` raised here


async def test_shutdown_closes_with_going_away(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app())
    tab = await open_ws(client)
    reader = asyncio.create_task(tab.receive(timeout=TIMEOUT))
    await client.server.close()
    msg = await asyncio.wait_for(reader, TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == WSCloseCode.GOING_AWAY
    assert msg.extra == "Server shutdown"


async def test_registry_under_both_keys_without_warnings() -> None:
    registry = SessionWSRegistry()
    app = web.Application()
    setup_session_ws(app, registry)
    assert app[REGISTRY_APP_KEY] is registry
    assert app["aiohttp_session_ws_registry"] is registry
    assert REGISTRY_KEY == "aiohttp_session_ws_registry"
    assert setup is setup_session_ws


async def test_hand_set_string_key_still_works(aiohttp_client: AiohttpClient) -> None:
    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage())
        ]
    )
    with pytest.warns(web.NotAppKeyWarning):
        app[REGISTRY_KEY] = SessionWSRegistry()  # 1.1.1 code did this itself
    app.router.add_routes(routes)
    client = await aiohttp_client(app)
    async with client.post("/ensure") as resp:
        assert isinstance((await resp.json())["id"], str)


async def test_setup_validates_its_arguments() -> None:
    app = web.Application()
    with pytest.raises(TypeError, match="SessionWSRegistry"):
        setup(app, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Application"):
        setup(object(), SessionWSRegistry())  # type: ignore[arg-type]
    setup(app, SessionWSRegistry())
    with pytest.raises(RuntimeError, match="already called"):
        setup(app, SessionWSRegistry())


async def test_forgotten_setup_says_what_to_call(aiohttp_client: AiohttpClient) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        with pytest.raises(
            RuntimeError, match=r"setup\(app, SessionWSRegistry\(\)\)"
        ) as err:
            get_registry(request)
        seen.append(str(err.value))
        return web.Response()

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    async with client.get("/") as resp:
        assert resp.status == 200
    assert seen


async def test_sub_application_finds_the_parent_registry(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry()
    parent = build_app(registry)
    child = web.Application()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        async with session_ws(request) as ws:
            await ws.send_str(str(len(get_registry(request))))
            async for _ in ws:
                pass
        return ws

    child.router.add_get("/ws", handler)
    parent.add_subapp("/child", child)
    client = await aiohttp_client(parent)
    ws = await client.ws_connect("/child/ws")
    assert (await ws.receive(timeout=TIMEOUT)).data == "1"
    await ws.close()


async def test_background_close_failure_is_logged(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(SessionWSRegistry):
        async def close_all_session(self, session_ws_id: object) -> int:
            raise RuntimeError("broker on fire")

    client = await aiohttp_client(build_app(Broken(), routes=routes))
    tab = await open_ws(client)
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        async with client.post("/logout") as resp:
            assert resp.status == 200
        registry = registry_of(client)
        await registry.stop(timeout=TIMEOUT)  # the failed task has ended
    assert "broker on fire" in caplog.text
    await tab.close()


class GatedClose(SessionWSRegistry):
    """Its close_all_session waits for a gate, and records how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.outcome: list[str] = []

    async def close_all_session(self, session_ws_id: object) -> int:
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.outcome.append("cancelled")
            raise
        self.outcome.append("done")
        return await super().close_all_session(session_ws_id)


@pytest.mark.parametrize("gate_open", [True, False])
async def test_stop_finishes_or_cancels_pending_closes(
    aiohttp_client: AiohttpClient, gate_open: bool
) -> None:
    registry = GatedClose()
    client = await aiohttp_client(build_app(registry, routes=routes))
    tab = await open_ws(client)
    async with client.post("/logout") as resp:
        assert resp.status == 200
    await asyncio.wait_for(registry.started.wait(), TIMEOUT)
    if gate_open:
        registry.gate.set()
        await registry.stop(timeout=TIMEOUT)
        assert registry.outcome == ["done"]  # awaited, not cancelled
        assert await expect_close(tab) == WSCloseCode.OK
    else:
        await asyncio.wait_for(registry.stop(timeout=0.05), TIMEOUT)
        assert registry.outcome == ["cancelled"]
        await tab.close()


async def test_scheduled_close_is_bounded_when_keep_alive_survives(
    aiohttp_client: AiohttpClient,
) -> None:
    async def swap_response(request: web.Request) -> web.Response:
        await schedule_close_all_session_ws(request, web.Response())
        return web.Response(text="another response, still keep-alive")

    app = build_app(SessionWSRegistry(close_timeout=0.1))
    app.router.add_post("/swap", swap_response)
    client = await aiohttp_client(app)
    tab = await open_ws(client)
    async with client.post("/swap") as resp:
        assert resp.headers.get("Connection", "").lower() != "close"
    assert await expect_close(tab) == WSCloseCode.OK


async def test_upgrade_racing_shutdown_is_closed_with_going_away(
    aiohttp_client: AiohttpClient,
) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow_factory(request: web.Request) -> str:
        entered.set()
        await gate.wait()
        return "late-id"

    registry = SessionWSRegistry(id_factory=slow_factory)
    client = await aiohttp_client(build_app(registry, middleware=False))
    connecting = asyncio.create_task(client.ws_connect("/ws"))
    await asyncio.wait_for(entered.wait(), TIMEOUT)  # past the checks
    assert await registry.shutdown() == 0
    gate.set()
    ws = await asyncio.wait_for(connecting, TIMEOUT)
    assert await expect_close(ws) == WSCloseCode.GOING_AWAY
    assert await handler_exits(client, 1) == ["late-id"]
    assert len(registry) == 0


async def test_socket_registered_as_shutdown_begins_is_closed(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry()
    app = build_app(registry)

    async def shutdown_mid_upgrade(
        request: web.Request, response: web.StreamResponse
    ) -> None:
        if isinstance(response, web.WebSocketResponse):
            await registry.shutdown()  # between the checks and the registration

    app.on_response_prepare.append(shutdown_mid_upgrade)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    assert await expect_close(ws) == WSCloseCode.GOING_AWAY
    await handler_exits(client, 1)
    assert len(registry) == 0


async def test_a_factory_id_that_json_cannot_keep_is_refused(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry(id_factory=lambda request: ("user", 42))
    client = await aiohttp_client(build_app(registry, middleware=False))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 500
    assert len(registry) == 0


async def test_an_unhashable_id_in_the_session_fails_before_the_upgrade(
    aiohttp_client: AiohttpClient,
) -> None:
    async def corrupt(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        session[DEFAULT_SESSION_KEY] = ["user", 42]  # as a tuple comes back
        return web.Response()

    app = build_app(middleware=False)
    app.router.add_post("/corrupt", corrupt)
    client = await aiohttp_client(app)
    async with client.post("/corrupt") as resp:
        assert resp.status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 400  # no 101 followed by a dropped socket
    assert len(registry_of(client)) == 0


@pytest.mark.parametrize(
    "bad",
    ["\udc80\udcff", "ok\ud800", "", True],
    ids=["escaped", "lone", "empty", "bool"],
)
async def test_a_cookie_with_an_id_redis_cannot_carry_is_refused(
    aiohttp_client: AiohttpClient, bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    # SimpleCookieStorage is JSON the client controls: "\udc80" is valid JSON
    client = await aiohttp_client(build_app(middleware=False))
    data = {"created": int(time.time()), "session": {DEFAULT_SESSION_KEY: bad}}
    cookie: SimpleCookie = SimpleCookie()
    cookie["AIOHTTP_SESSION"] = json.dumps(data)
    headers = {"Cookie": f"AIOHTTP_SESSION={cookie['AIOHTTP_SESSION'].coded_value}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers=headers)
    assert refused.value.status == 400
    assert "Refused a websocket upgrade" in caplog.text
    assert len(registry_of(client)) == 0
    # the server goes on serving the other sessions
    async with aiohttp.ClientSession() as other:
        ws = await other.ws_connect(client.make_url("/ws"))
        await ws.send_str("still here")
        assert (await ws.receive(timeout=TIMEOUT)).data == "still here"
        await ws.close()


class Returning(SessionWSRegistry):
    """A subclass whose id methods return something, as 1.1.1 let them."""

    async def new_id(self, request: web.Request) -> str:  # type: ignore[override]
        await super().new_id(request)
        return "made"

    async def delete_id(self, request: web.Request) -> str:  # type: ignore[override]
        await super().delete_id(request)
        return "dropped"

    async def ensure_id(self, request: web.Request) -> str:  # type: ignore[override]
        await super().ensure_id(request)
        return "ensured"

    async def schedule_close_all_session(  # type: ignore[override]
        self, request: web.Request, response: web.StreamResponse
    ) -> str:
        await super().schedule_close_all_session(request, response)
        return "scheduled"


async def test_helpers_return_what_the_registry_methods_return(
    aiohttp_client: AiohttpClient,
) -> None:
    async def call_helpers(request: web.Request) -> web.Response:
        response = web.Response()
        returned = {
            "ensure": await ensure_session_ws_id(request),
            "new": await new_session_ws_id(request),
            "delete": await delete_session_ws_id(request),
            "schedule": await schedule_close_all_session_ws(request, response),
        }
        response.text = json.dumps(returned)
        return response

    app = build_app(Returning(), middleware=False)
    app.router.add_post("/helpers", call_helpers)
    client = await aiohttp_client(app)
    async with client.post("/helpers") as resp:
        assert resp.status == 200
        assert json.loads(await resp.text()) == {
            "ensure": "ensured",
            "new": "made",
            "delete": "dropped",
            "schedule": "scheduled",
        }


def set_cookies(headers: object) -> list[str]:
    """The Set-Cookie headers of a response (or of a refused handshake)."""
    assert isinstance(headers, CIMultiDictProxy)
    return list(headers.getall("Set-Cookie", []))


async def test_refused_upgrades_set_no_cookie(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app(middleware=False))
    registry = registry_of(client)
    async with client.get("/ws") as resp:  # not an upgrade
        assert resp.status == 400
        assert "Expected a websocket upgrade" in await resp.text()
        assert set_cookies(resp.headers) == []
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    assert set_cookies(refused.value.headers) == []
    await registry.shutdown()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 503
    assert set_cookies(refused.value.headers) == []
    assert len(client.session.cookie_jar) == 0
    assert len(registry) == 0


def storage() -> aiohttp_session.AbstractStorage:
    return aiohttp_session.SimpleCookieStorage()


class Recording(SessionWSRegistry):
    """Notes whether it was started."""

    started = False

    async def start(self) -> None:
        self.started = True
        await super().start()


async def start_fails(app: web.Application, match: str) -> None:
    """Starting ``app`` raises a RuntimeError matching ``match`` before the
    registry starts."""
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match=match):
        await runner.setup()
    await runner.cleanup()
    registry = app[REGISTRY_APP_KEY]
    assert isinstance(registry, Recording)
    assert not registry.started


WRONG_ORDER = (
    r"put session_ws_middleware after aiohttp_session\.session_middleware\(\.\.\.\) "
    r"in middlewares=\[\.\.\.\]"
)
ABSENT = r"add aiohttp_session\.session_middleware\(storage\) before it"


async def test_middleware_before_the_session_middleware_fails_startup() -> None:
    listed = web.Application(
        middlewares=[
            session_ws_middleware,
            aiohttp_session.session_middleware(storage()),
        ]
    )
    setup(listed, Recording())
    await start_fails(listed, WRONG_ORDER)

    appended = web.Application(middlewares=[session_ws_middleware])
    aiohttp_session.setup(appended, storage())  # appends after ours
    setup(appended, Recording())
    await start_fails(appended, WRONG_ORDER)


async def test_middleware_without_the_session_middleware_fails_startup() -> None:
    app = web.Application(middlewares=[session_ws_middleware])
    setup(app, Recording())
    await start_fails(app, ABSENT)


async def test_sub_applications_are_checked_with_their_parents_middlewares(
    aiohttp_client: AiohttpClient,
) -> None:
    # Sessions from the parent, session_ws_middleware and setup() on the child:
    # the child cannot see its parent, so its startup must not fail.
    registry = SessionWSRegistry()
    child = web.Application(middlewares=[session_ws_middleware])
    setup(child, registry)
    child.router.add_get("/ws", echo_handler)
    child[HANDLER_EXITS] = asyncio.Queue()
    parent = web.Application(
        middlewares=[aiohttp_session.session_middleware(storage())]
    )
    parent.add_subapp("/child", child)
    client = await aiohttp_client(parent)
    ws = await open_ws(client, "/child/ws")
    assert list(registry) == [cookie_ws_id(client)]
    await ws.close()

    # setup() on the parent sees its sub-applications and their lists.
    cases: list[tuple[list[Middleware], str]] = [
        ([session_ws_middleware], ABSENT),
        (
            [session_ws_middleware, aiohttp_session.session_middleware(storage())],
            WRONG_ORDER,
        ),
    ]
    for child_middlewares, match in cases:
        child = web.Application(middlewares=child_middlewares)
        parent = web.Application()
        setup(parent, Recording())
        parent.add_subapp("/child", child)
        await start_fails(parent, match)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the exceptions aiohttp logged while handling requests."""
    return [
        str(record.exc_info[1])
        for record in caplog.records
        if record.exc_info and record.exc_info[1] is not None
    ]


async def test_a_request_without_the_session_middleware_says_what_to_add(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    @web.middleware
    async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)  # startup cannot know it gives no session

    # through session_ws_middleware
    app = web.Application(middlewares=[passthrough, session_ws_middleware])
    setup(app, SessionWSRegistry())
    app.router.add_routes(routes)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        async with client.get("/id") as resp:
            assert resp.status == 500
    assert errors_logged(caplog) == [SESSION_MIDDLEWARE_MISSING]
    assert "aiohttp_session.session_middleware(storage) first" in (
        SESSION_MIDDLEWARE_MISSING
    )
    caplog.clear()

    # through session_ws alone
    app = web.Application()
    setup(app, SessionWSRegistry())
    app[HANDLER_EXITS] = asyncio.Queue()
    app.router.add_get("/ws", echo_handler)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 500
    assert errors_logged(caplog) == [SESSION_MIDDLEWARE_MISSING]
