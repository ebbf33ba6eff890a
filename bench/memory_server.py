"""A benchmark server that can say where its memory went, for :mod:`bench.memory_split`.

``python -m bench.memory_server APP REDIS_URL PREFIX`` serves APP (``bare``,
``raw``, ``ours``, or ``ours-memory``: ours on the embedded memory backend) as
:mod:`bench.server` does, plus two routes:

- ``GET /mem/mark`` collects garbage and remembers the RSS and the count of
  every type of gc-tracked object; with ``BENCH_TRACE_FRAMES=FRAMES`` in the
  environment it then starts tracemalloc (tracing from the start of the
  process would make the imports minutes long);
- ``GET /mem/measure`` collects garbage and answers what changed since: the
  RSS, the object counts per type, and every allocation site (a traceback,
  most recent frame first) of what was allocated since the mark and is still
  alive, when it holds 64 bytes or more.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib
import os
import sys
import tracemalloc
from dataclasses import dataclass, field

import psutil
from aiohttp import web

from .server import IMPLEMENTATIONS, serve_app, use_library_copy

MIN_SITE_BYTES = 64
"""Allocation sites that hold less are summed, not listed."""
TRACE_VARIABLE = "BENCH_TRACE_FRAMES"


@dataclass
class Mark:
    """What ``/mem/mark`` remembered."""

    rss: int = 0
    types: collections.Counter[str] = field(default_factory=collections.Counter)


MARK: web.AppKey[Mark] = web.AppKey("memory_mark", Mark)


def _type_counts() -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


def _snapshot() -> tracemalloc.Snapshot | None:
    # no filter_traces: its fnmatch per trace takes many seconds on this heap
    return tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None


_OWN_FILES = {tracemalloc.__file__, __file__}


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def mark(request: web.Request) -> web.Response:
    """Remember the state to compare with; tracing starts last."""
    state = request.app[MARK]
    tracemalloc.stop()
    gc.collect()
    state.types = _type_counts()
    state.rss = _rss()
    frames = int(os.environ.get(TRACE_VARIABLE) or 0)
    if frames:
        tracemalloc.start(frames)
    return web.json_response({"tracing": bool(frames)})


async def measure(request: web.Request) -> web.Response:
    """What changed since ``/mem/mark``; the snapshot is taken first."""
    state = request.app[MARK]
    gc.collect()
    snapshot = _snapshot()
    tracemalloc.stop()
    rss = _rss()
    types = _type_counts()
    body: dict[str, object] = {"rss": rss - state.rss}
    body["types"] = {
        name: count
        for name, count in ((n, types[n] - state.types[n]) for n in types | state.types)
        if count
    }
    if snapshot is not None:
        sites = []
        small = 0
        total = 0
        for stat in snapshot.statistics("traceback"):
            if stat.traceback[-1].filename in _OWN_FILES:
                continue
            total += stat.size
            if stat.size < MIN_SITE_BYTES:
                small += stat.size
                continue
            frames = [[f.filename, f.lineno] for f in reversed(stat.traceback)]
            sites.append({"frames": frames, "size": stat.size, "count": stat.count})
        body["traced"] = {"total": total, "small": small, "sites": sites}
    return web.json_response(body)


def build_app(name: str, redis_url: str, prefix: str) -> web.Application:
    """The app of one implementation, with ``/mem/mark`` and ``/mem/measure``."""
    if name == "ours-memory":
        app = _ours_on_memory()
    else:
        module = importlib.import_module(IMPLEMENTATIONS[name])
        app = module.build_app(redis_url, prefix)
    app[MARK] = Mark()
    app.router.add_get("/mem/mark", mark)
    app.router.add_get("/mem/measure", measure)
    return app


def _ours_on_memory() -> web.Application:
    """Ours as :mod:`bench.impl_ours` builds it, on the embedded memory backend."""
    from aiohttp_session_ws import SessionWSRegistry, session_ws_middleware, setup

    from . import impl_ours
    from .server_common import PROBE, Probe, base_app

    registry = SessionWSRegistry()
    app = base_app([session_ws_middleware])
    setup(app, registry)
    app.router.add_get("/ws", impl_ours.websocket)
    impl_ours.add_protocol_route(app)
    app[PROBE] = Probe(
        sockets=lambda: len(registry.connections()), sessions=lambda: len(registry)
    )
    return app


if __name__ == "__main__":
    use_library_copy()
    asyncio.run(serve_app(build_app(sys.argv[1], sys.argv[2], sys.argv[3])))
