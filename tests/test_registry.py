"""The registry: mapping, registration, closing, presence, ids; on real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient, make_mocked_request
from yarl import URL

from aiohttp_session_ws import (
    DEFAULT_ID_FACTORY,
    BackendUnavailableError,
    ConnectionRecord,
    MemoryBackend,
    MemoryHub,
    SessionWSRegistry,
    get_registry,
    get_session_ws_id,
    session_ws,
)
from aiohttp_session_ws import closing as closing_module
from aiohttp_session_ws.backends import SessionClosed
from aiohttp_session_ws.ids import redact, wire_id

from .apps import (
    HANDLER_EXITS,
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    expect_close,
    handler_exits,
    open_ws,
    registry_of,
)
from .logwait import watch_log


class FailingClose(web.WebSocketResponse):
    """A real websocket whose first close() raises, as a broken transport might."""

    failed = False

    async def close(self, **kwargs: Any) -> bool:
        if not self.failed:
            self.failed = True
            raise ConnectionResetError("transport gone")
        return await super().close(**kwargs)


async def failing_close_handler(request: web.Request) -> web.WebSocketResponse:
    """Registers its socket by hand, as 1.1.1 code with its own upgrade does."""
    registry = get_registry(request)
    await registry.ensure_id(request)
    session_id = await get_session_ws_id(request)
    ws = FailingClose()
    await ws.prepare(request)
    registry.register(session_id, ws)
    await ws.send_str("registered")
    try:
        async for _ in ws:
            pass
    finally:
        registry.unregister(session_id, ws)
    return ws


def test_default_id_factory_makes_distinct_hex_ids() -> None:
    request = make_mocked_request("GET", "/")
    first, second = DEFAULT_ID_FACTORY(request), DEFAULT_ID_FACTORY(request)
    assert first != second
    assert len(first) == 32
    int(first, 16)


async def test_generate_id_takes_sync_and_async_factories() -> None:
    request = make_mocked_request("GET", "/")

    async def async_factory(request: web.Request) -> str:
        return "async-id"

    sync_registry = SessionWSRegistry(id_factory=lambda r: "sync-id")
    async_registry = SessionWSRegistry(id_factory=async_factory)
    int_registry = SessionWSRegistry(id_factory=lambda r: 7)
    assert await sync_registry.generate_id(request) == "sync-id"
    assert await async_registry.generate_id(request) == "async-id"
    assert await int_registry.generate_id(request) == 7


@pytest.mark.parametrize("bad", [None, True, ("a", 1), 1.5, b"bytes"])
async def test_generate_id_refuses_ids_json_cannot_keep(bad: object) -> None:
    registry = SessionWSRegistry(id_factory=lambda request: bad)
    with pytest.raises(TypeError, match="must be a str or an int"):
        await registry.generate_id(make_mocked_request("GET", "/"))


async def test_mapping_holds_frozen_snapshots(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(build_app())
    tab = await open_ws(client)
    registry = registry_of(client)
    session_id = cookie_ws_id(client)
    sockets = registry[session_id]
    assert isinstance(sockets, frozenset)
    assert len(sockets) == 1
    assert session_id in registry
    assert "nobody" not in registry
    assert dict(registry) == {session_id: sockets}
    with pytest.raises(KeyError):
        registry["nobody"]
    (ws,) = sockets
    record = registry.connection(ws)
    assert isinstance(record, ConnectionRecord)
    assert record.session_ws_id == session_id
    assert record.opened_at > 0
    assert registry.connections() == [record]
    assert registry.connections("nobody") == []
    assert registry.connection(web.WebSocketResponse()) is None
    await tab.close()


def test_unregister_unknown_socket_is_a_no_op() -> None:
    registry = SessionWSRegistry()
    known = web.WebSocketResponse()
    registry.register("known", known)
    registry.register("known", known)  # twice is once
    registry.unregister("unknown", web.WebSocketResponse())
    registry.unregister("known", web.WebSocketResponse())  # 1.1.1: KeyError
    assert registry["known"] == {known}
    registry.unregister("known", known)
    assert "known" not in registry


async def test_unprepared_and_closed_sockets_are_skipped(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(build_app())
    tab = await open_ws(client)
    registry = registry_of(client)
    session_id = cookie_ws_id(client)
    registry.register(session_id, web.WebSocketResponse())  # never prepared
    assert await registry.close_all_session(session_id) == 1
    assert await expect_close(tab) == WSCloseCode.OK
    # the real socket may still be registered (its handler is leaving): closed
    assert all(ws.closed for ws in registry.get(session_id, ()) if ws.prepared)
    assert await registry.close_all_session(session_id) == 0


async def test_one_failing_close_spares_the_rest(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app()
    app.router.add_get("/fragile", failing_close_handler)
    client = await aiohttp_client(app)
    sturdy = [await open_ws(client), await open_ws(client)]
    fragile = await client.ws_connect("/fragile")
    registry = registry_of(client)
    session_id = cookie_ws_id(client)
    assert (await fragile.receive(timeout=TIMEOUT)).data == "registered"
    assert len(registry[session_id]) == 3
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        assert await registry.close_all_session(session_id) == 2  # 1.1.1 raised
    assert "transport gone" in caplog.text
    for ws in sturdy:
        assert await expect_close(ws) == WSCloseCode.OK
    await fragile.close()


async def test_schedule_without_an_id_only_ends_keep_alive() -> None:
    registry = SessionWSRegistry()

    async def no_id(request: web.Request) -> None:
        return None

    registry.get_id = no_id  # type: ignore[method-assign]
    response = web.Response()
    await registry.schedule_close_all_session(make_mocked_request("GET", "/"), response)
    assert response.keep_alive is False
    await registry.stop(timeout=TIMEOUT)


@pytest.fixture
async def cluster(aiohttp_client: AiohttpClient) -> tuple[MemoryHub, Client, Client]:
    """Two nodes (apps) of one in-process cluster, one browser session on both."""
    hub = MemoryHub()
    node_a = await aiohttp_client(
        build_app(SessionWSRegistry(backend=MemoryBackend(hub)))
    )
    node_b = await aiohttp_client(
        build_app(SessionWSRegistry(backend=MemoryBackend(hub), close_timeout=0.5))
    )
    async with node_a.get("/ws"):  # any request: the middleware makes the session
        pass
    cookies = node_a.session.cookie_jar.filter_cookies(URL(str(node_a.make_url("/"))))
    node_b.session.cookie_jar.update_cookies(cookies, URL(str(node_b.make_url("/"))))
    return hub, node_a, node_b


async def test_close_all_session_reaches_other_nodes(
    cluster: tuple[MemoryHub, Client, Client],
) -> None:
    _, node_a, node_b = cluster
    session_id = cookie_ws_id(node_a)
    local = await open_ws(node_a)
    remote = [await open_ws(node_b) for _ in range(3)]
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    assert cookie_ws_id(node_b) == session_id
    assert await registry_a.count_connections(session_id) == 4
    assert await registry_a.session_nodes(session_id) == {
        registry_a.node_id: 1,
        registry_b.node_id: 3,
    }
    assert await registry_b.connected_sessions() == {session_id}
    assert await registry_a.close_all_session(session_id) == 4
    for ws in [local, *remote]:
        assert await expect_close(ws) == WSCloseCode.OK
    await handler_exits(node_a, 1)
    await handler_exits(node_b, 3)
    assert await registry_a.connected_sessions() == frozenset()


async def test_a_silent_node_costs_at_most_the_timeout(
    cluster: tuple[MemoryHub, Client, Client], caplog: pytest.LogCaptureFixture
) -> None:
    hub, _, node_b = cluster
    session_id = cookie_ws_id(node_b)
    tab = await open_ws(node_b)
    # a node that hangs: it listens, and never answers
    hub.presence[wire_id(session_id)]["ghost-node"] = {"c1"}
    hub.inboxes["ghost-node"] = asyncio.Queue()
    registry_of(node_b).closing.timeout = 0.2
    with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws"):
        closed = await asyncio.wait_for(
            registry_of(node_b).close_all_session(session_id), TIMEOUT
        )
    assert closed == 1
    assert "ghost-node" in caplog.text
    await expect_close(tab)


async def test_stopping_a_node_withdraws_its_presence(
    cluster: tuple[MemoryHub, Client, Client],
) -> None:
    hub, node_a, node_b = cluster
    session_id = cookie_ws_id(node_a)
    tab = await open_ws(node_b)
    assert registry_of(node_b).node_id in hub.presence[wire_id(session_id)]
    await registry_of(node_b).backend.stop()
    assert wire_id(session_id) not in hub.presence
    assert await registry_of(node_a).count_connections(session_id) == 0
    await tab.close()


async def test_presence_failure_does_not_reach_the_handler(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    class DownBackend(MemoryBackend):
        def add_connection(self, session_id: str, connection_id: str) -> None:
            raise ConnectionError("backend down")

        def remove_connection(self, session_id: str, connection_id: str) -> None:
            raise ConnectionError("backend down")

        async def session_nodes(self, session_id: str) -> dict[str, int]:
            raise ConnectionError("backend down")

    client = await aiohttp_client(build_app(SessionWSRegistry(backend=DownBackend())))
    with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws"):
        tab = await open_ws(client)  # the echo works: the handler never saw it
        registry = registry_of(client)
        assert await registry.close_all_session(cookie_ws_id(client)) == 1
        await expect_close(tab)
        await handler_exits(client, 1)
    failures = [
        r for r in caplog.records if r.exc_info and r.exc_info[0] is ConnectionError
    ]
    assert len(failures) == 3


async def test_sockets_with_non_string_ids(aiohttp_client: AiohttpClient) -> None:
    counter = iter(range(100, 200))
    hub = MemoryHub()
    registry = SessionWSRegistry(
        id_factory=lambda request: next(counter), backend=MemoryBackend(hub)
    )
    other = SessionWSRegistry(backend=MemoryBackend(hub))
    client = await aiohttp_client(build_app(registry))
    await other.start()
    try:
        tab = await open_ws(client)
        assert list(registry) == [100]
        assert await other.connected_sessions() == {100}
        assert await other.close_all_session("100") == 0  # another session
        assert await other.close_all_session(100) == 1
        await expect_close(tab)
    finally:
        await other.stop()


async def test_reconnect_after_close_registers_again(
    aiohttp_client: AiohttpClient,
) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(build_app())
    first = await open_ws(client)
    await first.close()
    await handler_exits(client, 1)
    second = await open_ws(client)
    assert len(registry_of(client)[cookie_ws_id(client)]) == 1
    await second.close()


async def test_session_ws_exposes_its_state(aiohttp_client: AiohttpClient) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ctx = session_ws(request)
        async with ctx as ws:
            seen["same"] = ctx.response is ws
            seen["id"] = ctx.session_ws_id
            seen["registry"] = ctx.registry is get_registry(request)
            await ws.close()
        return ws

    app = build_app()
    app.router.add_get("/state", handler)
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/state")
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert seen == {"same": True, "id": cookie_ws_id(client), "registry": True}


class OutageBackend(MemoryBackend):
    """A memory backend whose server can be 'down': close-alls then fail."""

    down = True

    async def mark_session_closed(
        self, session_id: str, *, ago: float = 0.0, frame: bytes | None = None
    ) -> SessionClosed:
        if self.down:
            raise BackendUnavailableError("down")
        return await super().mark_session_closed(session_id, ago=ago, frame=frame)

    def come_back(self) -> None:
        """Tell the registry the outage is over, as a real backend does."""
        assert self._hooks is not None
        self._hooks.on_reconnect()


async def recovered(registry: SessionWSRegistry) -> None:
    """Wait (bounded) until the registry has run its on_reconnect callbacks."""
    done = asyncio.Event()

    async def note() -> None:
        done.set()

    registry.on_reconnect.append(note)
    assert isinstance(registry.backend, OutageBackend)
    registry.backend.come_back()
    await asyncio.wait_for(done.wait(), TIMEOUT)


async def test_close_alls_held_back_by_an_outage_are_bounded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(closing_module, "PENDING_CLOSE_LIMIT", 2)
    registry = SessionWSRegistry(backend=OutageBackend())
    await registry.start()
    try:
        with caplog.at_level(logging.WARNING, logger="aiohttp_session_ws"):
            for session in ("s1", "s2", "s3"):
                assert await registry.close_all_session(session) == 0
            assert f"dropped the one of {redact(wire_id('s1'))}" in caplog.text
            # still down: they keep waiting, and the app is not told yet
            told = asyncio.Event()

            async def note() -> None:
                told.set()

            registry.on_reconnect.append(note)
            with watch_log("aiohttp_session_ws", "Backend failed again") as again:
                assert isinstance(registry.backend, OutageBackend)
                registry.backend.come_back()
                await again.wait(timeout=TIMEOUT)
            assert len(registry._pending_closes) == 2
            assert not told.is_set()
            registry.backend.missed_close_window = 0.0
            registry.backend.down = False
            await recovered(registry)
        assert caplog.text.count("older than the backend's missed_close_window") == 2
    finally:
        await registry.stop()


async def test_a_held_back_close_all_reaches_the_other_node(
    aiohttp_client: AiohttpClient,
) -> None:
    hub = MemoryHub()
    backend = OutageBackend(hub)
    asking = SessionWSRegistry(backend=backend)
    holder = await aiohttp_client(
        build_app(SessionWSRegistry(backend=MemoryBackend(hub)))
    )
    await asking.start()
    try:
        tab = await open_ws(holder)
        assert await asking.close_all_session(cookie_ws_id(holder)) == 0
        backend.down = False
        await recovered(asking)
        assert await expect_close(tab) == WSCloseCode.OK
    finally:
        await asking.stop()


async def test_two_recoveries_at_once_send_each_close_once() -> None:
    marked: list[str] = []

    class Recording(OutageBackend):
        async def mark_session_closed(
            self, session_id: str, *, ago: float = 0.0, frame: bytes | None = None
        ) -> SessionClosed:
            result = await super().mark_session_closed(session_id, ago=ago, frame=frame)
            marked.append(session_id)
            await asyncio.sleep(0)  # let the second recovery try to interleave
            return result

    backend = Recording()
    registry = SessionWSRegistry(backend=backend)
    await registry.start()
    try:
        for session in ("x", "y", "z"):
            await registry.close_all_session(session)
        backend.down = False
        backend.come_back()
        await recovered(registry)  # a second reconnect while the first runs
        assert marked == [wire_id(s) for s in ("x", "y", "z")]
    finally:
        await registry.stop()


def hand_registered_app(registry: SessionWSRegistry) -> web.Application:
    """An app whose /ws puts its socket in ``registry._registry`` by hand, as
    code written for 1.1.1 did, and takes it out with ``unregister``."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session_ws_id = request.query["id"]
        registry._registry.setdefault(session_ws_id, set()).add(ws)
        try:
            async for msg in ws:
                await ws.send_str(msg.data)
        finally:
            registry.unregister(session_ws_id, ws)
            request.app[HANDLER_EXITS].put_nowait(session_ws_id)
        return ws

    app = build_app(registry)
    app.router.add_get("/by-hand", handler)
    return app


async def test_a_socket_put_in_the_storage_by_hand_is_seen_and_closed(
    aiohttp_client: AiohttpClient,
) -> None:
    registry = SessionWSRegistry()
    client = await aiohttp_client(hand_registered_app(registry))
    first = await open_ws(client, "/by-hand?id=first")
    second = await open_ws(client, "/by-hand?id=second")
    assert set(registry) == {"first", "second"}
    assert len(registry) == 2
    assert "first" in registry
    assert len(registry["first"]) == 1
    assert registry.connections("first") == []  # no record: never registered
    assert await registry.close_all_session("first") == 1
    assert await expect_close(first) == WSCloseCode.OK
    assert await handler_exits(client, 1) == ["first"]
    assert "first" not in registry
    assert await registry.close_all() == 1
    assert await expect_close(second) == WSCloseCode.GOING_AWAY
    await handler_exits(client, 1)
    assert len(registry) == 0


async def test_a_1_1_1_subclass_that_keeps_its_own_register_works(
    aiohttp_client: AiohttpClient,
) -> None:
    seen: list[str] = []

    class Revised(SessionWSRegistry):
        # as 1.1.1's README told cluster users: revise register and unregister
        def register(self, session_ws_id: Hashable, wsr: web.WebSocketResponse) -> None:
            seen.append("register")
            self._registry.setdefault(session_ws_id, set()).add(wsr)

        def unregister(
            self, session_ws_id: Hashable, wsr: web.WebSocketResponse
        ) -> None:
            seen.append("unregister")
            sockets = self._registry.get(session_ws_id, set())
            sockets.discard(wsr)
            if not sockets:
                self._registry.pop(session_ws_id, None)

    registry = Revised()
    client = await aiohttp_client(build_app(registry))
    tab = await open_ws(client)
    session_ws_id = cookie_ws_id(client)
    assert list(registry) == [session_ws_id]
    assert await registry.close_all_session(session_ws_id) == 1
    assert await expect_close(tab) == WSCloseCode.OK
    await handler_exits(client, 1)
    assert seen == ["register", "unregister"]
    assert len(registry) == 0


async def one_tab_on_a_hub(
    aiohttp_client: AiohttpClient,
) -> tuple[MemoryHub, SessionWSRegistry, Client, aiohttp.ClientWebSocketResponse]:
    """A node on a memory hub, with one tab of one session open."""
    hub = MemoryHub()
    registry = SessionWSRegistry(backend=MemoryBackend(hub))
    client = await aiohttp_client(build_app(registry))
    return hub, registry, client, await open_ws(client)


async def test_unregister_takes_a_registered_socket_out_of_the_backend_too(
    aiohttp_client: AiohttpClient,
) -> None:
    hub, registry, client, tab = await one_tab_on_a_hub(aiohttp_client)
    assert wire_id(cookie_ws_id(client)) in hub.presence
    await tab.close()
    await handler_exits(client, 1)
    assert hub.presence == {}
    assert registry._records == {}


@pytest.mark.parametrize("bad", ["", "\udc80", b"x", None])
def test_register_refuses_ids_the_cluster_cannot_carry(bad: object) -> None:
    registry = SessionWSRegistry()
    ws = web.WebSocketResponse()
    with pytest.raises((TypeError, ValueError)):
        registry.register(bad, ws)
    assert len(registry) == 0


@pytest.mark.parametrize("bad", ["", "\udc80abc"])
async def test_generate_id_refuses_strings_redis_cannot_carry(bad: str) -> None:
    registry = SessionWSRegistry(id_factory=lambda request: bad)
    with pytest.raises(ValueError, match="id_factory's id"):
        await registry.generate_id(make_mocked_request("GET", "/"))


@pytest.mark.parametrize(
    "bad",
    ["", "\ud800", True, ["a"], 10**5000],
    ids=["empty", "surrogate", "bool", "list", "huge"],
)
async def test_presence_queries_refuse_ids_no_session_can_have(bad: object) -> None:
    registry = SessionWSRegistry()
    with pytest.raises((TypeError, ValueError)):
        await registry.count_connections(bad)
    with pytest.raises((TypeError, ValueError)):
        await registry.session_nodes(bad)


async def test_a_huge_int_id_is_closed_locally_without_a_stray_coroutine() -> None:
    registry = SessionWSRegistry()
    assert await registry.close_all_session(10**5000) == 0


async def test_unregister_under_another_id_keeps_the_real_record(
    aiohttp_client: AiohttpClient,
) -> None:
    hub, registry, client, tab = await one_tab_on_a_hub(aiohttp_client)
    session_ws_id = cookie_ws_id(client)
    (ws,) = registry[session_ws_id]
    registry._registry.setdefault("by-hand", set()).add(ws)
    registry.unregister("by-hand", ws)  # the hand-made entry only
    record = registry.connection(ws)
    assert record is not None
    assert record.session_ws_id == session_ws_id
    await tab.close()
    await handler_exits(client, 1)
    assert hub.presence == {}  # its presence went with the real unregister
