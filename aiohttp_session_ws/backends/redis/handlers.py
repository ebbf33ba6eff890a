"""Where a Redis cluster's request handlers are: by path, and by session.

Each node writes its own registrations through the backend's ordered
writer: its paths (``T:paths:<node>``) after its presence, and the paths
its connections of a session handle when addressed
(``T:addr:<session>:<node>``)
with that session's presence. Every node keeps the table of the others'
paths, told by the scripts that change it (``path+``, ``path-`` and
``gone`` notes on its inbox), and reads it whole after each resync, so
routing a request by path never asks Redis.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..base import AddressedRoute, BackendUnavailableError, HandlerStore
from . import scripts

if TYPE_CHECKING:
    from .backend import RedisBackend

logger = logging.getLogger("aiohttp_session_ws.redis")

PATH_ADDED = b"\x00path+:"
PATH_REMOVED = b"\x00path-:"
NODE_GONE = b"\x00gone:"

MAX_BUFFERED_NOTES = 10_000
"""Notes kept while the table is being read; past that the read starts over."""

_STATUS = {0: "sent", 1: "no_session", 2: "no_handler", 3: "unreachable"}


class RedisHandlerStore(HandlerStore):
    """The handler registrations of this node, and the cluster's table of paths."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        register = backend.client.register_script
        self._write = register(scripts.WRITE_PATHS)
        self._read = register(scripts.HANDLER_TABLE)
        self._publish = register(scripts.PUBLISH_ADDRESSED)
        self._paths: collections.Counter[str] = collections.Counter()
        # paths added (True) or removed (False) since the last write
        self._changed: dict[str, bool] = {}
        # session -> its addressed paths here, and the changes not yet written
        self._addressed: dict[str, frozenset[str]] = {}
        self._addressed_changes: dict[str, dict[str, bool]] = {}
        # the other nodes' paths, and who serves each path; None: not known
        self._of_node: dict[str, set[str]] | None = None
        self._nodes_of: dict[str, set[str]] = {}
        self._buffered: list[bytes] | None = []
        self.on_nodes_gone: Callable[[list[str]], None] = lambda nodes: None

    # this node's registrations
    def add_path(self, path: str) -> None:
        """Count a handler; the first of a path is written in the background."""
        self._paths[path] += 1
        if self._paths[path] == 1:
            self._changed[path] = True
            self._backend._note_handlers()

    def remove_path(self, path: str) -> None:
        """Uncount a handler; the last of a path is removed in the background."""
        if self._paths[path] <= 0:
            return
        self._paths[path] -= 1
        if not self._paths[path]:
            del self._paths[path]
            self._changed[path] = False
            self._backend._note_handlers()

    def set_addressed(self, session_id: str, paths: frozenset[str]) -> None:
        """Write the session's addressed paths with its presence (the changes)."""
        before = self._addressed.get(session_id, frozenset())
        if paths == before:
            return
        changes = self._addressed_changes.setdefault(session_id, {})
        for path in paths - before:
            changes[path] = True
        for path in before - paths:
            changes[path] = False
        if paths:
            self._addressed[session_id] = paths
        else:
            del self._addressed[session_id]
        self._backend._note(session_id)

    def addressed_of(self, session_id: str, reset: bool) -> str:
        """What a presence write carries of the session's addressed paths.

        ``=`` and the whole set on a rewrite; else ``~`` and the changes
        since the last write (a registration costs its own path, not the
        session's whole list); ``""`` when nothing changed. The changes are
        taken: a write that fails starts a resync, which rewrites the sets.
        """
        changes = self._addressed_changes.pop(session_id, None)
        if reset:
            return "=" + "\n".join(sorted(self._addressed.get(session_id, ())))
        if not changes:
            return ""
        return "~" + "\n".join(
            ("+" if added else "-") + path for path, added in changes.items()
        )

    async def write(self, reset: bool) -> bool:
        """Write this node's paths if they changed (or on a reset).

        False if this node is not a member (its presence rewrite comes first).
        """
        if not (self._changed or reset):
            return True
        changed, self._changed = self._changed, {}
        if reset:  # the whole set: Redis keeps what differs
            args = ["reset", *self._paths]
        else:  # only the changes: a registration costs its own path
            args = [
                "delta",
                *(("+" if added else "-") + p for p, added in changed.items()),
            ]
        try:
            absent, _, _ = await self._backend._run(
                self._write, self._backend.node_id, *args
            )
        except BaseException:
            self._changed = {**changed, **self._changed}
            raise
        if absent:
            self._changed = {**changed, **self._changed}
            return False
        return True

    async def flush(self) -> None:
        """Wait for the backend's writer (see :meth:`RedisBackend._flush`)."""
        await self._backend._flush()

    # the cluster's table
    def forget(self) -> None:
        """Frames may have been missed: the table is unknown until read again."""
        self._of_node = None
        self._nodes_of = {}
        self._buffered = []

    async def read_table(self) -> None:
        """Read the other nodes' paths, then apply the notes that came meanwhile.

        Called once this node's subscription and presence are in sync. Notes
        are applied in order after the read: for each node and path the last
        one wins, which is the newest state (see the module's docstring).
        """
        if self._of_node is not None:
            return
        flat = await self._backend._run(self._read, self._backend.node_id)
        table: dict[str, set[str]] = {}
        for node, paths in zip(flat[::2], flat[1::2], strict=True):
            table[_text(node)] = {_text(path) for path in paths}
        buffered, self._buffered = self._buffered or [], None
        self._of_node = table
        self._nodes_of = {}
        for node, paths in table.items():
            for path in paths:
                self._nodes_of.setdefault(path, set()).add(node)
        for note in buffered:
            self._apply(note)

    def note(self, frame: bytes) -> None:
        """Take a ``path+``, ``path-`` or ``gone`` note from the inbox."""
        if frame.startswith(NODE_GONE):
            node = frame[len(NODE_GONE) :].decode("utf-8", "replace")
            try:
                self.on_nodes_gone([node])
            except Exception:
                logger.exception("A nodes-gone hook failed")
        if self._buffered is not None:
            if len(self._buffered) >= MAX_BUFFERED_NOTES:
                self.forget()  # read again from scratch
            assert self._buffered is not None
            self._buffered.append(frame)
            return
        self._apply(frame)

    def _apply(self, frame: bytes) -> None:
        assert self._of_node is not None
        if frame.startswith(NODE_GONE):
            node = frame[len(NODE_GONE) :].decode("utf-8", "replace")
            for path in self._of_node.pop(node, ()):
                self._drop(path, node)
            return
        added = frame.startswith(PATH_ADDED)
        rest = frame[len(PATH_ADDED) :].decode("utf-8", "replace")
        node, _, path = rest.partition(":")
        if added:
            self._of_node.setdefault(node, set()).add(path)
            self._nodes_of.setdefault(path, set()).add(node)
        else:
            self._of_node.get(node, set()).discard(path)
            self._drop(path, node)

    def _drop(self, path: str, node: str) -> None:
        nodes = self._nodes_of.get(path)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._nodes_of[path]

    def route(self, prefixes: Sequence[str]) -> tuple[str, frozenset[str]] | None:
        """Route from the table this node keeps; no Redis.

        :raises BackendUnavailableError: the table is not known now.
        """
        if self._of_node is None or not self._backend._in_sync:
            raise BackendUnavailableError(
                "Redis: the cluster's request handlers are not known now"
            )
        me = self._backend.node_id
        for path in prefixes:
            nodes = self._nodes_of.get(path)
            mine = self._paths.get(path, 0) > 0
            if nodes or mine:
                found = frozenset(nodes or ())
                return path, found | {me} if mine else found
        return None

    async def publish_addressed(
        self, handle: str, prefixes: Sequence[str], frame: bytes, pick: float
    ) -> AddressedRoute:
        """One script: find the session, choose the node, publish."""
        status, node = await self._backend._run(
            self._publish, handle, self._backend.node_id, repr(pick), frame, *prefixes
        )
        return AddressedRoute(
            _STATUS[int(status)],  # type: ignore[arg-type]
            None if not node else _text(node),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
