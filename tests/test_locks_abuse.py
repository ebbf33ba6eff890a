"""Session locks under attack and misuse: races, leaks, limits, faults.

Each test pins down a behaviour that a review found broken (and that is
fixed) or that held up. Real servers and sockets; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    MemoryBackend,
    ProtocolLimits,
    RedisSessionWSRegistry,
    SessionWSRegistry,
)
from aiohttp_session_ws.backends.memory import MemoryHub
from aiohttp_session_ws.ids import wire_id
from aiohttp_session_ws.locks import SessionLock

from .apps import Client, build_app, logout, reconnected, registry_of, share_session
from .redis_server import RedisServer
from .tcp_proxy import SilentCutProxy
from .waiting import until
from .wire import TIMEOUT, WireTab, allow_all, open_tab

Tabs = Callable[..., Awaitable[WireTab]]


def session_of(node: Client, tab: WireTab) -> Any:
    (peer,) = [
        p for p in registry_of(node).peers if p.connection_id == tab.hello["connection"]
    ]
    return peer.session_ws_id


def memory_node_app(hub: MemoryHub | None = None, **options: Any) -> web.Application:
    options.setdefault("authorize", allow_all)
    options.setdefault("grace_period", 30.0)
    registry = SessionWSRegistry(backend=MemoryBackend(hub), **options)
    return build_app(registry, routes=[web.get("/logout", logout)])


@pytest.fixture
async def node(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(memory_node_app())


@pytest.fixture
def tab(aiohttp_client: AiohttpClient, node: Client) -> Tabs:
    async def open_one(login: Client | None = None) -> WireTab:
        browser = login if login is not None else await aiohttp_client(node.server)
        return await open_tab(browser, "/live")

    return open_one


async def queued(node: Client, name: str, count: int) -> None:
    locks = registry_of(node).locks

    async def enough() -> bool:
        return bool((await locks.info(name)).waiting >= count)

    await until(enough)


# ---------------------------------------------------------------------------
# 1. exclusion across nodes: an unlock on one node leaves the equal lock of the
#    same session on another node "owned", and a repeated call there is served
#    from that stale object without the backend.


@pytest.fixture(params=["memory", "redis"])
async def two_nodes(
    request: pytest.FixtureRequest, aiohttp_client: AiohttpClient, prefix: str
) -> AsyncIterator[tuple[Client, Client]]:
    if request.param == "memory":
        hub = MemoryHub()
        yield (
            await aiohttp_client(memory_node_app(hub)),
            await aiohttp_client(memory_node_app(hub)),
        )
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    made = []
    for _ in range(2):
        registry = RedisSessionWSRegistry(
            server.url, prefix=prefix, authorize=allow_all, reconnect_max_delay=0.5
        )
        made.append(await aiohttp_client(build_app(registry)))
    yield made[0], made[1]


async def test_an_unlock_on_one_node_leaves_no_stale_holder_on_another(
    aiohttp_client: AiohttpClient, two_nodes: tuple[Client, Client]
) -> None:
    one, two = two_nodes
    login_one = await aiohttp_client(one.server)
    first = await open_tab(login_one, "/live")  # session S on node one
    login_two = await aiohttp_client(two.server)
    share_session(login_one, login_two)
    second = await open_tab(login_two, "/live")  # session S on node two
    assert second.handle == first.handle
    other = await open_tab(await aiohttp_client(one.server), "/live")  # session C

    taken = await first.ok("lock", name="doc")
    again = await second.ok("lock", name="doc")  # S holds it: the same grant
    assert again["sequence"] == taken["sequence"]
    assert (await first.ok("unlock", name="doc", sequence=taken["sequence"])) == {
        "unlocked": True
    }
    c_lock = await other.ok("lock", name="doc", timeout=TIMEOUT)  # C holds it now
    assert c_lock["owner"] == other.handle
    # node two must no longer believe that S holds it ...
    session = session_of(two, second)
    stale = registry_of(two).locks.held_by(session, "doc")
    # ... and S's repeated call there must wait, not be served from the stale object
    reply = await second.call("lock", name="doc", timeout=0.3)
    again = reply.get("data", {}).get("sequence")
    assert reply["op"] == "error", (
        f"two sessions hold 'doc': C with #{c_lock['sequence']}, and S again "
        f"with #{again} (node two's stale lock: {stale})"
    )
    assert reply.get("code") == "timeout"


# ---------------------------------------------------------------------------
# 2. a grant made while the waiter's node is cut off, whose wait is cancelled
#    during the outage, is never released: the session holds it for ever.


async def test_a_grant_lost_in_an_outage_and_cancelled_meanwhile_is_not_leaked(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    proxy = SilentCutProxy(redis_server.port)
    await proxy.start()
    try:
        a = await aiohttp_client(
            build_app(
                RedisSessionWSRegistry(
                    redis_server.url,
                    prefix=prefix,
                    authorize=allow_all,
                    node_ttl=6.0,
                    reconnect_max_delay=0.3,
                )
            )
        )
        registry_b = RedisSessionWSRegistry(
            proxy.url,
            prefix=prefix,
            authorize=allow_all,
            node_ttl=6.0,
            reconnect_max_delay=0.3,
            command_timeout=0.5,
        )
        b = await aiohttp_client(build_app(registry_b))
        holder = await open_tab(await aiohttp_client(a.server), "/live")
        waiter = await open_tab(await aiohttp_client(b.server), "/live")
        held = await holder.ok("lock", name="job")
        waiting = await waiter.send("lock", name="job")
        await queued(a, "job", 1)
        back = reconnected(registry_b)
        assert proxy.cut_all() >= 2  # node b hears nothing and reaches nothing
        # the release hands "job" to b's session; the grant frame is dropped
        assert (await holder.ok("unlock", name="job", sequence=held["sequence"]))[
            "unlocked"
        ]
        await waiter.ws.send_str(json.dumps({"op": "cancel", "request": waiting}))
        reply = await waiter.reply(waiting)
        assert reply["code"] == "cancelled"
        await asyncio.wait_for(back.wait(), 15.0)  # b is back, and resynced
        info = await registry_of(a).locks.info("job")
        assert info.owner in (None, waiter.handle)

        async def free() -> bool:
            return (await registry_of(a).locks.info("job")).owner is None

        try:
            await until(free, 3.0)
        except TimeoutError:
            pytest.fail(
                "'job' stays held by a session whose only call for it was "
                f"cancelled: owner={info.owner!r} (the waiter is {waiter.handle!r}); "
                "nobody on b knows it holds it: held_by="
                f"{registry_b.locks.held_by(session_of(b, waiter), 'job')}"
            )
    finally:
        await proxy.close()


# ---------------------------------------------------------------------------
# 3. a cancel that arrives with its request (before the request task ran) is
#    never answered: the doc says "it is answered cancelled".


async def test_a_cancel_right_behind_its_request_is_answered(
    node: Client, tab: Tabs
) -> None:
    holder, one = await tab(), await tab()
    await holder.ok("lock", name="busy")
    request_id = await one.send("lock", name="busy")
    # the cancel follows at once, in the same read of the server
    await one.ws.send_str(json.dumps({"op": "cancel", "request": request_id}))
    try:
        reply = await one.reply(request_id, wait=1.0)
    except TimeoutError:
        pending = registry_of(node).counters.pending_requests
        pytest.fail(
            "a cancelled lock request was never answered (the request task was "
            f"cancelled before it started; pending_requests={pending})"
        )
    assert reply["code"] == "cancelled"


# ---------------------------------------------------------------------------
# 4. two tabs of a session on one node share one queue entry, bound to the
#    first tab's connection: the first tab closing fails the second's wait.


async def test_the_second_tab_keeps_waiting_when_the_first_closes(
    aiohttp_client: AiohttpClient, node: Client, tab: Tabs
) -> None:
    holder = await tab()
    login = await aiohttp_client(node.server)
    first, second = await tab(login), await tab(login)
    held = await holder.ok("lock", name="edit")
    first_id = await first.send("lock", name="edit", scope=1)
    await queued(node, "edit", 1)
    second_id = await second.send("lock", name="edit", scope=1)
    registry = registry_of(node)
    await until(lambda: registry.stats().lock_waits == 2 or _pending(registry) >= 2)
    await first.close()
    await until(lambda: first.hello["connection"] not in _open_connections(registry))
    await holder.ok("unlock", name="edit", sequence=held["sequence"])
    reply = await second.reply(second_id)
    assert reply["op"] == "result", (
        f"the second tab's wait failed when the first tab closed: {reply}"
    )
    del first_id


def _pending(registry: SessionWSRegistry) -> int:
    return registry.counters.pending_requests


def _open_connections(registry: SessionWSRegistry) -> set[str]:
    return {p.connection_id for p in registry.peers}


# ---------------------------------------------------------------------------
# 5. a cancel at the moment of the grant, then a new call of the same session:
#    the undo release of the first call releases the lock the second holds.


async def test_a_cancel_at_the_grant_then_a_new_call_keeps_exclusion(
    node: Client, tab: Tabs
) -> None:
    locks = registry_of(node).locks
    a, b, c = [session_of(node, await tab()) for _ in range(3)]
    held = await locks.lock(a, "race")
    first = asyncio.ensure_future(locks.lock(b, "race"))
    await queued(node, "race", 1)
    third = asyncio.ensure_future(locks.lock(c, "race"))
    await queued(node, "race", 2)
    claim = locks._claims[("race", wire_id(b))]
    again: list[asyncio.Future[SessionLock]] = []

    def at_grant(_: object) -> None:
        # the client's cancel frame and a new lock frame, read in the window
        # between the grant and the first call's resumption
        first.cancel()
        again.append(asyncio.ensure_future(locks.lock(b, "race")))

    claim.waiters[0].add_done_callback(at_grant)
    await held.unlock()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, TIMEOUT)
    await until(lambda: bool(again))
    # b let go of the grant it gave up: c, next in the queue, holds it, and
    # b's new call waits behind it (it never takes a lock being let go)
    c_lock = await asyncio.wait_for(third, TIMEOUT)
    assert c_lock.is_owned
    assert not again[0].done()
    await c_lock.unlock()
    second = await asyncio.wait_for(again[0], TIMEOUT)
    assert second.is_owned
    assert second.sequence > c_lock.sequence


# ---------------------------------------------------------------------------
# 6. resource abuse: a client may hold any number of lock names.


async def test_a_client_cannot_hold_unbounded_lock_names(
    aiohttp_client: AiohttpClient,
) -> None:
    node = await aiohttp_client(
        memory_node_app(limits=ProtocolLimits(rate=1e6, burst=100_000))
    )
    one = await open_tab(await aiohttp_client(node.server), "/live")
    refused = None
    count = 1500
    for n in range(count):
        reply = await one.call("lock", name=f"n/{n}/" + "x" * 200)
        if reply["op"] == "error":
            refused = reply
            break
    held = registry_of(node).stats().locks_held
    assert refused is not None, f"one connection holds {held} lock names, no limit"


# ---------------------------------------------------------------------------
# 7. a lock a tab took, released by other code of its session (server code,
#    another tab), is never reported to the tab; its takers entry stays.


async def test_a_tab_hears_when_its_lock_is_released_by_other_code(
    node: Client, tab: Tabs
) -> None:
    one, other = await tab(), await tab()
    taken = await one.ok("lock", name="shared")
    lock = registry_of(node).locks.held_by(session_of(node, one), "shared")
    assert lock is not None
    assert await lock.unlock()  # server code of the same session: one unlock
    await other.ok("lock", name="shared", timeout=TIMEOUT)  # another session has it
    try:
        frame = await asyncio.wait_for(one.frames.get(), 0.5)
    except TimeoutError:
        pytest.fail(
            f"tab still believes it holds 'shared' #{taken['sequence']}: no frame "
            "told it that its lock was released"
        )
    assert frame["op"] == "lock_lost"


# ---------------------------------------------------------------------------
# what held (checks)


async def test_held_default_policy_denies_client_lock_ops(
    aiohttp_client: AiohttpClient,
) -> None:
    node = await aiohttp_client(build_app(SessionWSRegistry()))
    one = await open_tab(await aiohttp_client(node.server), "/live")
    cases: list[tuple[str, dict[str, Any]]] = [
        ("lock", {"name": "a"}),
        ("lock_info", {"name": "a"}),
    ]
    for op, args in cases:
        reply = await one.call(op, **args)
        assert reply["code"] == "forbidden"
    assert (await one.ok("unlock", name="a", sequence=1)) == {"unlocked": False}


async def test_held_unlock_of_another_sessions_lock_with_its_sequence(
    node: Client, tab: Tabs
) -> None:
    owner, thief = await tab(), await tab()
    taken = await owner.ok("lock", name="mine")
    got = await thief.ok("unlock", name="mine", sequence=taken["sequence"])
    assert got == {"unlocked": False}
    info = await thief.ok("lock_info", name="mine")
    assert info["owner"] == owner.handle
    assert session_of(node, owner) not in json.dumps(info)


async def test_held_cancel_of_a_non_lock_request_is_answered_cancelled(
    node: Client, tab: Tabs
) -> None:
    one, listener = await tab(), await tab()
    await listener.ok("add_handler", path="slow")
    sent = await one.send("send_to_path", path="slow", data={})
    await listener.next_request()  # the request is in progress
    await one.ws.send_str(json.dumps({"op": "cancel", "request": sent}))
    reply = await one.reply(sent)
    assert reply["code"] == "cancelled", reply


async def test_held_redis_keys_go_after_races_and_releases(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    registry = RedisSessionWSRegistry(
        redis_server.url, prefix=prefix, authorize=allow_all, grace_period=0.0
    )
    node = await aiohttp_client(build_app(registry))
    tabs = [
        await open_tab(await aiohttp_client(node.server), "/live") for _ in range(4)
    ]
    held = await tabs[0].ok("lock", name="k")
    ids = [await t.send("lock", name="k", scope=n % 2) for n, t in enumerate(tabs[1:])]
    await queued(node, "k", 3)
    # cancel one, time out one, close one, then release
    await tabs[1].ws.send_str(json.dumps({"op": "cancel", "request": ids[0]}))
    assert (await tabs[1].reply(ids[0]))["code"] == "cancelled"
    await tabs[3].close()
    await tabs[0].ok("unlock", name="k", sequence=held["sequence"])
    got = await tabs[2].reply(ids[1])
    assert got["op"] == "result"
    await tabs[2].ok("unlock", name="k", sequence=got["data"]["sequence"])
    admin = aioredis.Redis.from_url(redis_server.url)
    try:

        async def clean() -> bool:
            found = await admin.keys(f"{{{prefix}}}:*lock*")
            names = [k.decode() if isinstance(k, bytes) else k for k in found]
            keys = [k for k in names if not k.endswith(":lock_clock")]
            return not keys

        await until(clean)
    finally:
        await admin.aclose()


# ---------------------------------------------------------------------------
# 8. a reused request id makes a waiting lock request uncancellable: the
#    finished request's cleanup drops the id of the one still waiting.


async def test_a_reused_request_id_keeps_the_waiting_lock_cancellable(
    node: Client, tab: Tabs
) -> None:
    holder, one = await tab(), await tab()
    await holder.ok("lock", name="dup")
    await one.ws.send_str(json.dumps({"op": "lock", "id": 7, "name": "dup"}))
    await queued(node, "dup", 1)
    await one.ws.send_str(json.dumps({"op": "ping", "id": 7}))  # reused id
    registry = registry_of(node)
    await until(lambda: registry.counters.pending_requests == 1)  # the ping ended
    await one.ws.send_str(json.dumps({"op": "cancel", "request": 7}))

    async def withdrawn() -> bool:
        return (await registry.locks.info("dup")).waiting == 0

    try:
        await until(withdrawn, 1.0)
    except TimeoutError:
        pytest.fail("the cancel of the waiting lock request 7 was ignored")
