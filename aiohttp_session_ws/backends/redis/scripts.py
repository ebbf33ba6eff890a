"""The Lua scripts of the Redis backend, read from the ``.lua`` files beside it.

Each change to shared state is one script, so it is atomic. Every script is
``prelude.lua`` (the helpers) followed by its own file; it gets the nodes
sorted set as ``KEYS[1]`` (so a cluster client routes it to the right slot)
and the key tag as ``ARGV[1]``; the other keys share that tag, hence that
slot. Times are Redis ``TIME`` in microseconds.

Keys, with ``T`` the tag (``{prefix}``):
``T:nodes`` (zset: node -> lease deadline),
``T:node:<node>`` (hash: session -> this node's connection count),
``T:stale:<node>`` (set: sessions a full rewrite has not written again yet),
``T:session:<session>`` (hash: node -> count), ``T:sessions`` (set),
``T:closed:<session>`` (string: time of the last close-all; expires),
``T:alive:<session>`` (string: the public handle of a live session),
``T:handle:<handle>`` (string: the live session of that handle),
``T:grace`` (zset: session -> end of its grace period),
``T:props:<session>`` (hash: a live session's user properties),
``T:handle_key`` (string: the cluster's key of public handles),
``T:paths:<node>`` (set: the paths the node's request handlers serve),
``T:addr:<session>:<node>`` (set: the paths the node's connections of the
session handle when a request is addressed to it);
the session locks (``lock_*.lua``, see :mod:`.locks`):
``T:lock:<name>`` (hash, while held: ``session``, ``sequence``, ``scope``,
``connection``, ``node``: the node that took it or weakened it to
connection scope),
``T:lockq:<name>`` (list: the waiters' entries, node and session joined by
a tab, first come first served), ``T:lockw:<name>`` (hash: entry -> scope
and connection joined by a tab),
``T:locknodes:<name>`` (set: the nodes told if the holder loses it),
``T:lockrefs:<session>`` (hash: name -> the session's entries in its queue,
plus 1 if it holds it), ``T:node_lockrefs:<node>`` (hash: name -> the
node's entries in its queue, plus 1 if a connection-scoped holder is on that
node), ``T:lock_clock`` (string: the last sequence issued, of any name);
the event log (``events_*.lua``, see :mod:`.events`):
``T:events`` (stream: one entry per event, id ``<ms>-<seq>``, fields ``t``
the type as text, ``ts`` the timestamp, ``st`` the source timestamp or
``''``, ``p`` the payload's JSON, ``e`` the log's epoch),
``T:events:epoch`` (string: the log's epoch, set when absent),
``T:events:last`` (string: the last id given), ``T:events:trimmed``
(string: the largest id retention removed), ``T:events:latest`` (hash: type
as text -> the latest event of it: id, timestamp, source timestamp and
payload JSON, joined by newlines), ``T:events:batch:<token>`` (string: a
register call's answer, kept a while so that a retried call adds nothing).
"""

from __future__ import annotations

from importlib import resources

_PACKAGE = __name__.rpartition(".")[0]


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(f"{name}.lua").read_text("utf-8")


_PRELUDE = _read("prelude")


def script(name: str) -> str:
    """The source of the script ``<name>.lua``, after the prelude."""
    return _PRELUDE + "\n" + _read(name)


HEARTBEAT = script("heartbeat")
WRITE_PRESENCE = script("write_presence")
LEAVE = script("leave")
SESSION_NODES = script("session_nodes")
MARK_CLOSED = script("mark_closed")
PUBLISH_SESSION = script("publish_session")
PUBLISH_ALL = script("publish_all")
END_SESSION = script("end_session")
SET_PROPERTIES = script("set_properties")
PROPERTIES = script("properties")
HANDLE_KEY = script("handle_key")
WRITE_PATHS = script("write_paths")
HANDLER_TABLE = script("handler_table")
PUBLISH_ADDRESSED = script("publish_addressed")
LOCK_ACQUIRE = script("lock_acquire")
LOCK_CANCEL = script("lock_cancel")
LOCK_RELEASE = script("lock_release")
LOCK_STATE = script("lock_state")
LOCK_HELD = script("lock_held")
EVENTS_REGISTER = script("events_register")
EVENTS_READ = script("events_read")
