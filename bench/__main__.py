"""``python -m bench``: run the scenarios, write results, table and plot.

Options: ``--smoke`` (tiny sizes, for the tests), ``--out DIR`` (default
``docs/benchmarks``), ``--only SCENARIO`` (repeatable), ``--impl NAME``
(repeatable; default all three), ``--lib DIR`` (the servers import
``DIR/aiohttp_session_ws``, a prototype), ``--profile DIR`` (py-spy flame graphs of
every server), ``--render`` (redraw the tables and plot of ``--out`` from its
``results.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from . import (
    events_report,
    events_scenarios,
    locks_report,
    locks_scenarios,
    messaging_scenarios,
    procs,
    report,
    scenarios,
)
from .client import new_http_session
from .events_scenarios import EVENTS_FULL, EVENTS_SCENARIOS, EVENTS_SMOKE, EventsSizes
from .locks_scenarios import LOCK_SCENARIOS, LOCKS_FULL, LOCKS_SMOKE, LockSizes
from .messaging_scenarios import (
    MESSAGING_FULL,
    MESSAGING_SCENARIOS,
    MESSAGING_SMOKE,
    MessagingSizes,
)
from .procs import RedisServer
from .server import LIB_PATH_VARIABLE
from .sizes import FULL, SMOKE, Sizes

SCENARIOS = (
    "fanout",
    "close",
    "idle_memory",
    "churn",
    "push",
    "push_latency",
    *MESSAGING_SCENARIOS,
    *LOCK_SCENARIOS,
    *EVENTS_SCENARIOS,
)
PUSH_SCENARIOS = {"push", "push_latency"}
"""They need the library's protocol and push service; skipped until it has them."""


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(
    sizes: Sizes,
    chosen: list[str],
    impls: list[str],
    skipped: dict[str, str],
    messaging_sizes: MessagingSizes = MESSAGING_FULL,
    lock_sizes: LockSizes = LOCKS_FULL,
    events_sizes: EventsSizes = EVENTS_FULL,
) -> list[dict[str, Any]]:
    """Run the chosen scenarios against a fresh redis-server.

    Scenarios that cannot run are left out, each with its reason in ``skipped``.
    """
    results: list[dict[str, Any]] = []
    redis_server = RedisServer()
    redis_server.start()
    try:
        async with new_http_session() as http:
            missing = ""
            wants_protocol = (PUSH_SCENARIOS | {"idle_memory"}) & set(chosen)
            if "ours" in impls and wants_protocol:
                missing = await scenarios.push_missing(redis_server.url, http)
            if missing:
                for name in PUSH_SCENARIOS & set(chosen):
                    skipped[name] = missing
                if "idle_memory" in chosen:
                    skipped["idle_memory_protocol"] = missing
                _log(f"skipping the push scenarios: {missing}")
                chosen = [c for c in chosen if c not in PUSH_SCENARIOS]
            if {"fanout", "close", *PUSH_SCENARIOS} & set(chosen):
                cluster = scenarios.Cluster(redis_server.url, impls)
                try:
                    await cluster.warm_up(http)
                    if "fanout" in chosen:
                        results += await scenarios.fanout(cluster, http, sizes, _log)
                    if "push" in chosen:
                        results += await scenarios.push(cluster, http, sizes, _log)
                    if "close" in chosen:
                        results += await scenarios.cross_node_close(
                            cluster, http, sizes, _log
                        )
                    if "push_latency" in chosen:
                        results += await scenarios.push_latency(
                            cluster, http, sizes, _log
                        )
                finally:
                    cluster.stop()
            if "idle_memory" in chosen:
                results += await scenarios.idle_memory(
                    redis_server.url, http, sizes, impls, _log, protocol=not missing
                )
            if "churn" in chosen:
                results += await scenarios.churn(
                    redis_server.url, http, sizes, impls, _log
                )
            messaging = [c for c in chosen if c in MESSAGING_SCENARIOS]
            if messaging:
                results += await messaging_scenarios.run_messaging(
                    redis_server.url,
                    http,
                    messaging_sizes,
                    impls,
                    messaging,
                    _log,
                    skipped,
                )
            locks = [c for c in chosen if c in LOCK_SCENARIOS]
            if locks:
                results += await locks_scenarios.run_locks(
                    redis_server.url, http, lock_sizes, locks, _log, skipped
                )
            events = [c for c in chosen if c in EVENTS_SCENARIOS]
            if events:
                results += await events_scenarios.run_events(
                    redis_server.url, http, events_sizes, events, _log, skipped
                )
    finally:
        redis_server.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, and write ``results.json``, the tables and the plot."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--only", action="append", choices=SCENARIOS)
    parser.add_argument("--impl", action="append", choices=scenarios.IMPLS)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record every server with py-spy; flame graphs go to DIR",
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "raw"),
        default="flamegraph",
        help="py-spy's output: SVG flame graphs or collapsed stacks",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: redraw the tables and plot from OUT/results.json",
    )
    parser.add_argument(
        "--lib",
        type=Path,
        metavar="DIR",
        help="the servers import DIR/aiohttp_session_ws (a prototype) instead",
    )
    options = parser.parse_args(argv)
    out: Path = options.out
    if options.render:
        saved = json.loads((out / "results.json").read_text())
        _write_report(out, saved["results"], saved["meta"])
        return 0
    if options.profile is not None:
        options.profile.mkdir(parents=True, exist_ok=True)
        procs.PROFILE_DIR = options.profile
        procs.PROFILE_FORMAT = options.profile_format
    sizes = SMOKE if options.smoke else FULL
    messaging_sizes = MESSAGING_SMOKE if options.smoke else MESSAGING_FULL
    lock_sizes = LOCKS_SMOKE if options.smoke else LOCKS_FULL
    events_sizes = EVENTS_SMOKE if options.smoke else EVENTS_FULL
    chosen = options.only or list(SCENARIOS)
    impls = options.impl or list(scenarios.IMPLS)
    _raise_fd_limit()
    # a terminated run still stops its servers and redis-server (finally blocks)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if options.lib is not None:
        os.environ[LIB_PATH_VARIABLE] = str(options.lib.resolve())
    started = time.time()
    skipped: dict[str, str] = {}
    results = asyncio.run(
        run(sizes, chosen, impls, skipped, messaging_sizes, lock_sizes, events_sizes)
    )
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": _cpu_count(),
        "smoke": options.smoke,
        "sizes": sizes.__dict__,
        "messaging_sizes": messaging_sizes.__dict__,
        "lock_sizes": lock_sizes.__dict__,
        "events_sizes": events_sizes.__dict__,
        "skipped": skipped,
    }
    if options.lib is not None:
        meta["lib"] = str(options.lib.resolve())
    (out / "results.json").write_text(  # first: a report bug loses no run
        json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
    )
    _write_report(out, results, meta)
    return 0


def _write_report(
    out: Path, results: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    table = report.rows(results)
    locks = locks_report.rows(results)
    events = events_report.rows(results)
    (out / "results.md").write_text(report.markdown(table, meta, locks, events))
    (out / "results.rst").write_text(report.rst(table, meta, locks, events))
    report.plot(results, out / "results.png")
    print(report.markdown(table, meta, locks, events))
    _log(f"wrote {out}/results.md, results.rst and results.png")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
