"""Session lifecycle and properties: one node, and a cluster on a real Redis."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    SUBPROTOCOL,
    MemoryBackend,
    MemoryHub,
    RedisSessionWSRegistry,
    SessionWSRegistry,
    delete_session_ws_id,
    new_session_ws_id,
)

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    registry_of,
    session_cookie_header,
    share_session,
)
from .nodes import NODE_TTL, StartNode
from .redis_server import RedisServer


class Lifecycle:
    """Records a registry's session starts and ends; awaits each one."""

    def __init__(self, registry: SessionWSRegistry) -> None:
        self.started: asyncio.Queue[Any] = asyncio.Queue()
        self.ended: asyncio.Queue[Any] = asyncio.Queue()
        registry.on_session_start.append(self.started.put_nowait)

        async def ended(session_ws_id: Any) -> None:  # async callbacks work too
            self.ended.put_nowait(session_ws_id)

        registry.on_session_end.append(ended)

    async def next_start(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.started.get(), timeout)

    async def next_end(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.ended.get(), timeout)


async def new_id(request: web.Request) -> web.Response:
    await new_session_ws_id(request)
    return web.Response(text="new")


async def delete_id(request: web.Request) -> web.Response:
    await delete_session_ws_id(request)
    return web.Response(text="deleted")


ID_ROUTES = [web.get("/new", new_id), web.get("/delete", delete_id)]


async def live(client: Client) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/live", protocols=(SUBPROTOCOL,))
    assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["op"] == "hello"
    return ws


async def memory_node(
    aiohttp_client: AiohttpClient, grace_period: float = 30.0
) -> tuple[Client, Lifecycle]:
    registry = SessionWSRegistry(grace_period=grace_period)
    client = await aiohttp_client(build_app(registry, routes=ID_ROUTES))
    return client, Lifecycle(registry)


async def test_a_reload_within_the_grace_period_keeps_the_session(
    aiohttp_client: AiohttpClient,
) -> None:
    client, events = await memory_node(aiohttp_client, grace_period=0.3)
    first = await live(client)
    session_ws_id = cookie_ws_id(client)
    assert await events.next_start() == session_ws_id
    registry = registry_of(client)
    assert await registry.set_session_properties(session_ws_id, {"k": "v"})
    await first.close()
    second = await live(client)  # the reload
    await second.close()
    assert await events.next_end() == session_ws_id  # once the grace is over
    assert events.started.empty()
    assert await registry.session_properties(session_ws_id) is None
    assert not await registry.set_session_properties(session_ws_id, {"k": "v"})


@pytest.mark.parametrize("path", ["/new", "/delete"])
async def test_a_new_or_deleted_id_ends_the_session_at_once(
    aiohttp_client: AiohttpClient, path: str
) -> None:
    client, events = await memory_node(aiohttp_client)
    ws = await live(client)
    session_ws_id = cookie_ws_id(client)
    await events.next_start()
    assert (await client.get(path)).status == 200
    assert await events.next_end() == session_ws_id
    await ws.close()  # its socket closing later ends nothing more
    fresh = await live(client)
    if path == "/new":
        assert await events.next_start() == cookie_ws_id(client) != session_ws_id
    await fresh.close()
    assert events.ended.empty()


async def test_close_all_ends_the_session_at_once(
    aiohttp_client: AiohttpClient,
) -> None:
    client, events = await memory_node(aiohttp_client)
    ws = await live(client)
    session_ws_id = cookie_ws_id(client)
    await events.next_start()
    assert await registry_of(client).close_all_session(session_ws_id) == 1
    assert await events.next_end() == session_ws_id
    assert (await ws.receive(timeout=TIMEOUT)).type == aiohttp.WSMsgType.CLOSE


async def test_a_failing_callback_spares_the_others(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    registry = SessionWSRegistry(grace_period=0)

    def broken(session_ws_id: Any) -> None:
        raise RuntimeError("app bug")

    registry.on_session_start.insert(0, broken)
    client = await aiohttp_client(build_app(registry))
    events = Lifecycle(registry)
    ws = await live(client)
    assert await events.next_start() == cookie_ws_id(client)
    assert "on_session_start callback failed" in caplog.text
    await ws.close()
    await events.next_end()


async def test_memory_nodes_of_one_hub_share_sessions(
    aiohttp_client: AiohttpClient,
) -> None:
    hub = MemoryHub()
    registries = [SessionWSRegistry(backend=MemoryBackend(hub)) for _ in range(2)]
    node_a = await aiohttp_client(build_app(registries[0]))
    node_b = await aiohttp_client(build_app(registries[1]))
    events = [Lifecycle(registry) for registry in registries]
    tab_a = await live(node_a)
    share_session(node_a, node_b)
    tab_b = await live(node_b)
    session_ws_id = cookie_ws_id(node_a)
    handles = {registry.public_handle(session_ws_id) for registry in registries}
    assert len(handles) == 1
    assert await registries[1].set_session_properties(session_ws_id, {"x": "1"})
    assert await registries[0].session_properties(session_ws_id) == {"x": "1"}
    assert await registries[1].send_to_session(session_ws_id, "hi") == 2
    for tab in (tab_a, tab_b):
        assert json.loads((await tab.receive(timeout=TIMEOUT)).data)["data"] == "hi"
    starts = [e.started.qsize() for e in events]
    assert sorted(starts) == [0, 1]
    await tab_a.close()
    await tab_b.close()


# a cluster on a real Redis


async def redis_node(
    aiohttp_client: AiohttpClient,
    url: str,
    prefix: str,
    *,
    grace_period: float = 30.0,
    node_ttl: float = NODE_TTL,
) -> tuple[Client, Lifecycle]:
    registry = RedisSessionWSRegistry(
        url,
        prefix=prefix,
        node_ttl=node_ttl,
        reconnect_max_delay=0.5,
        grace_period=grace_period,
    )
    client = await aiohttp_client(build_app(registry, routes=ID_ROUTES))
    return client, Lifecycle(registry)


async def test_properties_and_handles_are_the_same_on_every_node(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    node_a, _ = await redis_node(aiohttp_client, redis_server.url, prefix)
    node_b, _ = await redis_node(aiohttp_client, redis_server.url, prefix)
    tab = await live(node_a)
    session_ws_id = cookie_ws_id(node_a)
    registry_a, registry_b = registry_of(node_a), registry_of(node_b)
    assert registry_a.public_handle(session_ws_id) == registry_b.public_handle(
        session_ws_id
    )
    assert await registry_b.set_session_properties(session_ws_id, {"lang": "fr"})
    props = json.loads(await ask(tab, {"op": "properties", "id": 1}))["data"]
    assert props["lang"] == "fr"
    await tab.close()


async def ask(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> str:
    await ws.send_str(json.dumps(frame))
    data: str = (await ws.receive(timeout=TIMEOUT)).data
    return data


async def test_a_session_on_two_nodes_starts_once_and_ends_once(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, prefix: str
) -> None:
    node_a, events_a = await redis_node(
        aiohttp_client, redis_server.url, prefix, grace_period=0.3
    )
    node_b, events_b = await redis_node(
        aiohttp_client, redis_server.url, prefix, grace_period=0.3
    )
    tab_a = await live(node_a)
    share_session(node_a, node_b)
    tab_b = await live(node_b)
    session_ws_id = cookie_ws_id(node_a)
    first = await asyncio.wait_for(
        _first(events_a.next_start(), events_b.next_start()), TIMEOUT
    )
    assert first == session_ws_id
    await tab_a.close()
    await tab_b.close()
    ended = await _first(events_a.next_end(), events_b.next_end())
    assert ended == session_ws_id
    total = sum(e.started.qsize() + e.ended.qsize() for e in (events_a, events_b))
    assert total == 0


async def _first(*waits: Any) -> Any:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        assert done, "nothing happened in time"
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()


async def test_a_killed_node_ends_its_sessions_once_within_the_ttl(
    aiohttp_client: AiohttpClient,
    redis_server: RedisServer,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    survivors = [
        await redis_node(aiohttp_client, redis_server.url, prefix) for _ in range(2)
    ]
    login, _ = survivors[0]
    await login.get("/new")  # the session exists, with no connection yet
    node_b = await start_node(redis_server.url)
    tab = await browser.ws_connect(
        node_b.url("/live"),
        protocols=(SUBPROTOCOL,),
        headers=session_cookie_header(login),
    )
    hello = json.loads((await tab.receive(timeout=TIMEOUT)).data)
    assert await node_b.said("START") == hello["session"]
    session_ws_id = cookie_ws_id(login)
    loop = asyncio.get_running_loop()
    node_b.process.send_signal(signal.SIGKILL)
    killed_at = loop.time()
    ended = await _first(*(events.next_end(NODE_TTL * 3) for _, events in survivors))
    assert ended == session_ws_id
    assert loop.time() - killed_at <= NODE_TTL * 1.5
    # a second end would come from the other survivor's next beats
    await asyncio.sleep(NODE_TTL)  # an observation window, not a synchronisation
    assert sum(events.ended.qsize() for _, events in survivors) == 0
    await tab.close()
