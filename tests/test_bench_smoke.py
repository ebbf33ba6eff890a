"""The benchmark suite at its smoke size, so that it cannot rot.

It runs ``python -m bench --smoke`` as a user would: real servers in their own
processes, a real redis-server, all three implementations. No figure is
asserted (timings are the suite's business, not a test's); that it runs,
reports every scenario for every implementation, and that our churn leaves
nothing behind, is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .redis_server import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT = 300


def test_the_benchmark_suite_runs_at_smoke_size(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
        preexec_fn=die_with_parent(os.getpid()),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    measured = {(r["scenario"], r["impl"]) for r in results}
    scenarios = {"fanout", "close", "idle_memory", "churn"}
    impls = {"ours", "raw", "socketio"}
    assert measured == {(s, i) for s in scenarios for i in impls}
    churn = {r["impl"]: r for r in results if r["scenario"] == "churn"}
    ours = churn["ours"]
    assert ours["empty"], ours["after"]
    assert ours["after"]["tasks"] == ours["before"]["tasks"] == ours["tasks_fresh"]
    assert set(ours["after"]["leftovers"].values()) == {0}
    assert "sessions_in_redis" in ours["after"]["leftovers"]
    table = (tmp_path / "results.md").read_text()
    assert "ours / raw" in table
    assert "fan-out, 3 sessions: server CPU µs/msg" in table
    assert ".. list-table::" in (tmp_path / "results.rst").read_text()
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")
