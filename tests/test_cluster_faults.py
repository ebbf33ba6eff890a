"""Faults that must not lose a logout: a node stalled past its lease, a deaf inbox.

Node B is a separate OS process (stopped with SIGSTOP, resumed with SIGCONT)
or a node in this process whose Redis connections pass through a proxy that
cuts them silently. The sizes here run in ``make test``; ``make soak`` runs
the same cases many times (``-m soak``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import WSCloseCode
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import RedisSessionWSRegistry

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    expect_close,
    open_ws,
    reconnected,
    registry_of,
    share_session,
)
from .logwait import watch_log
from .nodes import NODE_TTL, NodeProcess, StartNode, node_a, open_remote_ws
from .nodes import presence_written as written
from .redis_server import RedisServer
from .tcp_proxy import SilentCutProxy

# Node A renews its own lease rarely, so it does not reap node B while B is
# stopped: B resumes with a lease that ran out and that nobody removed.
SLOW_REAPER_TTL = 60.0


async def lease_left(url: str, prefix: str, node_id: str) -> float:
    """Seconds until the node's lease runs out, on Redis's clock."""
    admin = aioredis.Redis.from_url(url)
    try:
        deadline_us = await admin.zscore(f"{{{prefix}}}:nodes", node_id)
        seconds, micros = await admin.time()
    finally:
        await admin.aclose()
    assert deadline_us is not None, "the node holds no lease"
    return float(deadline_us) / 1e6 - (seconds + micros / 1e6)


async def logout_while_stalled(
    a: Client,
    b: NodeProcess,
    browser: aiohttp.ClientSession,
    url: str,
    prefix: str,
    stall: float | None = None,
) -> bool:
    """Stop B, log the session out on A meanwhile, resume B.

    With ``stall`` None, B stays stopped until its lease has run out; else
    for ``stall`` seconds, with the logout at a random moment within it.
    Returns whether B closed its websocket of the session.
    """
    a.session.cookie_jar.clear()  # a new session for each round
    await open_ws(a)
    remote, session_id = await open_remote_ws(browser, b, a, url)
    registry = registry_of(a)
    b.process.send_signal(signal.SIGSTOP)
    try:
        if stall is None:
            # wait for a deadline: no event tells that time has passed
            await asyncio.sleep(max(await lease_left(url, prefix, b.node_id), 0) + 0.05)
            assert b.node_id not in await registry.session_nodes(session_id)
            assert await registry.close_all_session(session_id) == 1  # A's own
        else:
            logout_at = random.uniform(0, stall)
            await asyncio.sleep(logout_at)
            await asyncio.wait_for(registry.close_all_session(session_id), TIMEOUT)
            await asyncio.sleep(stall - logout_at)
    finally:
        b.process.send_signal(signal.SIGCONT)
    try:
        return await expect_close(remote) == WSCloseCode.OK
    except TimeoutError:
        return False
    finally:
        await remote.close()


async def slow_reaper_and_node(
    aiohttp_client: AiohttpClient, url: str, prefix: str, start_node: StartNode
) -> tuple[Client, NodeProcess]:
    """Node A, which reaps rarely, and node B, in its own process."""
    a = await node_a(
        aiohttp_client, url, prefix, node_ttl=SLOW_REAPER_TTL, close_timeout=0.3
    )
    return a, await start_node(url, NODE_TTL)


async def test_a_node_stalled_past_its_lease_closes_the_logouts_it_missed(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    url = redis_server.url
    a, b = await slow_reaper_and_node(aiohttp_client, url, prefix, start_node)
    missed = [
        not await logout_while_stalled(a, b, browser, url, prefix) for _ in range(2)
    ]
    assert missed == [False, False]


@pytest.mark.soak
async def test_soak_stalls_around_the_lease_lose_no_logout(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    start_node: StartNode,
    browser: aiohttp.ClientSession,
) -> None:
    url = redis_server.url
    a, b = await slow_reaper_and_node(aiohttp_client, url, prefix, start_node)
    lease = NODE_TTL * 0.75
    rounds = 30
    missed = 0
    for _ in range(rounds):
        stall = lease * random.uniform(0.75, 1.25)
        if not await logout_while_stalled(a, b, browser, url, prefix, stall):
            missed += 1
    print(f"stalls around the lease: {missed} of {rounds} logouts missed")
    assert missed == 0


async def deaf_node_recovery(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> float:
    """Cut node B's subscriber silently, log out on A; return B's time to close."""
    proxy = SilentCutProxy(redis_server.port)
    await proxy.start()
    try:
        a = await node_a(aiohttp_client, redis_server.url, prefix, close_timeout=0.3)
        registry_b = RedisSessionWSRegistry(
            proxy.url, prefix=prefix, node_ttl=NODE_TTL, reconnect_max_delay=0.5
        )
        b = await aiohttp_client(build_app(registry_b))
        share_session(a, b)
        tab = await open_ws(b)
        session_id = cookie_ws_id(a)
        await written(redis_server.url, prefix, session_id, registry_b.node_id)
        with watch_log("aiohttp_session_ws.redis", "stopped delivering") as deaf:
            assert proxy.cut_subscribers() == 1
            cut_at = time.monotonic()
            # B's presence is live, so A publishes to B: Redis counts B's
            # subscriber, and the proxy drops the frame
            await registry_of(a).close_all_session(session_id)
            assert await expect_close(tab) == WSCloseCode.OK
            took = time.monotonic() - cut_at
            assert deaf.records, "B closed the tab without noticing it was deaf"
        await b.close()
        return took
    finally:
        await proxy.close()


async def test_a_silently_cut_inbox_is_noticed_and_the_logout_still_lands(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    took = await deaf_node_recovery(redis_server, aiohttp_client, prefix)
    assert took <= NODE_TTL * 1.5  # documented: within node_ttl, plus a resync


@pytest.mark.soak
async def test_soak_silent_cuts_are_each_noticed(
    redis_server: RedisServer, aiohttp_client: AiohttpClient
) -> None:
    times = []
    for round_ in range(10):
        prefix = f"soak-deaf-{round_}-{random.getrandbits(32):x}"
        times.append(await deaf_node_recovery(redis_server, aiohttp_client, prefix))
    print("seconds until a deaf node closed the tab:", sorted(times))
    assert max(times) <= NODE_TTL * 1.5


async def test_a_node_cut_off_entirely_is_unhealthy_until_it_hears_again(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    """Every connection of B cut silently, the command connections too: B must
    say so within node_ttl, and claim health again only on a new subscription."""
    proxy = SilentCutProxy(redis_server.port)
    await proxy.start()
    samples: list[tuple[float, bool]] = []
    try:
        a = await node_a(aiohttp_client, redis_server.url, prefix, close_timeout=0.3)
        registry_b = RedisSessionWSRegistry(
            proxy.url,
            prefix=prefix,
            node_ttl=NODE_TTL,
            reconnect_max_delay=0.5,
            command_timeout=1.0,
        )
        b = await aiohttp_client(build_app(registry_b))
        share_session(a, b)
        tab = await open_ws(b)
        session_id = cookie_ws_id(a)
        await written(redis_server.url, prefix, session_id, registry_b.node_id)
        assert registry_b.healthy
        done = asyncio.Event()

        async def sample() -> None:
            for _ in range(2000):  # 20 s at most
                samples.append((time.monotonic(), registry_b.healthy))
                if done.is_set():
                    return
                await asyncio.sleep(0.01)  # a measurement, not a wait for an event

        sampler = asyncio.ensure_future(sample())
        back = reconnected(registry_b)
        cut_at = time.monotonic()
        assert proxy.cut_all() >= 2  # the subscriber and the command pool
        await registry_of(a).close_all_session(session_id)
        assert await expect_close(tab) == WSCloseCode.OK
        await asyncio.wait_for(back.wait(), TIMEOUT)  # healthy again
        done.set()
        await asyncio.wait_for(sampler, TIMEOUT)
        await b.close()
    finally:
        await proxy.close()
    unhealthy_at = next(t for t, healthy in samples if t > cut_at and not healthy)
    assert unhealthy_at - cut_at <= NODE_TTL
    resubscribed_at = min(t for t in proxy.subscribed_at if t > cut_at)
    claimed = [t for t, healthy in samples if t > unhealthy_at and healthy]
    assert claimed, "never healthy again"
    assert all(t > resubscribed_at for t in claimed), (
        "healthy while the only subscription was the cut one"
    )
