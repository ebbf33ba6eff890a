"""Sessions across the cluster: public handles, properties, start and end."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from .authorization import VIEW_SESSION, Action
from .backends.base import Backend, BackendUnavailableError, SessionStore
from .ids import check_session_ws_id, local_id, redact, wire_id
from .peers import Peer
from .properties import SESSION_ID, check_updates
from .protocol import Arg, ErrorCode, Op, ProtocolError, Request
from .tasks import TaskOwner

logger = logging.getLogger("aiohttp_session_ws")

SessionCallback = Callable[[Any], "Awaitable[None] | None"]
"""Called with a session ws id when the session starts or ends (sync or async)."""


class Sessions:
    """The session service: handles, user properties, and the lifecycle hooks.

    A session is alive while one of its connections is open on any node, and
    for the grace period after its last one closed; the backend decides each
    start and end once for the cluster, and this service runs the app's
    callbacks on the node that decided it.
    """

    def __init__(self, backend: Backend, tasks: TaskOwner) -> None:
        self._backend = backend
        self._tasks = tasks
        self.on_start: list[SessionCallback] = []
        self.on_end: list[SessionCallback] = []

    @property
    def _store(self) -> SessionStore:
        return self._backend.session_store

    def handle_of(self, session_ws_id: Hashable) -> str:
        """The session's public handle (``$SessionId``).

        :raises BackendUnavailableError: the cluster's key is not known yet.
        """
        check_session_ws_id(session_ws_id)
        return self._store.handle_of(wire_id(session_ws_id))

    async def session_of(self, handle: str) -> Hashable | None:
        """The session ws id of the live session with that handle, or ``None``."""
        wire = await self._store.session_of(handle)
        return None if wire is None else local_id(wire)

    async def set_properties(
        self, session_ws_id: Hashable, values: Mapping[str, str | None]
    ) -> bool:
        """Set user properties of a live session, on every node at once.

        :raises ValueError: a key or value is invalid (see :doc:`/sessions`).
        """
        check_session_ws_id(session_ws_id)
        updates = check_updates(values)
        return await self._store.set_properties(wire_id(session_ws_id), updates)

    async def user_properties(self, session_ws_id: Hashable) -> dict[str, str] | None:
        """The user properties of a live session, or ``None`` if it is not alive."""
        check_session_ws_id(session_ws_id)
        return await self._store.properties(wire_id(session_ws_id))

    async def properties_of_handle(self, handle: str) -> dict[str, str] | None:
        """What another session shows: its handle and its user properties."""
        wire = await self._store.session_of(handle)
        if wire is None:
            return None
        found = await self._store.properties(wire)
        if found is None:
            return None
        return {SESSION_ID: handle, **found}

    async def end(self, session_ws_id: Any) -> bool:
        """End the session now if it is alive (``new_id``, ``delete_id``).

        An outage is logged: the grace period ends the session later.
        """
        try:
            check_session_ws_id(session_ws_id)
        except (TypeError, ValueError):
            return False  # no connection could ever have made it alive
        wire = wire_id(session_ws_id)
        try:
            ended = await self._store.end(wire)
        except BackendUnavailableError as exc:
            logger.warning(
                "Could not end session %s (%s): it ends when its grace period does",
                redact(wire),
                exc,
            )
            return False
        if ended:
            self.report_ended([wire])
        return ended

    def report_started(self, sessions: list[str]) -> None:
        """Run the ``on_start`` callbacks for sessions the backend saw start."""
        self._report(self.on_start, "start", sessions)

    def report_ended(self, sessions: list[str]) -> None:
        """Run the ``on_end`` callbacks for sessions the backend saw end."""
        self._report(self.on_end, "end", sessions)

    def _report(
        self, callbacks: list[SessionCallback], what: str, sessions: list[str]
    ) -> None:
        if not callbacks or self._tasks.closed:
            return
        for wire in sessions:
            session_ws_id = local_id(wire)
            if session_ws_id is None:
                continue
            self._tasks.spawn(
                _run_callbacks(list(callbacks), session_ws_id, what),
                name=f"session-{what}-{redact(wire)}",
            )


async def _run_callbacks(
    callbacks: list[SessionCallback], session_ws_id: Hashable, what: str
) -> None:
    for callback in callbacks:
        try:
            result = callback(session_ws_id)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("An on_session_%s callback failed", what)


def properties_op(sessions: Sessions) -> Op[Peer]:
    """The ``properties`` op: this connection's properties, or another session's."""

    async def answer(peer: Peer, request: Request) -> dict[str, str]:
        handle = request.args.get("session")
        if handle is not None and handle != peer.handle:
            found = await sessions.properties_of_handle(handle)
            if found is None:
                raise ProtocolError(
                    ErrorCode.NOT_FOUND, "no live session has that handle"
                )
            return found
        own = await sessions.user_properties(peer.session_ws_id)
        return {**peer.connection_properties(), **(own or {})}

    def action(peer: Peer, request: Request) -> Action | None:
        handle = request.args.get("session")
        if handle is None or handle == peer.handle:
            return None
        return Action("properties", VIEW_SESSION, session=handle)

    return Op("properties", answer, {"session": Arg("str")}, action)
