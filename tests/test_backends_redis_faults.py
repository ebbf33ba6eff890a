"""The Redis backend under errors that are not outages: none ends a loop or loses
a close-all, and no log line carries a session ws id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, web
from aiohttp.pytest_plugin import AiohttpClient

from aiohttp_session_ws import (
    BackendConfigurationError,
    RedisBackend,
    RedisSessionWSRegistry,
    SessionWSRegistry,
)
from aiohttp_session_ws.backends.redis import WRITE_BATCH
from aiohttp_session_ws.ids import redact, wire_id

from .apps import (
    TIMEOUT,
    Client,
    build_app,
    cookie_ws_id,
    expect_close,
    handler_exits,
    logout,
    open_ws,
    reconnected,
    registry_of,
    share_session,
)
from .logwait import watch_log
from .redis_server import RedisServer, free_port

REDIS_LOG = "aiohttp_session_ws.redis"


async def make_node(
    aiohttp_client: AiohttpClient, url: str, prefix: str, **options: Any
) -> Client:
    registry = RedisSessionWSRegistry(url, prefix=prefix, **options)
    app = build_app(registry, routes=[web.get("/logout", logout)])
    return await aiohttp_client(app)


def backend_of(client: Client) -> RedisBackend:
    backend = registry_of(client).backend
    assert isinstance(backend, RedisBackend)
    return backend


class FailOnce:
    """Wraps a registered Lua script: the first call raises ``error``."""

    def __init__(self, script: Any, error: Exception) -> None:
        self.script = script
        self.error: Exception | None = error
        self.failed = asyncio.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            error, self.error = self.error, None
            self.failed.set()
            raise error
        return self.script(*args, **kwargs)


async def test_an_unexpected_error_ends_no_loop(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix, node_ttl=1.0)
    backend = backend_of(node)
    registry = registry_of(node)
    writer = FailOnce(backend._write, RuntimeError("a bug in the writer"))
    beat = FailOnce(backend._heartbeat, RuntimeError("a bug in the heartbeat"))
    monkeypatch.setattr(backend, "_write", writer)
    monkeypatch.setattr(backend, "_heartbeat", beat)
    with watch_log(REDIS_LOG, "Unexpected error") as caught:
        tab = await open_ws(node)  # its presence write meets the bug
        await asyncio.wait_for(writer.failed.wait(), TIMEOUT)
        await asyncio.wait_for(beat.failed.wait(), TIMEOUT)
        await caught.wait(2)
    assert backend.loop_errors == {"presence-writer": 1, "heartbeat": 1}
    # both loops go on: the presence reaches Redis and the node is healthy
    back = reconnected(registry)
    await asyncio.wait_for(back.wait(), TIMEOUT)
    assert registry.healthy
    assert await registry.count_connections(cookie_ws_id(node)) == 1
    assert all(not task.done() for task in backend._tasks)
    await tab.close()


async def test_an_unexpected_error_in_the_listener_resubscribes(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix, node_ttl=1.0)
    backend = backend_of(node)
    registry = registry_of(node)
    real = backend._deliver
    calls = 0

    async def deliver_with_a_bug(data: bytes | str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the listener")
        await real(data)

    monkeypatch.setattr(backend, "_deliver", deliver_with_a_bug)
    back = reconnected(registry)
    with watch_log(REDIS_LOG, "Unexpected error in the listener") as caught:
        # the heartbeat's self-ping is the first frame the listener reads
        await caught.wait(timeout=TIMEOUT)
        await asyncio.wait_for(back.wait(), TIMEOUT)
    assert backend.loop_errors["listener"] == 1
    assert registry.healthy
    tab = await open_ws(node)
    share_session(
        node, other := await make_node(aiohttp_client, redis_server.url, prefix)
    )
    assert await registry_of(other).close_all_session(cookie_ws_id(node)) == 1
    assert await expect_close(tab) == WSCloseCode.OK


async def test_an_inbox_frame_of_invalid_utf8_is_dropped(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix)
    other = await make_node(aiohttp_client, redis_server.url, prefix)
    backend = backend_of(node)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        with watch_log("aiohttp_session_ws.nodebus", "malformed") as dropped:
            assert await raw.publish(backend.inbox, b"\xff\xfe{not json") == 1
            await dropped.wait(timeout=TIMEOUT)
    finally:
        await raw.aclose()
    assert registry_of(node).healthy
    tab = await open_ws(node)
    share_session(node, other)
    assert await registry_of(other).close_all_session(cookie_ws_id(node)) == 1
    assert await expect_close(tab) == WSCloseCode.OK


def session_cookie(session_ws_id: object) -> dict[str, str]:
    """A SimpleCookieStorage cookie whose session holds ``session_ws_id``."""
    cookie: SimpleCookie = SimpleCookie()
    data = {
        "created": int(time.time()),
        "session": {"aiohttp_session_ws_id": session_ws_id},
    }
    cookie["AIOHTTP_SESSION"] = json.dumps(data)
    return {"Cookie": f"AIOHTTP_SESSION={cookie['AIOHTTP_SESSION'].coded_value}"}


async def test_ids_1_and_str_1_are_two_sessions_in_the_cluster(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix)
    other = await make_node(aiohttp_client, redis_server.url, prefix)
    registry = registry_of(node)
    as_int = await node.ws_connect("/ws", headers=session_cookie(1))
    as_str = await node.ws_connect("/ws", headers=session_cookie("1"))
    for ws in (as_int, as_str):
        await ws.send_str("ping")
        assert (await ws.receive(timeout=TIMEOUT)).data == "ping"
    assert set(registry) == {1, "1"}
    await registry.count_connections("1")  # waits for this node's writes
    assert await registry_of(other).count_connections(1) == 1
    assert await registry_of(other).count_connections("1") == 1
    assert await registry_of(other).connected_sessions() == {1, "1"}
    # a logout of one is not a logout of the other, on this node or another
    assert await registry_of(other).close_all_session(1) == 1
    assert await expect_close(as_int) == WSCloseCode.OK
    assert await handler_exits(node, 1) == ["1"]
    await as_str.send_str("still here")
    assert (await as_str.receive(timeout=TIMEOUT)).data == "still here"
    await as_str.close()
    await handler_exits(node, 1)  # no KeyError escaped into the handler
    assert await registry_of(other).connected_sessions() == frozenset()
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await admin.keys(f"{{{prefix}}}:session:*") == []
    finally:
        await admin.aclose()


async def test_a_bad_close_at_the_head_of_the_queue_blocks_nothing(
    own_redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_redis_server.url
    asking = await make_node(aiohttp_client, url, prefix, reconnect_max_delay=0.2)
    holder = await make_node(aiohttp_client, url, prefix, reconnect_max_delay=0.2)
    tab = await open_ws(holder)
    session_id = cookie_ws_id(holder)
    assert await registry_of(asking).count_connections(session_id) == 1
    registry = registry_of(asking)
    back = reconnected(registry)
    own_redis_server.stop()
    # a close that Redis can never take (it cannot be encoded), then a good one
    registry.closing._remember("s:\udc80")
    assert await registry.close_all_session(session_id) == 0
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        own_redis_server.start()
        await asyncio.wait_for(back.wait(), TIMEOUT * 2)
        assert await expect_close(tab) == WSCloseCode.OK
    assert "Dropped the held-back close-all" in caplog.text
    assert not registry._pending_closes


async def test_stopping_during_an_outage_logs_each_close_it_could_not_send(
    own_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = RedisSessionWSRegistry(
        own_redis_server.url, prefix=prefix, command_timeout=0.5
    )
    await registry.start()
    own_redis_server.stop()
    for session in ("first", "second"):
        assert await registry.close_all_session(session) == 0
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        await registry.stop(timeout=1.0)
    undelivered = [r for r in caplog.records if "undelivered" in r.getMessage()]
    assert len(undelivered) == 2
    for session, record in zip(("first", "second"), undelivered, strict=True):
        assert redact(wire_id(session)) in record.getMessage()
        assert session not in caplog.text


async def test_logs_never_carry_a_session_ws_id(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix)
    secret = "topsecret"
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp_session_ws"):
            with watch_log("aiohttp_session_ws.nodebus", "malformed") as dropped:
                frame = json.dumps(
                    {"kind": "close_session", "body": {"session": secret}}
                )
                await raw.publish(backend_of(node).inbox, frame.encode())
                await dropped.wait(timeout=TIMEOUT)
            await registry_of(node).close_all_session(secret)
    finally:
        await raw.aclose()
    assert "topsec" not in caplog.text
    assert secret[:6] not in caplog.text


@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    server = RedisServer(config={"requirepass": "right-password"})
    server.start()
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    ("credentials", "database", "says"),
    [
        ("", 0, "refused this node"),
        (":wrong@", 0, "refused this node"),
        (":right-password@", 99, "DB index is out of range"),
    ],
)
async def test_a_misconfigured_redis_fails_the_start_at_once(
    password_server: RedisServer,
    prefix: str,
    credentials: str,
    database: int,
    says: str,
) -> None:
    url = f"redis://{credentials}127.0.0.1:{password_server.port}/{database}"
    registry = RedisSessionWSRegistry(url, prefix=prefix, command_timeout=5.0)
    began = time.monotonic()
    with pytest.raises(BackendConfigurationError, match=says) as raised:
        await registry.start()
    assert time.monotonic() - began < 2.0  # not after waiting command_timeout
    assert "right-password" not in str(raised.value)
    await registry.stop()


async def test_the_right_password_starts(
    password_server: RedisServer, prefix: str
) -> None:
    url = f"redis://:right-password@127.0.0.1:{password_server.port}/0"
    registry = RedisSessionWSRegistry(url, prefix=prefix)
    await registry.start()
    try:
        assert registry.healthy
    finally:
        await registry.stop()


async def test_a_wrong_scheme_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisSessionWSRegistry("http://127.0.0.1:6379/0")


async def test_an_unreachable_redis_still_starts_local_only(prefix: str) -> None:
    registry = SessionWSRegistry(
        backend=RedisBackend(
            f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, command_timeout=0.3
        )
    )
    await registry.start()
    try:
        assert not registry.healthy
    finally:
        await registry.stop()


async def test_a_close_redis_refuses_is_dropped_and_the_rest_go_through(
    own_redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_redis_server.url
    asking = await make_node(
        aiohttp_client, url, prefix, command_timeout=0.5, reconnect_max_delay=0.2
    )
    holder = await make_node(aiohttp_client, url, prefix, reconnect_max_delay=0.2)
    tab = await open_ws(holder)
    session_id = cookie_ws_id(holder)
    registry = registry_of(asking)
    assert await registry.count_connections(session_id) == 1
    admin = aioredis.Redis.from_url(url)
    try:  # a key of the wrong type: Redis refuses that close-all, always
        await admin.hset(f"{{{prefix}}}:closed:{wire_id('poisoned')}", "x", "1")
    finally:
        await admin.aclose()
    back = reconnected(registry)
    process = own_redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # frozen, keys kept: both wait
    try:
        closes = await asyncio.gather(
            registry.close_all_session("poisoned"),
            registry.close_all_session(session_id),
        )
        assert list(closes) == [0, 0]
        assert len(registry._pending_closes) == 2
    finally:
        process.send_signal(signal.SIGCONT)
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        await asyncio.wait_for(back.wait(), TIMEOUT)
        assert await expect_close(tab) == WSCloseCode.OK
    assert "Dropped the held-back close-all" in caplog.text
    assert not registry._pending_closes
    assert registry.healthy


async def test_a_close_redis_refuses_while_up_closes_the_local_sockets(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix)
    tab = await open_ws(node)
    session_id = cookie_ws_id(node)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.hset(f"{{{prefix}}}:closed:{wire_id(session_id)}", "x", "1")
    finally:
        await admin.aclose()
    registry = registry_of(node)
    with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
        assert await registry.close_all_session(session_id) == 1
    assert await expect_close(tab) == WSCloseCode.OK
    assert "refused the close-all" in caplog.text
    assert not registry._pending_closes  # not an outage: nothing waits
    assert registry.healthy


async def test_stopping_mid_send_still_logs_every_close_left(
    own_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = RedisSessionWSRegistry(
        own_redis_server.url, prefix=prefix, command_timeout=2.0
    )
    await registry.start()
    process = own_redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # every command hangs
    try:
        sessions = ("one", "two", "three")
        closes = await asyncio.gather(*map(registry.close_all_session, sessions))
        assert closes == [0, 0, 0]
        with caplog.at_level(logging.ERROR, logger="aiohttp_session_ws"):
            # the last try is cut short in the middle of a command
            await registry.stop(timeout=0.3)
    finally:
        process.send_signal(signal.SIGCONT)
    undelivered = [
        r.getMessage() for r in caplog.records if "undelivered" in r.getMessage()
    ]
    assert sorted(undelivered) == sorted(
        f"Stopped with the close-all of session {redact(wire_id(s))} undelivered: "
        "its websockets on other nodes stay open"
        for s in sessions
    )


@pytest.mark.parametrize(
    ("commands", "keys", "missing"),
    [
        (["+@all", "-subscribe"], ["*"], "SUBSCRIBE"),
        (["+@all"], ["other:*"], "its keys"),
        (["+@all", "-publish"], ["*"], "PUBLISH"),
        (["+@all", "-evalsha", "-eval"], ["*"], "scripts"),
    ],
)
async def test_an_acl_that_forbids_what_the_node_needs_fails_the_start(
    redis_server: RedisServer,
    prefix: str,
    commands: list[str],
    keys: list[str],
    missing: str,
) -> None:
    user = f"limited-{prefix}"
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.acl_setuser(
            user,
            enabled=True,
            passwords=["+pw"],
            commands=commands,
            keys=keys,
            channels=["*"],
            reset=True,
        )
        url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
        registry = RedisSessionWSRegistry(url, prefix=prefix, command_timeout=5.0)
        began = time.monotonic()
        with pytest.raises(BackendConfigurationError, match="refused this node"):
            await registry.start()
        assert time.monotonic() - began < 2.0, missing
        assert not registry.backend._tasks
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()


async def test_a_stalled_loop_or_a_slow_redis_is_no_deafness(
    redis_server: RedisServer, aiohttp_client: AiohttpClient, prefix: str
) -> None:
    """Stalls shorter than the lease keep the subscription: no resubscription,
    and no on_reconnect but for a lease that ran out meanwhile."""
    node = await make_node(aiohttp_client, redis_server.url, prefix, node_ttl=1.0)
    registry = registry_of(node)
    told = 0

    async def note() -> None:
        nonlocal told
        told += 1

    registry.on_reconnect.append(note)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        with (
            watch_log(REDIS_LOG, "subscribed again") as resubscribed,
            watch_log(REDIS_LOG, "outlived its lease") as lapsed,
        ):
            for _ in range(3):
                time.sleep(0.4)  # noqa: ASYNC251 (the fault: this loop blocked)
                await asyncio.sleep(0.3)  # let it catch up between stalls
            for _ in range(3):
                await admin.client_pause(400, all=False)  # writes wait 0.4 s
                await asyncio.sleep(0.7)
    finally:
        await admin.aclose()
    assert resubscribed.records == []
    assert told == len(lapsed.records)
    back = reconnected(registry)
    if not registry.healthy:
        await asyncio.wait_for(back.wait(), TIMEOUT)


async def test_a_node_with_many_sessions_resyncs_in_batches(
    redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = await make_node(aiohttp_client, redis_server.url, prefix)
    backend = backend_of(node)
    registry = registry_of(node)
    sessions = 2500
    for n in range(sessions):  # presence as the registry notes it
        backend.add_connection(wire_id(n), f"c{n}")
    assert len(await registry.connected_sessions()) == sessions
    batches: list[int] = []
    write = backend._write

    def counting(*args: Any, **kwargs: Any) -> Any:
        # tag, node, lease, reset, grace; then 6 values per session
        batches.append((len(kwargs["args"]) - 5) // 6)
        return write(*args, **kwargs)

    monkeypatch.setattr(backend, "_write", counting)
    back = reconnected(registry)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.client_kill_filter(_type="pubsub")  # every node resyncs
    finally:
        await admin.aclose()
    await asyncio.wait_for(back.wait(), TIMEOUT)
    assert max(batches) <= WRITE_BATCH
    assert sum(batches) >= sessions
    assert len(await registry.connected_sessions()) == sessions


async def test_a_redis_that_cannot_save_holds_the_logout_back(
    own_redis_server: RedisServer,
    aiohttp_client: AiohttpClient,
    prefix: str,
) -> None:
    """MISCONF (a background save failed: a full disk, a lost directory) is an
    outage: the close-all waits for it to end, and then lands."""
    url = own_redis_server.url
    asking = await make_node(aiohttp_client, url, prefix, reconnect_max_delay=0.2)
    holder = await make_node(aiohttp_client, url, prefix, reconnect_max_delay=0.2)
    tab = await open_ws(holder)
    session_id = cookie_ws_id(holder)
    registry = registry_of(asking)
    assert await registry.count_connections(session_id) == 1
    admin = aioredis.Redis.from_url(url)
    directory = own_redis_server.directory
    try:
        # writes stop while the last save failed (with save points set)
        await admin.config_set("save", "3600 1")
        await admin.config_set("stop-writes-on-bgsave-error", "yes")
        shutil.rmtree(directory)  # the next save fails
        await admin.bgsave()

        async def save_failed() -> None:
            # Redis tells of a finished save only when asked
            while (await admin.info("persistence"))["rdb_bgsave_in_progress"]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        await asyncio.wait_for(save_failed(), TIMEOUT)
        assert (await admin.info("persistence"))["rdb_last_bgsave_status"] == "err"
        back = reconnected(registry)
        assert await registry.close_all_session(session_id) == 0
        assert len(registry._pending_closes) == 1  # held back, not dropped
        # the operator lets writes go on (Redis's directory cannot come back)
        await admin.config_set("stop-writes-on-bgsave-error", "no")
        await asyncio.wait_for(back.wait(), TIMEOUT)
        assert await expect_close(tab) == WSCloseCode.OK
    finally:
        os.makedirs(directory, exist_ok=True)  # for the fixture's clean-up
        await admin.aclose()
