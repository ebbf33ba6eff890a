"""The cluster backend: presence, liveness and the node bus on Redis (redis-py asyncio).

Each node keeps one pub/sub connection for its inbox channel, and three tasks:
the listener (subscribes, delivers frames, reconnects with capped backoff), the
presence writer (the only writer of this node's presence, in order), and the
heartbeat (renews the node's lease, removes the presence of dead nodes, and
ends the sessions whose grace period ran out).

Session starts and ends are decided inside the presence scripts, so each is
reported once, to the node whose call made it (see :mod:`.scripts`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from ..base import (
    Backend,
    BackendConfigurationError,
    BackendUnavailableError,
    SessionClosed,
)
from . import scripts
from .events import RedisEventStore
from .handlers import NODE_GONE, PATH_ADDED, PATH_REMOVED, RedisHandlerStore
from .locks import RedisLockStore
from .sessions import RedisSessionStore

logger = logging.getLogger("aiohttp_session_ws.redis")

DEFAULT_PREFIX = "aiohttp_session_ws"
"""The default key prefix; nodes with the same prefix form one cluster."""

POOL_SIZE = 50
"""Connections of the command pool of a client made from a URL; more
concurrent commands wait for one of them."""

WRITE_BATCH = 1000
"""Sessions per presence write: one script call blocks Redis for its length."""

_PING = b"\x00ping:"
_HOLD = b"\x00hold:"
_DROP = b"\x00drop:"
_NO_OTHERS: frozenset[str] = frozenset()
"""The one empty holder set, shared by every session no other node holds."""
"""Start the notes another node's presence write sends this node: it now
holds (or no longer holds) a session this node holds too."""
"""Starts the frames a node publishes to its own inbox to prove it still
hears it (not JSON, so never taken for another node's frame)."""


class RedisBackend(Backend):
    """Keeps the cluster's presence in Redis and carries frames over pub/sub.

    :param redis: a Redis URL (``redis://127.0.0.1:6379/0``; the backend then
        owns the client, whose pool holds :data:`POOL_SIZE` connections that
        commands wait for, and closes it on stop) or a ``redis.asyncio.Redis``
        (give it a ``BlockingConnectionPool``: since redis-py 8 the default
        pool fails a command when its 100 connections are all busy; and
        ``decode_responses=False``, the default: frames are bytes).
    :param prefix: the prefix of every key and channel; nodes sharing a prefix
        on one Redis form a cluster.
    :param node_ttl: a node that stops heartbeating (killed, frozen, cut off)
        has its presence removed by the other nodes within this many seconds.
    :param missed_close_window: how long, in seconds, a close-all is remembered
        for the nodes that missed it (presence written late, or away).
    :param reconnect_delay: the first delay before reconnecting, in seconds;
        it doubles after each failure up to ``reconnect_max_delay``.
    :param reconnect_max_delay: the cap of the reconnect delay, in seconds.
    :param command_timeout: the socket timeout of a client made from a URL, and
        how long :meth:`start` and :meth:`stop` wait for Redis, in seconds.
    :param handle_key: the key of the sessions' public handles (see
        :class:`~.sessions.RedisSessionStore`); by default the cluster
        shares a random one through Redis.
    :raises ValueError: an option is out of range, the URL is not a Redis
        URL, or the client decodes responses.

    The sessions' lifecycle (alive, grace periods, handles, properties) lives
    in Redis too: a Redis restarted empty loses it, and the nodes' presence
    rewrites start their sessions again.
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_ttl: float = 10.0,
        missed_close_window: float = 300.0,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        command_timeout: float = 5.0,
        handle_key: bytes | str | None = None,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be non-empty, without braces: {prefix!r}")
        for name, value in [
            ("node_ttl", node_ttl),
            ("missed_close_window", missed_close_window),
            ("reconnect_delay", reconnect_delay),
            ("reconnect_max_delay", reconnect_max_delay),
            ("command_timeout", command_timeout),
        ]:
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if isinstance(redis, str):
            # One immediate retry replaces a pooled connection that a Redis
            # restart left stale (our commands are safe to repeat); beyond
            # that a failure reaches us, and the listener backs off.
            # A burst of commands beyond the pool's size waits for a free
            # connection (within command_timeout) instead of failing with
            # "Too many connections", which would look like an outage.
            pool = aioredis.BlockingConnectionPool.from_url(
                redis,
                max_connections=POOL_SIZE,
                timeout=command_timeout,
                socket_timeout=command_timeout,
                socket_connect_timeout=command_timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self.client = aioredis.Redis.from_pool(pool)
            # the subscriber's own client never retries: the listener must
            # see every lost connection, and reconnects with backoff
            self._subscriber = aioredis.Redis.from_url(
                redis,
                socket_connect_timeout=command_timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns_client = True
        else:
            if redis.connection_pool.connection_kwargs.get("decode_responses"):
                # a frame that is not UTF-8 would fail inside redis-py's
                # parser, and cluster ids are compared as bytes
                raise ValueError(
                    "RedisBackend needs a client with decode_responses=False "
                    "(the default): pass a second client for the backend, or "
                    "a Redis URL"
                )
            self.client = self._subscriber = redis
            self._owns_client = False
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.missed_close_window = missed_close_window
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.command_timeout = command_timeout
        self._tag = "{" + prefix + "}"
        self._nodes_key = f"{self._tag}:nodes"
        self._register_scripts()
        self.session_store: RedisSessionStore = RedisSessionStore(
            self.client, self._tag, self._run, self._command, self._flush, handle_key
        )
        self.handler_store: RedisHandlerStore = RedisHandlerStore(self)
        self.handler_store.on_nodes_gone = self._nodes_gone
        self.lock_store: RedisLockStore = RedisLockStore(self)
        self.event_store: RedisEventStore = RedisEventStore(self)
        # this node's connections (with when they opened), which the writer
        # mirrors into Redis
        self._local: dict[str, dict[str, float]] = {}
        # the other nodes holding each session of this node, once a write has
        # told (kept by the holders' notes; forgotten on any failure): a push
        # to a session no other node holds then needs no Redis
        # (frozensets, the empty one shared: most sessions cost no set)
        self._others: dict[str, frozenset[str]] = {}
        self._early_holds: dict[str, set[str]] = {}
        # sessions that left _local while a presence write was on its way
        self._left_meanwhile: set[str] = set()
        self._dirty: set[str] = set()
        self._noted = 0  # presence notes taken so far
        self._written = 0  # notes known to be in Redis
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        # health: every failure starts an epoch that a full resync must end
        self._epoch = 1
        self._synced_epoch = 0
        self._subscribed = False
        self._subscribed_once = False
        self._missed = False
        self._first_sync: asyncio.Future[None] | None = None
        self._offset = time.time() - time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._redis_answers = asyncio.Event()
        self._listen_delay = reconnect_delay
        self._ping_wanted = asyncio.Event()
        # proof that the inbox still delivers: pings sent and not yet heard;
        # after any failure, healthy waits for a ping sent since to be heard
        self._pings_sent = 0
        self._pings_heard = 0
        self._catching_up: dict[int, asyncio.Future[None]] = {}
        self._unheard: collections.deque[tuple[int, float]] = collections.deque()
        self._hearing = False
        self._confirm_after = 0  # pings up to this one predate the last failure
        self._subscriptions = 0  # counts subscriptions, so a ping knows its own
        self._beat_started: float | None = None  # a heartbeat awaiting Redis
        self.loop_errors: collections.Counter[str] = collections.Counter()
        """Unexpected errors caught per background loop (``listener``,
        ``presence-writer``, ``heartbeat``); each was logged, and the loop
        went on."""

    def _register_scripts(self) -> None:
        register = self.client.register_script
        self._heartbeat = register(scripts.HEARTBEAT)
        self._write = register(scripts.WRITE_PRESENCE)
        self._leave = register(scripts.LEAVE)
        self._nodes_of = register(scripts.SESSION_NODES)
        self._mark_closed = register(scripts.MARK_CLOSED)
        self._publish_session = register(scripts.PUBLISH_SESSION)
        self._publish_all = register(scripts.PUBLISH_ALL)

    @property
    def inbox(self) -> str:
        """The pub/sub channel on which this node receives frames."""
        return self._inbox_of(self.node_id)

    def _inbox_of(self, node_id: str) -> str:
        return f"{self._tag}:inbox:{node_id}"

    @property
    def healthy(self) -> bool:
        """True while subscribed, presence fully written, and the inbox heard.

        After any failure the node is healthy again only once a ping sent to
        its own inbox since then has come back. A heartbeat that waits for
        Redis longer than a beat (``node_ttl / 4``) makes it false meanwhile:
        Redis, or the way to it, is stalled, and frames may be lost.
        """
        started = self._beat_started
        overdue = started is not None and (
            time.monotonic() - started > self._beat_interval
        )
        return self._in_sync and not overdue

    @property
    def _in_sync(self) -> bool:
        """Subscribed, fully written and heard since the last failure."""
        return self._subscribed and self._synced_epoch == self._epoch and self._hearing

    def now(self) -> float:
        """Redis's clock, as last seen; it errs early by at most a round trip."""
        return time.monotonic() + self._offset

    def _learn_clock(self, redis_now_us: int) -> None:
        self._offset = redis_now_us / 1e6 - time.monotonic()

    # lifecycle
    async def start(self) -> None:
        """Start the listener, writer and heartbeat; wait for the first sync.

        If Redis cannot be reached within ``command_timeout``, the node starts
        anyway, local-only and unhealthy, and joins the cluster once it can.

        :raises BackendConfigurationError: Redis refused this node (a password,
            database number or ACL that does not fit).
        """
        if self._tasks:
            return
        deadline = time.monotonic() + self.command_timeout
        await self._check_configuration()
        self._subscribed_once = self._missed = self._hearing = False
        self.handler_store.forget()
        self._confirm_after = self._pings_sent
        self._epoch = self._synced_epoch + 1
        self._stopping = asyncio.Event()
        self._listen_delay = self.reconnect_delay
        loop = asyncio.get_running_loop()
        self._first_sync = loop.create_future()
        self.event_store.begin()
        for name, step in [
            ("listener", self._listen_once),
            ("presence-writer", self._write_presence_once),
            ("heartbeat", self._beat_once),
            ("event-follower", self.event_store.follow_once),
        ]:
            task = loop.create_task(
                self._keep_running(name, step), name=f"redis-{name}-{self.node_id}"
            )
            task.add_done_callback(_log_death)
            self._tasks.append(task)
        try:
            await asyncio.wait_for(
                asyncio.shield(self._first_sync),
                max(deadline - time.monotonic(), 0.0),
            )
            await self.event_store.wait_started(max(deadline - time.monotonic(), 0.0))
        except BackendConfigurationError:
            await self.stop()
            raise
        except TimeoutError:
            logger.error(
                "Redis at %s is unreachable after %.1f s; node %s runs local-only "
                "and joins the cluster when it answers (check the URL and that "
                "Redis runs)",
                _address(self.client),
                self.command_timeout,
                self.node_id,
            )
        finally:
            self._first_sync = None  # a refusal later is an error like others

    async def _check_configuration(self) -> None:
        """Fail the start when Redis refuses this node; an outage only logs.

        A wrong password, a missing one, a forbidden command or a database
        index out of range is a mistake in the configuration, not an outage:
        waiting for it to end would only hide it. (A ``rediss://`` URL to a
        Redis without TLS cannot be told from an unreachable one: it times out.)
        """
        try:
            await asyncio.wait_for(self.client.ping(), self.command_timeout)
        except RedisError as exc:
            if _refuses(exc):
                raise self._refused(exc) from exc
        except (TimeoutError, OSError):
            pass  # unreachable for now: start() says so, and the node waits

    def _refused(self, exc: RedisError) -> BackendConfigurationError:
        return BackendConfigurationError(
            f"Redis at {_address(self.client)} refused this node: {exc} "
            "(check the password, user, database number and ACL in the URL or "
            "client you passed: the node needs its commands on keys and "
            f"channels {self._tag}:*)"
        )

    async def _keep_running(
        self, name: str, step: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run one loop's ``step`` until the backend stops; no error ends it.

        An unexpected error is logged and counted in :attr:`loop_errors`; it
        counts as a lost connection (the node resyncs), and the loop goes on
        after a pause that doubles while the errors go on. Before the first
        sync, a command that Redis refuses (an ACL, say) fails :meth:`start`.
        """
        delay = self.reconnect_delay
        while not self._stopping.is_set():
            try:
                await step()
                delay = self.reconnect_delay
            except Exception as exc:
                first = self._first_sync
                if isinstance(exc, RedisError) and first and not first.done():
                    first.set_exception(self._refused(exc))
                    return
                self.loop_errors[name] += 1
                logger.exception(
                    "Unexpected error in the %s of node %s; it goes on",
                    name,
                    self.node_id,
                )
                self._fail(exc, unsubscribed=name == "listener")
                await self._pause(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.reconnect_max_delay)

    async def stop(self) -> None:
        """Stop the tasks, withdraw this node's presence, close an owned client."""
        tasks, self._tasks = self._tasks, []
        # redis-py may finish a command despite a cancel, so every loop also
        # checks the stopping event
        self._stopping.set()
        self._wake.set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._subscribed = False
        self._release_flush_waiters()
        try:
            _, ended = await self._run(self._leave, self.node_id, self._grace_us)
        except (BackendUnavailableError, RedisError) as exc:
            logger.warning(
                "Could not withdraw node %s from Redis (%s); the other nodes drop "
                "it within node_ttl",
                self.node_id,
                exc,
            )
        else:
            self._report([], ended)
        if self._owns_client:
            await self.client.aclose()
            await self._subscriber.aclose()

    # node bus
    async def publish(self, node_id: str, frame: bytes) -> bool:
        """Publish ``frame`` on the node's inbox; False if nobody subscribes to it."""
        receivers = await self._command(
            self.client.publish(self._inbox_of(node_id), frame)
        )
        return bool(receivers)

    async def _listen_once(self) -> None:
        """Subscribe and deliver until the subscription fails; then back off."""
        pubsub = self._subscriber.pubsub()
        try:
            await asyncio.wait_for(pubsub.subscribe(self.inbox), self.command_timeout)
            poll = self._beat_interval / 2
            while not self._stopping.is_set():
                asked = time.monotonic()
                message = await pubsub.get_message(timeout=poll)
                if message is None:
                    if time.monotonic() - asked > 2 * poll:
                        continue  # the loop itself was stalled: look again
                    if self._deafness() is None:
                        continue
                    # what came during a stall may wait in the buffer still
                    message = await pubsub.get_message(timeout=0)
                    if message is None:
                        raise BackendUnavailableError(self._deafness())
                if message["type"] == "subscribe":
                    self._on_subscribed()
                    self._listen_delay = self.reconnect_delay
                elif message["type"] == "message":
                    await self._deliver(message["data"])
        except (TimeoutError, RedisError, OSError) as exc:
            if isinstance(exc, RedisError) and _refuses(exc):
                raise  # not an outage: _keep_running logs it and backs off
            self._fail(exc, unsubscribed=True)
        finally:
            self._subscribed = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    pubsub.aclose(),  # type: ignore[no-untyped-call]
                    self.command_timeout,
                )
        if self._stopping.is_set():
            return
        # back off, unless the heartbeat finds Redis answering again
        self._redis_answers.clear()
        delay = self._listen_delay
        await self._pause(delay * random.uniform(0.5, 1.0), self._redis_answers)
        self._listen_delay = min(delay * 2, self.reconnect_max_delay)

    @property
    def _beat_interval(self) -> float:
        return self.node_ttl / 4

    def _deafness(self) -> str | None:
        """Why the inbox seems not to deliver, or None: a ping unheard a beat.

        A subscriber connection cut without a reset (a NAT or load balancer
        that dropped it) reads nothing, forever, and Redis still counts the
        subscriber; only a frame that does not come back shows it. The clock
        of a ping starts when Redis has taken it, so a slow Redis does not
        count; when the command connections are cut too, the heartbeat that
        waits for Redis makes the node unhealthy (see :attr:`healthy`), and
        its timeout makes it resync.
        """
        if self._unheard and time.monotonic() - self._unheard[0][1] > (
            self._beat_interval
        ):
            return (
                "the inbox stopped delivering (a ping to itself went unheard "
                f"for {self._beat_interval:.1f} s)"
            )
        return None

    def _heard_ping(self, frame: bytes) -> None:
        try:
            seq = int(frame[len(_PING) :])
        except ValueError:
            return
        self._pings_heard = max(self._pings_heard, seq)
        while self._unheard and self._unheard[0][0] <= self._pings_heard:
            self._unheard.popleft()
        for waited in [n for n in self._catching_up if n <= seq]:
            waiter = self._catching_up.pop(waited)
            if not waiter.done():
                waiter.set_result(None)
        if seq > self._confirm_after and not self._hearing:
            self._hearing = True
            self._maybe_healthy()

    async def _caught_up(self) -> None:
        """Wait until the frames published to this node's inbox so far are handled.

        (Pub/sub keeps the order of one channel: a ping sent now comes after.)
        """
        self._pings_sent += 1
        seq = self._pings_sent
        waiter = asyncio.get_running_loop().create_future()
        self._catching_up[seq] = waiter
        try:
            await self._command(
                self.client.publish(self.inbox, _PING + str(seq).encode())
            )
            await asyncio.wait_for(waiter, self.command_timeout)
        finally:
            self._catching_up.pop(seq, None)

    async def _send_ping(self) -> None:
        """Publish a ping to this node's own inbox, for the listener to hear."""
        self._pings_sent += 1
        seq, subscription = self._pings_sent, self._subscriptions
        receivers = await self._command(
            self.client.publish(self.inbox, _PING + str(seq).encode())
        )
        if not self._subscribed or subscription != self._subscriptions:
            return  # it went to a subscription that is gone
        if not receivers:
            logger.warning(
                "Redis lists no subscriber for the inbox of node %s; subscribing again",
                self.node_id,
            )
            self._unheard.appendleft((seq, 0.0))  # the listener acts on it now
        elif seq > self._pings_heard:
            self._unheard.append((seq, time.monotonic()))

    async def _pause(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Wait ``seconds``, or less if the backend stops or ``wake`` is set."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()

    def _on_subscribed(self) -> None:
        self._unheard.clear()
        self._subscriptions += 1
        # notes of other holders sent while unsubscribed are lost: what was
        # learned before this subscription cannot be trusted
        self._others.clear()
        self._early_holds.clear()
        if self._subscribed_once:  # a resubscription: frames may have been lost
            logger.info("Node %s subscribed again to its inbox", self.node_id)
            self._new_epoch()
        self._subscribed_once = True
        self._subscribed = True
        self._wake.set()
        self._maybe_healthy()

    async def _deliver(self, data: bytes | str) -> None:
        frame = data.encode() if isinstance(data, str) else data
        if frame.startswith(b"\x00"):
            if frame.startswith(_PING):
                self._heard_ping(frame)
            elif frame.startswith((_HOLD, _DROP)):
                self._holder_note(frame)
            elif frame.startswith((PATH_ADDED, PATH_REMOVED, NODE_GONE)):
                self.handler_store.note(frame)
            return
        try:
            await self.deliver(frame)
        except Exception:
            logger.exception("Frame handler failed on node %s", self.node_id)

    def _holder_note(self, frame: bytes) -> None:
        """Another node began (``hold``) or stopped (``drop``) holding a session."""
        node, _, session = frame[len(_HOLD) :].decode("utf-8", "replace").partition(":")
        if session not in self._local:
            return
        others = self._others.get(session)
        if frame.startswith(_DROP):
            if others is not None:
                self._others[session] = others - {node} or _NO_OTHERS
        elif others is not None:
            self._others[session] = others | {node}
        else:  # before our own write's answer: merged into it
            self._early_holds.setdefault(session, set()).add(node)

    # health
    def _nodes_gone(self, nodes: list[str]) -> None:
        if self._hooks is not None:
            try:
                self._hooks.on_nodes_left(nodes)
            except Exception:
                logger.exception("The on_nodes_left hook failed on %s", self.node_id)

    def _new_epoch(self) -> None:
        self.handler_store.forget()
        self._others.clear()
        self._early_holds.clear()
        self._epoch += 1
        self._missed = True
        self._hearing = False
        self._confirm_after = self._pings_sent

    def _fail(self, exc: BaseException, *, unsubscribed: bool = False) -> None:
        was_healthy = self._in_sync
        if unsubscribed:
            self._subscribed = False
            if self._hooks is not None:
                try:
                    self._hooks.on_frames_lost()
                except Exception:
                    logger.exception("The on_frames_lost hook failed")
        if was_healthy:
            logger.warning(
                "Node %s lost Redis (%s); local work goes on, cross-node "
                "messages may be missed until it is back",
                self.node_id,
                str(exc) or type(exc).__name__,
            )
        self._new_epoch()
        self._release_flush_waiters()

    # presence
    def add_connection(self, session_id: str, connection_id: str) -> None:
        """Note the connection; the writer task puts it in Redis."""
        self._local.setdefault(session_id, {})[connection_id] = self.now()
        self._note(session_id)

    def remove_connection(self, session_id: str, connection_id: str) -> None:
        """Forget the connection; the writer task removes it from Redis."""
        connections = self._local.get(session_id)
        if connections is None or connection_id not in connections:
            return
        del connections[connection_id]
        if not connections:
            del self._local[session_id]
            self._others.pop(session_id, None)
            self._early_holds.pop(session_id, None)
            self._left_meanwhile.add(session_id)
        self._note(session_id)

    def _note(self, session_id: str) -> None:
        self._dirty.add(session_id)
        self._noted += 1
        self._wake.set()

    def _note_handlers(self) -> None:
        """Note a change of this node's handler paths: the writer writes them."""
        self._noted += 1
        self._wake.set()

    async def _write_presence_once(self) -> None:
        """Mirror ``_local`` into Redis: a full reset after a failure, else changes."""
        await self._wake.wait()
        self._wake.clear()
        if self._stopping.is_set():
            return
        epoch, noted = self._epoch, self._noted
        reset = self._synced_epoch != epoch
        sessions = list(self._local) if reset else list(self._dirty)
        self._dirty.clear()
        if (sessions or reset) and not await self._write_batches(
            sessions, epoch, reset
        ):
            return
        if not await self._write_handlers(epoch, reset):
            return
        self._written = noted
        self._release_flush_waiters()
        if reset and self._epoch == epoch:
            self._synced_epoch = epoch
            self._maybe_healthy()

    async def _write_handlers(self, epoch: int, reset: bool) -> bool:
        """Write this node's handler paths; after a reset read the others'.

        False if it stopped short (the next round tries again).
        """
        store = self.handler_store
        try:
            if not await store.write(reset):
                self._rejoin(1)
                return False
            if reset and self._epoch == epoch:
                await store.read_table()
        except BackendUnavailableError:
            return False  # the heartbeat or the listener wakes us when it is back
        return True

    async def _write_batches(
        self, sessions: list[str], epoch: int, reset: bool
    ) -> bool:
        """Write ``sessions`` in batches; False if it stopped short.

        Sessions go in batches of :data:`WRITE_BATCH`, so that the reset of a
        node with many sessions does not hold Redis up for the other nodes.
        A reset first syncs the handle key. Whatever was not written goes back
        to the dirty sessions, for the next round.
        """
        start = 0
        try:
            if reset or not self.session_store.key_known:
                await self.session_store.sync_key()
            for start in range(0, max(len(sessions), 1), WRITE_BATCH):
                if self._epoch != epoch:  # failed meanwhile: the next round resets
                    return False
                first = reset and not start
                last = reset and start + WRITE_BATCH >= len(sessions)
                batch = sessions[start : start + WRITE_BATCH]
                if not await self._write_batch(batch, first | last << 1):
                    self._dirty.update(sessions[start:])
                    self._wake.set()  # not a member: rewrite everything
                    return False
        except BackendUnavailableError:
            self._dirty.update(sessions[start:])
            return False  # the heartbeat or the listener wakes us when it is back
        except BaseException:
            self._dirty.update(sessions[start:])
            raise
        return True

    async def _write_batch(self, batch: list[str], reset: int) -> bool:
        """Write one batch of presence; False if this node is not a member.

        ``reset`` has bit 1 on the first batch of a full rewrite, bit 2 on its
        last. Each session goes with its count and, while it has connections,
        its handle and its newest connection's open time (a write that only
        carries connections older than a close-all of the session starts
        nothing).
        """
        args: list[Any] = [self.node_id, self._lease_us, reset, self._grace_us]
        for session_id in batch:
            opened = self._local.get(session_id)
            if opened:
                handle = self.session_store.handle_of(session_id)
                newest_us = int(max(opened.values()) * 1e6)
                want = int(session_id not in self._others)
                addressed = self.handler_store.addressed_of(session_id, reset > 0)
                args += [session_id, len(opened), handle, newest_us, want, addressed]
            else:
                self.handler_store.addressed_of(session_id, False)  # released
                args += [session_id, 0, "", 0, 0, ""]
        # the holders it tells are kept only if this node heard every note
        # sent since: subscribed before the script ran, and all along
        epoch, subscription = self._epoch, self._subscriptions
        listening = self._subscribed
        self._left_meanwhile.clear()
        reply = await self._run(self._write, *args)
        now_us, absent, closed, started, ended, holders = reply
        self._learn_clock(now_us)
        if absent:  # nothing was written
            self._rejoin(absent)
            return False
        if (
            listening
            and self._subscribed
            and epoch == self._epoch
            and subscription == self._subscriptions
        ):
            for session_id, nodes in _pairs(holders):
                self._learn_holders(_text(session_id), nodes)
        for session_id, at_us in _pairs(closed):
            self._session_closed(_text(session_id), int(at_us))
        self._report(started, ended)
        return True

    def _learn_holders(self, session_id: str, nodes: list[bytes]) -> None:
        if session_id not in self._local or session_id in self._left_meanwhile:
            # it left this node while the write was on its way (and may be
            # back): notes sent meanwhile were dropped, so the answer is
            # stale; its next write asks again (want)
            return
        others = frozenset(_text(node) for node in nodes)
        early = self._early_holds.pop(session_id, None)
        if early:
            others |= early
        self._others[session_id] = others or _NO_OTHERS

    def _rejoin(self, absent: int) -> None:
        """Start a full resync: this node is not (or no longer) a member."""
        if absent == _LAPSED:
            logger.warning(
                "Node %s outlived its lease (it was stalled or cut off for over "
                "%.1f s): it may have missed close-alls; resyncing",
                self.node_id,
                self._lease_us / 1e6,
            )
        else:
            logger.warning(
                "Node %s was missing from Redis (restarted empty, or the node "
                "was presumed dead); rejoining",
                self.node_id,
            )
        self._new_epoch()
        self._release_flush_waiters()

    def _maybe_healthy(self) -> None:
        """End start() and report a recovery, once healthy.

        Subscribed and fully written but not yet heard: ask for a ping now.
        """
        if not self._in_sync:
            if self._subscribed and self._synced_epoch == self._epoch:
                self._ping_wanted.set()  # the heartbeat sends one at once
            return
        if self._first_sync is not None and not self._first_sync.done():
            self._first_sync.set_result(None)
        if self._missed:
            self._missed = False
            logger.info("Node %s is back in the cluster", self.node_id)
            if self._hooks is not None:
                self._hooks.on_reconnect()

    def _session_closed(self, session_id: str, at_us: int) -> None:
        if self._hooks is not None:
            self._hooks.on_session_closed(session_id, at_us / 1e6)

    def _report(self, started: Sequence[Any], ended: Sequence[Any]) -> None:
        """Tell the registry of the session starts and ends a script decided."""
        for sessions, hook_name in [
            (started, "on_sessions_started"),
            (ended, "on_sessions_ended"),
        ]:
            if not sessions or self._hooks is None:
                continue
            try:
                getattr(self._hooks, hook_name)([_text(s) for s in sessions])
            except Exception:
                logger.exception(
                    "The %s hook failed on node %s", hook_name, self.node_id
                )

    @property
    def _lease_us(self) -> int:
        return int(self.node_ttl * 0.75 * 1e6)

    @property
    def _grace_us(self) -> int:
        return max(int(self.grace_period * 1e6), 0)

    async def _beat_once(self) -> None:
        """Renew this node's lease, remove dead nodes, ping the inbox; then wait.

        It runs every ``node_ttl / 4`` s, and at once when a recovery waits
        for a ping to be heard.
        """
        self._ping_wanted.clear()
        self._beat_started = time.monotonic()
        try:
            now_us, absent, reaped, ended = await self._run(
                self._heartbeat, self.node_id, self._lease_us, self._grace_us
            )
        except BackendUnavailableError:
            pass  # noted by _command; the next beat tries again
        else:
            self._learn_clock(now_us)
            for node_id, sessions in _pairs(reaped):
                logger.warning(
                    "Node %s stopped heartbeating; removed its presence "
                    "(%s session(s))",
                    _text(node_id),
                    sessions,
                )
            self._report([], ended)
            if absent and (self._synced_epoch or absent == _LAPSED):
                self._rejoin(absent)
            if not self._subscribed:
                self._redis_answers.set()  # the listener retries now
            else:
                with contextlib.suppress(BackendUnavailableError):
                    await self._send_ping()
            if self._synced_epoch != self._epoch:
                self._wake.set()  # Redis answers again: resync now
        finally:
            self._beat_started = None
        await self._pause(self._beat_interval, self._ping_wanted)

    async def _flush(self) -> None:
        """Wait until this node's presence notes so far are in Redis (if healthy)."""
        if self._written >= self._noted or self._synced_epoch != self._epoch:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((self._noted, waiter))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waiter, self.command_timeout)

    def _release_flush_waiters(self) -> None:
        waiting = []
        for noted, waiter in self._flush_waiters:
            if noted <= self._written or self._synced_epoch != self._epoch:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((noted, waiter))
        self._flush_waiters = waiting

    async def session_nodes(self, session_id: str) -> Mapping[str, int]:
        """Read the live nodes holding the session (after this node's notes)."""
        await self._flush()
        now_us, live = await self._run(self._nodes_of, session_id)
        self._learn_clock(now_us)
        return {_text(node): int(count) for node, count in _pairs(live)}

    async def sessions(self) -> frozenset[str]:
        """Read the set of connected sessions (after this node's notes)."""
        await self._flush()
        members = await self._command(self.client.smembers(f"{self._tag}:sessions"))
        return frozenset(_text(member) for member in members)

    def holds_alone(self, session_id: str) -> bool:
        """Whether the other holders of this node's session are known: none.

        Known once this node's presence write of the session told them, and
        kept by the holders' notes, while nothing failed since.
        """
        others = self._others.get(session_id)
        return others is not None and not others and self._in_sync

    async def publish_to_session(self, session_id: str, frame: bytes) -> list[str]:
        """Publish ``frame`` to the other live holders of the session.

        For a session this node holds, the other holders are known (their
        presence writes tell it), so a session no other node holds costs no
        Redis call, and one held elsewhere costs one pipelined round trip.
        Otherwise one script looks the holders up and publishes. Returns the
        nodes whose inbox has a subscriber (the others miss it).
        """
        others = self._others.get(session_id) if self._in_sync else None
        if others is None:
            sent = await self._run(
                self._publish_session, session_id, self.node_id, frame
            )
            return [_text(node) for node in sent]
        if not others:
            return []
        nodes = list(others)
        if len(nodes) == 1:  # the usual case: skip the pipeline's own cost
            received = await self._command(
                self.client.publish(self._inbox_of(nodes[0]), frame)
            )
            return nodes if received else []
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.publish(self._inbox_of(node), frame)
        receivers = await self._command(pipe.execute())
        return [node for node, count in zip(nodes, receivers, strict=True) if count]

    async def publish_to_all(self, frame: bytes) -> list[str]:
        """Publish ``frame`` to every other live node, in one script."""
        sent = await self._run(self._publish_all, self.node_id, frame)
        return [_text(node) for node in sent]

    async def mark_session_closed(
        self, session_id: str, *, ago: float = 0.0, frame: bytes | None = None
    ) -> SessionClosed:
        """Remember the close for ``missed_close_window`` and end the session.

        One script: it also publishes ``frame`` to the other live holders.
        """
        args: list[Any] = [
            session_id,
            int(ago * 1e6),
            int(self.missed_close_window * 1000),
            self.node_id,
        ]
        if frame is not None:
            args.append(frame)
        now_us, at_us, live, ended, sent = await self._run(self._mark_closed, *args)
        self._learn_clock(now_us)
        nodes = {_text(node): int(count) for node, count in _pairs(live)}
        published = tuple(_text(node) for node in sent)
        return SessionClosed(int(at_us) / 1e6, nodes, bool(ended), published)

    async def _run(self, script: Any, *args: Any) -> Any:
        call: Awaitable[Any] = script(keys=[self._nodes_key], args=[self._tag, *args])
        return await self._command(call)

    async def _command(self, call: Awaitable[Any]) -> Any:
        """Await a Redis call for at most ``command_timeout`` s.

        A failure raises :class:`BackendUnavailableError` and starts a resync,
        after which close-alls held back meanwhile are sent again. A reply
        that refuses the command for another reason (a wrong type, an ACL)
        is raised as it is: it is not an outage, and trying again would fail
        the same way.
        """
        try:
            # a timeout scope, not wait_for: no task per command
            async with asyncio.timeout(self.command_timeout):
                return await call
        except (TimeoutError, RedisError, OSError) as exc:
            if isinstance(exc, RedisError) and _refuses(exc):
                raise
            self._fail(exc)
            reason = str(exc) or type(exc).__name__
            raise BackendUnavailableError(f"Redis: {reason}") from exc


def _address(client: aioredis.Redis) -> str:
    """Where ``client`` connects, without credentials, for messages."""
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix:{options['path']}"
    return (
        f"{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"
    )


_REFUSALS = ("NOPERM", "WRONGTYPE", "NOAUTH", "WRONGPASS", "ERR unknown command")
"""How the error replies begin that refuse a command for good (an ACL, a key
of another type, a command renamed away); any other reply (``MISCONF``,
``BUSY``, ``LOADING``, ``READONLY``, ``OOM``...) is an outage and waits."""


def _refuses(exc: RedisError) -> bool:
    """Whether ``exc`` is Redis refusing the command rather than an outage."""
    if isinstance(exc, (AuthenticationError, AuthorizationError, NoPermissionError)):
        return True
    if not isinstance(exc, ResponseError):
        return False
    text = str(exc)
    return "DB index is out of range" in text or any(code in text for code in _REFUSALS)


_LAPSED = 2
"""The scripts' ``absent`` value for a node whose lease ran out (1: no lease)."""


def _pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("Task %r died", task.get_name(), exc_info=task.exception())
