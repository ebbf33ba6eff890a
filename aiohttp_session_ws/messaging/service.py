"""Request-response messaging between sessions: to a path, a session, a filter.

Handlers are server code or client connections. A request goes to exactly
one handler (by path, or the session's handling connection), or to one
connection of every session a filter matches. Local work first: a target
on this node never touches the backend. Delivery is at most once.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, BackendUnavailableError, HandlerStore
from ..filters import FilterSyntaxError, SessionFilter, parse_filter
from ..ids import wire_id
from ..nodebus import JSONDict, NodeBus, NodeGoneError
from ..peers import Peer, Peers
from ..protocol import encode
from ..tasks import TaskOwner
from .errors import (
    BadFilterError,
    HandlerConflictError,
    MessagingError,
    MessagingTimeoutError,
    MessagingUnavailableError,
    NoHandlerError,
    NoSuchSessionError,
    RejectedError,
    SessionClosedError,
    messaging_error,
)
from .paths import check_path, prefixes
from .requests import RequestContext, RequestHandler
from .responses import FilterResponse, FilterResponses, ResponseCallback

logger = logging.getLogger("aiohttp_session_ws.messaging")

DEFAULT_TIMEOUT = 10.0
"""Seconds a request waits for its response unless told otherwise."""

MAX_BATCH = 256
"""Responses to another node's filter send in one frame, at most."""

COUNT_TIMEOUT = 2.0
"""Seconds a filter send waits for the other nodes to count their matching
sessions (at most half its timeout); a node that has not answered by then
is left out of it."""

ALL_FIXED = "*F"
"""Asks for every fixed property of the sender (``$Principal``...)."""
ALL_USER = "*U"
"""Asks for every user property of the sender."""

_FAILED_HANDLER = "the handler failed"
_PLAIN = (str, int, bool, type(None))


@dataclass(eq=False)
class _Handler:
    """One registration: server code's (``peer`` None) or a connection's."""

    path: str
    properties: tuple[str, ...]
    addressed: bool
    peer: Peer | None = None
    callback: RequestHandler | None = None
    order: int = 0


class _Sender:
    """Who sends a request: a client connection's session, or server code.

    A connection's id and properties are read only when needed: a request
    to a local handler that asks for none never reads them.
    """

    __slots__ = ("_fixed", "_peer", "_wire", "handle")

    def __init__(
        self,
        handle: str | None = None,
        wire: str | None = None,
        fixed: dict[str, str] | None = None,
        peer: Peer | None = None,
    ) -> None:
        self.handle = handle
        self._wire = wire
        self._fixed = fixed
        self._peer = peer

    @property
    def wire(self) -> str | None:
        if self._wire is None and self._peer is not None:
            self._wire = wire_id(self._peer.session_ws_id)
        return self._wire

    @property
    def fixed(self) -> dict[str, str]:
        if self._fixed is None:
            peer = self._peer
            self._fixed = {} if peer is None else peer.connection_properties()
        return self._fixed

    def body(self) -> JSONDict:
        return {"sender": self.handle, "sender_session": self.wire, "fixed": self.fixed}

    @staticmethod
    def of(body: JSONDict) -> _Sender:
        return _Sender(body.get("sender"), body.get("sender_session"), body["fixed"])


_SERVER = _Sender()


class HandlerRegistration:
    """A server-side request handler; :meth:`close` removes it."""

    def __init__(self, messaging: Messaging, handler: _Handler) -> None:
        self._messaging = messaging
        self._handler = handler

    @property
    def path(self) -> str:
        """The path it handles (and every path below it without a handler)."""
        return self._handler.path

    async def close(self) -> None:
        """Remove the handler (again: nothing happens).

        Returns once the other nodes no longer route to it (while the
        backend is up).
        """
        self._messaging._remove(self._handler)
        await self._messaging.flush()

    def __repr__(self) -> str:
        return f"<HandlerRegistration {self.path!r}>"


@dataclass(eq=False)
class _FilterSend:
    """A filter send of this node, waiting for its responses."""

    responses: FilterResponses
    waiting: dict[str, set[str]]  # node -> handles that have not answered
    timer: asyncio.TimerHandle | None = None

    def take(self, node: str, response: FilterResponse) -> None:
        handles = self.waiting.get(node)
        if handles is None or response.session not in handles:
            return  # not expected from there, or already answered
        handles.discard(response.session)
        self.responses._add(response)
        if self.responses.received >= self.responses.expected:
            self.finish()

    def finish(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        unanswered = frozenset(h for handles in self.waiting.values() for h in handles)
        self.waiting = {}
        self.responses._finish(unanswered)


@dataclass(eq=False)
class _HeldFilter:
    """Phase one of another node's filter send: the candidates, until told."""

    candidates: dict[str, _Handler]  # connection id -> its handler
    timer: asyncio.TimerHandle


class Messaging:
    """The messaging service (``registry.messaging``), see :doc:`/messaging`."""

    def __init__(
        self,
        backend: Backend,
        bus: NodeBus,
        peers: Peers,
        tasks: TaskOwner,
    ) -> None:
        self._backend = backend
        self._bus = bus
        self._tasks = tasks
        self._order = itertools.count(1)
        self._ids = itertools.count(1)
        # path-routed handlers of this node, per path (taken in turns)
        self._by_path: dict[str, list[_Handler]] = {}
        self._turns: dict[str, int] = {}
        # addressed handlers of this node's connections: handle -> path -> them
        self._addressed: dict[str, dict[str, list[_Handler]]] = {}
        self._of_peer: dict[Peer, dict[tuple[str, bool], _Handler]] = {}
        # requests waiting on a client connection's ``answer``
        self._conversations: dict[int, tuple[Peer, asyncio.Future[Any]]] = {}
        self._filter_sends: dict[int, _FilterSend] = {}
        self._held: dict[tuple[str, int], _HeldFilter] = {}
        # responses to other nodes' filter sends, gathered for one frame each
        self._outgoing: dict[tuple[str, int], list[JSONDict]] = {}
        peers.on_discard.append(self._peer_closed)
        bus.on_nodes_left.append(self._nodes_left)
        bus.on_frames_lost.append(self._frames_lost)
        bus.handle("msg_path", self._path_here)
        bus.handle("msg_session", self._session_here)
        # counting may read user properties from the backend: not inline
        bus.handle("msg_filter", self._filter_here)
        bus.handle("msg_filter_go", self._filter_go, inline=True)
        bus.handle("msg_filter_response", self._filter_response, inline=True)

    @property
    def node_id(self) -> str:
        """The id of this node."""
        return self._bus.node_id

    @property
    def _store(self) -> HandlerStore:
        return self._backend.handler_store

    # registering
    async def add_request_handler(
        self,
        path: str,
        handler: RequestHandler,
        session_properties: Iterable[str] = (),
    ) -> HandlerRegistration:
        """Handle requests sent to ``path`` (and below it) on this node.

        ``handler(value, context)`` (sync or async) returns the response. It
        gets the sender's properties named in ``session_properties``
        (``"*F"``: every fixed one, ``"*U"``: every user one). Returns once
        the other nodes can route to it (while the backend is up).

        :raises ValueError: the path is invalid.
        :raises HandlerConflictError: this node has a handler for it already.
        """
        check_path(path)
        if any(h.peer is None for h in self._by_path.get(path, ())):
            raise HandlerConflictError(
                f"this node already has a request handler for {path!r}"
            )
        registered = _Handler(
            path,
            _property_names(session_properties),
            False,
            callback=handler,
            order=next(self._order),
        )
        self._add_path_handler(registered)
        await self._store.flush()
        return HandlerRegistration(self, registered)

    def add_connection_handler(
        self, peer: Peer, path: str, addressed: bool, properties: Sequence[str]
    ) -> None:
        """Let a client connection handle ``path``.

        It gets the requests sent to the path; or, ``addressed``, those sent
        to its session.

        :raises ValueError: the path is invalid.
        :raises HandlerConflictError: the connection has one for it already.
        """
        check_path(path)
        mine = self._of_peer.setdefault(peer, {})
        if (path, addressed) in mine:
            raise HandlerConflictError(
                f"this connection already handles {path!r}"
                + (" addressed to its session" if addressed else "")
            )
        registered = _Handler(
            path, _property_names(properties), addressed, peer, order=next(self._order)
        )
        mine[(path, addressed)] = registered
        if addressed:
            paths = self._addressed.setdefault(peer.handle, {})
            first = path not in paths
            paths.setdefault(path, []).append(registered)
            if first:
                self._note_addressed(peer)
        else:
            self._add_path_handler(registered)

    def handlers_of(self, peer: Peer) -> int:
        """How many registrations the connection has."""
        return len(self._of_peer.get(peer, ()))

    def remove_connection_handler(self, peer: Peer, path: str, addressed: bool) -> bool:
        """Remove a connection's registration; False if it had none."""
        registered = self._of_peer.get(peer, {}).get((path, addressed))
        if registered is None:
            return False
        self._remove(registered)
        return True

    async def flush(self) -> None:
        """Wait until this node's registrations so far reached the backend."""
        await self._store.flush()

    def _add_path_handler(self, registered: _Handler) -> None:
        handlers = self._by_path.setdefault(registered.path, [])
        handlers.append(registered)
        self._store.add_path(registered.path)

    def _remove(self, registered: _Handler) -> None:
        peer = registered.peer
        if peer is not None:
            mine = self._of_peer.get(peer, {})
            if mine.get((registered.path, registered.addressed)) is not registered:
                return
            del mine[(registered.path, registered.addressed)]
            if not mine:
                self._of_peer.pop(peer, None)
        if registered.addressed:
            assert peer is not None
            paths = self._addressed.get(peer.handle, {})
            handlers = paths.get(registered.path, [])
            if registered in handlers:
                handlers.remove(registered)
                if not handlers:
                    del paths[registered.path]
                    if not paths:
                        del self._addressed[peer.handle]
                    self._note_addressed(peer)
            return
        handlers = self._by_path.get(registered.path, [])
        if registered in handlers:
            handlers.remove(registered)
            if not handlers:
                del self._by_path[registered.path]
                self._turns.pop(registered.path, None)
            self._store.remove_path(registered.path)

    def _note_addressed(self, peer: Peer) -> None:
        paths = frozenset(self._addressed.get(peer.handle, {}))
        try:
            self._store.set_addressed(wire_id(peer.session_ws_id), paths)
        except Exception:
            logger.exception("Backend could not record a session's handlers")

    def _peer_closed(self, peer: Peer) -> None:
        for registered in list(self._of_peer.get(peer, {}).values()):
            self._remove(registered)
        for conversation, (owner, waiter) in list(self._conversations.items()):
            if owner is peer and not waiter.done():
                waiter.set_exception(
                    SessionClosedError("the handling connection closed")
                )
                del self._conversations[conversation]

    # sending
    async def send_request_to_path(
        self, path: str, request: Any, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Send ``request`` to the handler of ``path``; return its response.

        Exactly one handler answers: the most specific registered path wins
        (``a/b/c`` before ``a/b`` before ``a``); among equals, this node's
        handlers first (taken in turns), else a random node's.

        :raises MessagingError: a subclass says why (see :doc:`/messaging`).
        :raises ValueError: the path is invalid.
        :raises TypeError: ``request`` is not JSON-able.
        """
        return await self.send_to_path(path, request, timeout, _SERVER)

    async def send_request_to_session(
        self, path: str, session: str, request: Any, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Send ``request`` to the session with public handle ``session``.

        One of its connections that handles ``path`` when addressed answers:
        one on this node if there is one, else one on another node. On a
        node, the connection with the most specific registration, and among
        equals the most recently registered (most likely the tab in use).
        From a session ws id, take the handle with
        :meth:`~aiohttp_session_ws.SessionWSRegistry.public_handle`.

        :raises MessagingError: a subclass says why (see :doc:`/messaging`).
        """
        return await self.send_to_session(path, session, request, timeout, _SERVER)

    async def send_request_to_filter(
        self,
        session_filter: str,
        path: str,
        request: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_response: ResponseCallback | None = None,
    ) -> FilterResponses:
        """Send ``request`` to every session that ``session_filter`` matches.

        One handling connection of each matching session gets it. Returns
        once the number of expected responses is known; iterate the result
        for the responses (or pass ``on_response``).

        :raises BadFilterError: the filter does not parse (see :doc:`/filters`).
        :raises MessagingUnavailableError: the backend cannot be reached.
        """
        return await self.send_to_filter(
            session_filter, path, request, timeout, _SERVER, on_response
        )

    async def send_to_path(
        self, path: str, value: Any, timeout: float, sender: _Sender | Peer
    ) -> Any:
        """:meth:`send_request_to_path` for a sender (a connection, or server code)."""
        check_path(path)
        candidates = prefixes(path)
        origin = _sender_of(sender)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        moved: set[tuple[str, str]] = set()  # (path, node) found stale
        while True:
            handler_path, nodes = self._route(path, candidates, moved)
            if self.node_id in nodes and handler_path in self._by_path:
                handler = self._take_turn(handler_path)
                context = await self._context(handler, path, origin)
                return await self._serve(
                    handler, value, context, max(deadline - loop.time(), 0.0)
                )
            node = random.choice(sorted(nodes - {self.node_id}))
            left = max(deadline - loop.time(), 0.0)
            body = {
                "path": path,
                "handler": handler_path,
                "data": value,
                "timeout": left,
                **origin.body(),
            }
            try:
                return await self._call(node, "msg_path", body, left, "unavailable")
            except _MovedError:
                # that node's handler went before this node heard: route
                # again without it (each retry leaves out one more)
                moved.add((handler_path, node))

    def _route(
        self, path: str, candidates: Sequence[str], moved: set[tuple[str, str]]
    ) -> tuple[str, frozenset[str]]:
        """The registered path serving ``path`` and its nodes, but ``moved``."""
        start = 0
        while start < len(candidates):
            try:
                routed = self._store.route(candidates[start:])
            except BackendUnavailableError:
                routed = self._local_route(candidates[start:])
                if routed is None:
                    raise MessagingUnavailableError(
                        "the cluster cannot be reached, and no handler of this "
                        "node serves that path"
                    ) from None
            if routed is None:
                break
            handler_path, nodes = routed
            nodes = frozenset(n for n in nodes if (handler_path, n) not in moved)
            if self.node_id in nodes and handler_path not in self._by_path:
                nodes -= {self.node_id}  # the table is ahead of this node's own
            if nodes:
                return handler_path, nodes
            start = candidates.index(handler_path) + 1
        raise NoHandlerError(f"no handler for {path!r}")

    async def send_to_session(
        self,
        path: str,
        session: str,
        value: Any,
        timeout: float,
        sender: _Sender | Peer,
    ) -> Any:
        """:meth:`send_request_to_session` for a sender."""
        check_path(path)
        if not isinstance(session, str):
            raise TypeError(f"session must be a public handle (str), not {session!r}")
        candidates = prefixes(path)
        origin = _sender_of(sender)
        handler = self._addressed_handler(session, candidates)
        if handler is not None:
            context = await self._context(handler, path, origin, addressed=True)
            return await self._serve(handler, value, context, timeout)
        if len(session) > 128:
            raise NoSuchSessionError("no live session has that handle")
        body = {"path": path, "session": session, "data": value, "timeout": timeout}
        body.update(origin.body())
        pick = random.random()

        async def publish(frame: bytes) -> str:
            route = await self._store.publish_addressed(
                session, candidates, frame, pick
            )
            if route.status == "no_session":
                raise NoSuchSessionError("no live session has that handle")
            if route.status == "no_handler":
                raise NoHandlerError(f"no connection of that session handles {path!r}")
            if route.status == "unreachable" or route.node is None:
                raise NodeGoneError(f"node {route.node} is not listening")
            return route.node

        return await self._call(publish, "msg_session", body, timeout, "session_closed")

    async def send_to_filter(
        self,
        text: str,
        path: str,
        value: Any,
        timeout: float,
        sender: _Sender | Peer,
        on_response: ResponseCallback | None = None,
    ) -> FilterResponses:
        """:meth:`send_request_to_filter` for a sender."""
        check_path(path)
        session_filter = _parse(text)
        origin = _sender_of(sender)
        filter_id = next(self._ids)
        body: JSONDict = {
            "filter": text,
            "path": path,
            "id": filter_id,
            "caller": self.node_id,
            "timeout": timeout,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        local = await self._candidates(session_filter, path)
        try:
            # a node that does not tell its sessions by then is left out
            replies = await self._bus.call_published(
                self._backend.publish_to_all,
                "msg_filter",
                body,
                timeout=min(timeout / 2, COUNT_TIMEOUT),
            )
        except BackendUnavailableError as exc:
            raise MessagingUnavailableError(
                f"the cluster cannot be reached ({exc}): the filter's sessions "
                "on other nodes are not known"
            ) from None
        # one connection per session, as for a session send: this node's if
        # it has one; else the most specific registration, the first node in
        # id order among equals
        chosen: dict[str, tuple[int, str, str]] = {}
        for handle, (specificity, handler) in local.items():
            chosen[handle] = (specificity, self.node_id, _peer(handler).connection_id)
        for node in sorted(replies):
            reply = replies[node]
            if not isinstance(reply, list):
                continue
            for handle, connection, specificity in reply:
                known = chosen.get(handle)
                if known is None or (
                    known[1] != self.node_id and specificity > known[0]
                ):
                    chosen[handle] = (specificity, node, connection)
        per_node: dict[str, dict[str, str]] = {node: {} for node in replies}
        per_node[self.node_id] = {}
        for handle, (_, node, connection) in chosen.items():
            per_node[node][connection] = handle
        responses = FilterResponses(len(chosen), on_response)
        send = _FilterSend(
            responses,
            {node: set(conns.values()) for node, conns in per_node.items() if conns},
        )
        left = max(deadline - loop.time(), 0.0)
        go = {"id": filter_id, "path": path, "data": value, "timeout": left}
        go.update(origin.body())
        if chosen:
            self._filter_sends[filter_id] = send
            send.timer = loop.call_at(deadline, self._end_filter, filter_id)
        for node, connections in per_node.items():
            if node == self.node_id:
                continue
            # also to nodes with none chosen: they drop what they hold
            try:
                told = await self._bus.tell(
                    node, "msg_filter_go", {**go, "connections": list(connections)}
                )
            except BackendUnavailableError as exc:
                logger.warning("Could not send a filter request to node %s", node)
                told, reason = False, f"the cluster cannot be reached ({exc})"
            else:
                reason = f"node {node} is not listening"
            if not told and connections:
                self._fail_part(send, node, MessagingUnavailableError(reason))
        if chosen and send.responses.done:
            self._filter_sends.pop(filter_id, None)
        mine = [local[handle][1] for handle in per_node[self.node_id].values()]
        if mine:
            self._tasks.spawn(
                self._serve_local_filter(filter_id, mine, value, path, left, origin),
                name=f"filter-{filter_id}",
            )
        return responses

    def _end_filter(self, filter_id: int) -> None:
        send = self._filter_sends.pop(filter_id, None)
        if send is not None:
            send.finish()

    # the parts of a send
    def _local_route(
        self, candidates: Sequence[str]
    ) -> tuple[str, frozenset[str]] | None:
        for path in candidates:
            if path in self._by_path:
                return path, frozenset({self.node_id})
        return None

    def _take_turn(self, path: str) -> _Handler:
        handlers = self._by_path[path]
        turn = self._turns.get(path, 0) % len(handlers)
        self._turns[path] = turn + 1
        return handlers[turn]

    def _addressed_handler(
        self, handle: str, candidates: Sequence[str]
    ) -> _Handler | None:
        """The connection of this node that answers a request to the session."""
        paths = self._addressed.get(handle)
        if paths is None:
            return None
        for path in candidates:
            handlers = paths.get(path)
            if handlers:
                return max(handlers, key=lambda h: h.order)
        return None

    async def _call(
        self,
        target: str | Callable[[bytes], Awaitable[str]],
        kind: str,
        body: JSONDict,
        timeout: float,
        gone: str,
    ) -> Any:
        """Ask another node to serve a request; turn its reply into the answer."""
        try:
            reply = await self._bus.call_one(target, kind, body, timeout=timeout)
        except NodeGoneError as exc:
            if gone == "session_closed":
                raise SessionClosedError(
                    f"the handling node went away ({exc})"
                ) from None
            raise MessagingUnavailableError(
                f"the handling node went away ({exc})"
            ) from None
        except TimeoutError:
            raise MessagingTimeoutError(f"no response within {timeout:g} s") from None
        except BackendUnavailableError as exc:
            raise MessagingUnavailableError(
                f"the cluster cannot be reached ({exc})"
            ) from None
        return _answer_of(reply)

    async def _context(
        self,
        handler: _Handler,
        path: str,
        sender: _Sender,
        *,
        addressed: bool = False,
    ) -> RequestContext:
        if handler.properties and sender.handle is not None:
            properties = await self._sender_properties(handler.properties, sender)
        else:
            properties = {}
        return RequestContext(path, handler.path, sender.handle, properties, addressed)

    async def _sender_properties(
        self, wanted: tuple[str, ...], sender: _Sender
    ) -> dict[str, str]:
        if not wanted or sender.handle is None:
            return {}
        every_fixed = ALL_FIXED in wanted
        found = {
            key: value
            for key, value in sender.fixed.items()
            if every_fixed or key in wanted
        }
        every_user = ALL_USER in wanted
        user_keys = [
            k
            for k in wanted
            if not k.startswith("$") and k not in (ALL_FIXED, ALL_USER)
        ]
        if (every_user or user_keys) and sender.wire is not None:
            try:
                user = await self._backend.session_store.properties(sender.wire)
            except BackendUnavailableError:
                logger.warning("Could not read a sender's user properties")
                user = None
            for key, value in (user or {}).items():
                if every_user or key in user_keys:
                    found[key] = value
        return found

    async def _serve(
        self,
        handler: _Handler,
        value: Any,
        context: RequestContext,
        timeout: float,
        tails: dict[str, bytes] | None = None,
    ) -> Any:
        """Run a local handler: call server code, or converse with a connection."""
        if handler.peer is None:
            assert handler.callback is not None
            try:
                async with asyncio.timeout(timeout):
                    result = handler.callback(value, context)
                    if inspect.isawaitable(result):
                        result = await result
            except TimeoutError:
                raise MessagingTimeoutError(
                    f"no response within {timeout:g} s"
                ) from None
            except RejectedError:
                raise
            except Exception:
                logger.exception("The request handler of %r failed", handler.path)
                raise RejectedError(_FAILED_HANDLER) from None
            if type(result) not in _PLAIN:
                try:
                    encode(result)  # it travels as JSON: fail here, and clearly
                except (TypeError, ValueError):
                    logger.exception(
                        "The request handler of %r returned a value JSON cannot carry",
                        handler.path,
                    )
                    raise RejectedError(_FAILED_HANDLER) from None
            return result
        return await self._converse(handler, value, context, timeout, tails)

    async def _converse(
        self,
        handler: _Handler,
        value: Any,
        context: RequestContext,
        timeout: float,
        tails: dict[str, bytes] | None = None,
    ) -> Any:
        """Send a request frame to a client's handler; wait for its ``answer``.

        ``tails``: the frame's members after ``conversation``, encoded once
        per handler path, for a request sent to many connections.
        """
        peer = handler.peer
        assert peer is not None
        conversation = next(self._ids)
        tail = None
        if tails is not None and not context.session_properties:
            tail = tails.get(handler.path)
            if tail is None:
                tail = tails[handler.path] = encode(
                    _request_members(handler, value, context)
                )
        if tail is not None:
            frame = b'{"op":"request","conversation":%d,' % conversation + tail[1:]
        else:
            frame = encode(
                {
                    "op": "request",
                    "conversation": conversation,
                    **_request_members(handler, value, context),
                }
            )
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conversations[conversation] = (peer, waiter)
        try:
            if not await peer.send(frame):
                raise SessionClosedError("the handling connection closed")
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise MessagingTimeoutError(f"no response within {timeout:g} s") from None
        finally:
            self._conversations.pop(conversation, None)

    def answer(
        self, peer: Peer, conversation: int, value: Any, error: str | None
    ) -> bool:
        """A client connection answered a request it was sent (frame ``answer``).

        Returns False, changing nothing, when no such request waits on that
        connection: it was answered, timed out, or its sender went (a late
        answer is no error).
        """
        found = self._conversations.get(conversation)
        if found is None or found[0] is not peer or found[1].done():
            return False
        waiter = found[1]
        if error is None:
            waiter.set_result(value)
        else:
            waiter.set_exception(RejectedError(error))
        return True

    # filters
    async def _candidates(
        self, session_filter: SessionFilter, path: str
    ) -> dict[str, tuple[int, _Handler]]:
        """Find the sessions of this node that the filter matches.

        Returns handle -> (specificity, handler) of the connection that
        would answer: of the session's handling connections that the filter
        matches, the one with the most specific registration, the newest
        among equals.
        """
        candidates = prefixes(path)
        depth = len(candidates)
        found: list[tuple[str, list[tuple[int, _Handler]]]] = []
        for handle, paths in list(self._addressed.items()):
            ranked = [
                (depth - index, handler)
                for index, candidate in enumerate(candidates)
                for handler in sorted(
                    paths.get(candidate, ()), key=_newest, reverse=True
                )
            ]
            if ranked:
                found.append((handle, ranked))
        if not found:
            return {}
        user: Sequence[dict[str, str] | None] = [None] * len(found)
        if session_filter.needs_user_properties:
            wires = [wire_id(_peer(ranked[0][1]).session_ws_id) for _, ranked in found]
            try:
                user = await self._backend.session_store.properties_of_many(wires)
            except BackendUnavailableError:
                logger.warning(
                    "A filter send could not read user properties: the sessions "
                    "of this node are matched on their fixed properties"
                )
        matched: dict[str, tuple[int, _Handler]] = {}
        for (handle, ranked), props in zip(found, user, strict=True):
            for specificity, handler in ranked:
                properties = _peer(handler).connection_properties()
                if props:
                    properties.update(props)
                if session_filter.matches(properties):
                    matched[handle] = (specificity, handler)
                    break
        return matched

    async def _answer_filter(
        self,
        handler: _Handler,
        value: Any,
        path: str,
        timeout: float,
        sender: _Sender,
        tails: dict[str, bytes],
    ) -> FilterResponse:
        handle = _peer(handler).handle
        try:
            context = await self._context(handler, path, sender, addressed=True)
            result = await self._serve(handler, value, context, timeout, tails)
        except MessagingError as exc:
            return FilterResponse(handle, error=exc)
        return FilterResponse(handle, result)

    async def _serve_local_filter(
        self,
        filter_id: int,
        handlers: list[_Handler],
        value: Any,
        path: str,
        timeout: float,
        sender: _Sender,
    ) -> None:
        tails: dict[str, bytes] = {}

        async def one(handler: _Handler) -> None:
            response = await self._answer_filter(
                handler, value, path, timeout, sender, tails
            )
            send = self._filter_sends.get(filter_id)
            if send is not None:
                send.take(self.node_id, response)
                if send.responses.done:
                    self._filter_sends.pop(filter_id, None)

        await asyncio.gather(*map(one, handlers))

    # what other nodes ask
    async def _path_here(self, body: JSONDict) -> JSONDict:
        handlers = self._by_path.get(body["handler"])
        if not handlers:
            # the caller's table is behind ours: it routes again without us
            return {"moved": True}
        handler = self._take_turn(body["handler"])
        return await self._serve_reply(handler, body, addressed=False)

    async def _session_here(self, body: JSONDict) -> JSONDict:
        handler = self._addressed_handler(body["session"], prefixes(body["path"]))
        if handler is None:
            return _error_reply(
                NoHandlerError(
                    f"no connection of that session handles {body['path']!r}"
                )
            )
        return await self._serve_reply(handler, body, addressed=True)

    async def _serve_reply(
        self, handler: _Handler, body: JSONDict, *, addressed: bool
    ) -> JSONDict:
        try:
            context = await self._context(
                handler, body["path"], _Sender.of(body), addressed=addressed
            )
            result = await self._serve(
                handler, body.get("data"), context, float(body["timeout"])
            )
        except MessagingError as exc:
            return _error_reply(exc)
        return {"data": result}

    async def _filter_here(self, body: JSONDict) -> list[list[Any]]:
        """Phase one of a filter send: which sessions here match (held until told)."""
        try:
            session_filter = parse_filter(body["filter"])
        except FilterSyntaxError:
            return []
        matched = await self._candidates(session_filter, body["path"])
        if not matched:
            return []
        key = (body["caller"], body["id"])
        loop = asyncio.get_running_loop()
        held = _HeldFilter(
            {_peer(h).connection_id: h for _, h in matched.values()},
            loop.call_later(float(body["timeout"]), self._held.pop, key, None),
        )
        self._held[key] = held
        return [
            [handle, _peer(h).connection_id, specificity]
            for handle, (specificity, h) in matched.items()
        ]

    async def _filter_go(self, body: JSONDict) -> None:
        """Phase two: serve the connections the caller chose, answer each."""
        caller = body["from"]
        held = self._held.pop((caller, body["id"]), None)
        if held is None:
            return
        held.timer.cancel()
        handlers = [
            held.candidates[c] for c in body["connections"] if c in held.candidates
        ]
        tails: dict[str, bytes] = {}
        for handler in handlers:
            self._tasks.spawn(
                self._answer_remote_filter(caller, handler, body, tails),
                name=f"filter-{caller}-{body['id']}",
            )

    async def _answer_remote_filter(
        self, caller: str, handler: _Handler, body: JSONDict, tails: dict[str, bytes]
    ) -> None:
        response = await self._answer_filter(
            handler,
            body.get("data"),
            body["path"],
            float(body["timeout"]),
            _Sender.of(body),
            tails,
        )
        reply: JSONDict = {"session": response.session}
        if response.error is None:
            reply["data"] = response.value
        else:
            reply["error"] = _error_body(response.error)
        key = (caller, body["id"])
        batch = self._outgoing.get(key)
        if batch is not None:  # a send of this filter's responses is due
            batch.append(reply)
            if len(batch) >= MAX_BATCH:
                del self._outgoing[key]  # full: its sender has it; a new one next
            return
        batch = self._outgoing[key] = [reply]
        await self._send_responses(key, batch)

    async def _send_responses(
        self, key: tuple[str, int], batch: list[JSONDict]
    ) -> None:
        """Send the responses gathered for another node's filter send, in one frame.

        The responses that come while the frame is on its way gather for
        the next one (at most :data:`MAX_BATCH` to a frame): under load, a
        frame carries many.
        """
        await asyncio.sleep(0)  # the responses ready now join this frame
        caller, filter_id = key
        if self._outgoing.get(key) is batch:
            del self._outgoing[key]
        try:
            await self._bus.tell(
                caller, "msg_filter_response", {"id": filter_id, "responses": batch}
            )
        except BackendUnavailableError:
            logger.warning("Could not send filter responses to node %s", caller)
        except (TypeError, ValueError):
            logger.error("A filter response is not JSON-able; dropped")

    async def _filter_response(self, body: JSONDict) -> None:
        send = self._filter_sends.get(body["id"])
        if send is None:
            return
        for one in body["responses"]:
            error = one.get("error")
            if error is None:
                response = FilterResponse(one["session"], one.get("data"))
            else:
                response = FilterResponse(one["session"], error=_error_from(error))
            send.take(body["from"], response)
        if send.responses.done:
            self._filter_sends.pop(body["id"], None)

    def _frames_lost(self) -> None:
        """Fail the remote parts of this node's filter sends (``unavailable``).

        This node's inbox lost its link: the other nodes' answers may be lost.
        """
        for filter_id, send in list(self._filter_sends.items()):
            for node in [n for n in send.waiting if n != self.node_id]:
                self._fail_part(
                    send,
                    node,
                    MessagingUnavailableError(
                        "this node lost its link to the cluster: the answer may be lost"
                    ),
                )
            if send.responses.done:
                self._filter_sends.pop(filter_id, None)

    def _fail_part(self, send: _FilterSend, node: str, error: MessagingError) -> None:
        for handle in list(send.waiting.get(node, ())):
            send.take(node, FilterResponse(handle, error=error))

    def _nodes_left(self, nodes: set[str]) -> None:
        """Fail at once what waits on nodes that left: they will not answer."""
        for filter_id, send in list(self._filter_sends.items()):
            for node in nodes & set(send.waiting):
                for handle in list(send.waiting.get(node, ())):
                    send.take(
                        node,
                        FilterResponse(
                            handle,
                            error=SessionClosedError("the handling node went away"),
                        ),
                    )
            if send.responses.done:
                self._filter_sends.pop(filter_id, None)
        for key in [k for k in self._held if k[0] in nodes]:
            self._held.pop(key).timer.cancel()

    def stats(self) -> dict[str, int]:
        """What this node's messaging holds now, for the registry's stats (cheap)."""
        return {
            "message_handlers": sum(len(h) for h in self._by_path.values())
            + sum(len(h) for paths in self._addressed.values() for h in paths.values()),
            "requests_handled": len(self._conversations),
            "filter_sends": len(self._filter_sends),
        }


def _request_members(
    handler: _Handler, value: Any, context: RequestContext
) -> JSONDict:
    """The members of a ``request`` frame but its op and conversation."""
    return {
        "path": context.path,
        "handler": handler.path,
        "addressed": context.addressed,
        "data": value,
        "session": context.sender,
        "properties": dict(context.session_properties),
    }


def _newest(handler: _Handler) -> int:
    return handler.order


def _peer(handler: _Handler) -> Peer:
    assert handler.peer is not None
    return handler.peer


def _sender_of(sender: _Sender | Peer) -> _Sender:
    if isinstance(sender, _Sender):
        return sender
    return _Sender(sender.handle, peer=sender)


def _property_names(names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError("session_properties must be a collection of keys, not a str")
    found = tuple(names)
    for name in found:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a property name must be a non-empty str, not {name!r}")
    return found


def _parse(text: str) -> SessionFilter:
    if not isinstance(text, str):
        raise TypeError(f"a session filter must be a str, not {type(text).__name__}")
    try:
        return parse_filter(text)
    except FilterSyntaxError as exc:
        raise BadFilterError(str(exc), position=exc.position) from None


def _error_body(exc: MessagingError) -> JSONDict:
    return {"code": str(exc.code), "message": exc.message}


def _error_reply(exc: MessagingError) -> JSONDict:
    return {"error": _error_body(exc)}


def _error_from(error: Any) -> MessagingError:
    if not isinstance(error, dict):
        return MessagingError("a malformed error came back")
    return messaging_error(str(error.get("code")), str(error.get("message", "")))


class _MovedError(Exception):
    """The node a request was routed to has no handler for the path any more."""


def _answer_of(reply: Any) -> Any:
    if isinstance(reply, dict):
        if "error" in reply:
            raise _error_from(reply["error"])
        if reply.get("moved"):
            raise _MovedError
        return reply.get("data")
    raise MessagingError("a malformed reply came back from another node")


__all__ = ["DEFAULT_TIMEOUT", "HandlerRegistration", "Messaging"]
