"""The benchmark suite at its smoke size, so that it cannot rot.

It runs ``python -m bench --smoke`` as a user would: real servers in their own
processes, a real redis-server, all three implementations. No figure is
asserted (timings are the suite's business, not a test's); that it runs,
reports every scenario for every implementation, and that our churn leaves
nothing behind, is. The frame micro-benchmark and the memory split run at
their smoke sizes too.
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


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
        preexec_fn=die_with_parent(os.getpid()),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


SUITE = ("fanout", "close", "idle_memory", "churn", "push", "push_latency")
"""The scenarios of the first test; the messaging ones have a test of their own."""


def test_the_benchmark_suite_runs_at_smoke_size(tmp_path: Path) -> None:
    only = [arg for name in SUITE for arg in ("--only", name)]
    _run("bench", "--smoke", *only, "--out", str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    results = saved["results"]
    skipped = saved["meta"]["skipped"]
    measured = {(r["scenario"], r["impl"]) for r in results}
    scenarios = {"fanout", "close", "idle_memory", "churn"}
    impls = {"ours", "raw", "socketio"}
    expected = {(s, i) for s in scenarios for i in impls}
    if skipped:  # the library has no protocol or push service yet
        assert set(skipped) == {"push", "push_latency", "idle_memory_protocol"}
        assert all(skipped.values())
    else:
        pushes = {"push_session", "push_fanout", "push_latency"}
        expected |= {(s, i) for s in pushes for i in impls}
        expected |= {("push_latency", "redis"), ("idle_memory_protocol", "ours")}
    assert measured == expected
    churn = {r["impl"]: r for r in results if r["scenario"] == "churn"}
    ours = churn["ours"]
    assert ours["empty"], ours["after"]
    assert ours["after"]["tasks"] == ours["before"]["tasks"] == ours["tasks_fresh"]
    assert set(ours["after"]["leftovers"].values()) == {0}
    assert "sessions_in_redis" in ours["after"]["leftovers"]
    table = (tmp_path / "results.md").read_text()
    assert "ours / raw" in table
    assert "fan-out, 3 sessions: server CPU µs/msg" in table
    if not skipped:
        assert "push to 3 sessions x 2 protocol sockets: server CPU µs/msg" in table
        assert "cross-node push p50 / Redis pub/sub round trip p50" in table
    assert ".. list-table::" in (tmp_path / "results.rst").read_text()
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")


def test_the_messaging_scenarios_run_at_smoke_size(tmp_path: Path) -> None:
    _run(
        "bench",
        "--smoke",
        "--only",
        "messaging_rtt",
        "--only",
        "messaging_filter",
        "--out",
        str(tmp_path),
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    results, skipped = saved["results"], saved["meta"]["skipped"]
    if set(skipped) == {"messaging_rtt", "messaging_filter"}:  # no server side yet
        assert results == []
        assert all(skipped.values())
        return
    assert set(skipped) <= {"messaging_rtt (Python client)"}
    rtt = {(r["impl"], r["where"], r["via"]) for r in results if "via" in r}
    clients = ["wire"] if skipped else ["wire", "Python client"]
    expected = {
        ("ours", where, f"{op}, {client}")
        for where in ("same-node", "cross-node")
        for op in ("to_path", "to_session")
        for client in clients
    }
    expected |= {
        ("raw", "same-node", "relay"),
        ("raw", "cross-node", "relay"),
        ("raw", "same-node", "echo (one hop)"),
        ("socketio", "same-node", "call"),
        ("socketio", "cross-node", "call"),
        ("redis", "cross-node", "pub/sub"),
    }
    assert rtt == expected
    fans = {r["impl"]: r for r in results if r["scenario"] == "messaging_filter"}
    assert set(fans) == {"ours", "raw", "socketio"}
    for fan in fans.values():  # every session answered every round
        assert fan["errors"] == fan["unanswered"] == fan["client_failures"] == 0, fan
    assert fans["ours"]["expected"] == [fans["ours"]["sessions"]]
    table = (tmp_path / "results.md").read_text()
    assert "request round trip, cross-node, to_session, wire: ms" in table
    assert "filter send to 6 sessions on 2 nodes: ms to the last response" in table


def test_the_frame_benchmark_runs_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "frames.json"
    done = _run("bench.frames", "--smoke", "--json", str(out))
    figures = json.loads(out.read_text())
    # every parser gave every frame the same answer, or the run would have failed
    assert set(figures["decode"]["invalid: unknown op"]) >= {"stdlib"}
    assert {r["kind"] for r in figures["socket"]} == {"send_frame", "send_str", "read"}
    assert "Decode + validate, ns per frame" in done.stdout
    assert "Share of the server's CPU" in done.stdout


def test_the_memory_split_runs_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = _run(
        "bench.memory_split",
        "--smoke",
        "--no-rss",
        "--variant",
        "bare",
        "--variant",
        "ours",
        "--json",
        str(out),
    )
    variants = json.loads(out.read_text())["variants"]
    assert set(variants) == {"bare", "ours"}
    assert variants["ours"]["sessions"] == variants["ours"]["sockets"] // 2 > 0
    assert variants["ours"]["traced"]["total"] > variants["bare"]["traced"]["total"]
    assert "ours in all, vs bare" in done.stdout


def test_the_lock_scenarios_run_at_smoke_size(tmp_path: Path) -> None:
    from bench.locks_scenarios import COMPETITORS, UNCONTENDED_COMPETITORS

    _run(
        "bench",
        "--smoke",
        "--only",
        "lock_handoff",
        "--only",
        "lock_uncontended",
        "--out",
        str(tmp_path),
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    results, skipped = saved["results"], saved["meta"]["skipped"]
    if set(skipped) == {"lock_handoff", "lock_uncontended"}:  # no locks service yet
        assert results == []
        assert all(skipped.values())
        return
    # a competitor that is not installed (or does not import) is skipped, with why
    missing = {key[len("locks (") : -1] for key in skipped}
    assert set(skipped) == {f"locks ({impl})" for impl in missing}
    assert all(skipped.values())
    assert missing <= set(COMPETITORS)
    handoff = {
        (r["impl"], r["via"]) for r in results if r["scenario"] == "lock_handoff"
    }
    assert handoff == {("ours", "server"), ("ours", "wire")} | {
        (impl, "server") for impl in set(COMPETITORS) - missing
    }
    pairs = {
        (r["impl"], r["via"]) for r in results if r["scenario"] == "lock_uncontended"
    }
    assert pairs == {("ours", "server"), ("ours", "wire")} | {
        (impl, "server") for impl in set(UNCONTENDED_COMPETITORS) - missing
    }
    for result in results:
        figure = result.get("latency_ms") or result["pair_us"]
        assert figure["n"] > 0, result
        assert figure["median"] > 0, result
    table = (tmp_path / "results.md").read_text()
    assert "lock hand-off to a waiter on another node: ms" in table
    assert "hand-off p50, ours / competitor" in table
    assert "uncontended lock + unlock, in-process: µs per pair" in table
    assert ".. list-table::" in (tmp_path / "results.rst").read_text()


def test_the_event_scenarios_run_at_smoke_size(tmp_path: Path) -> None:
    from bench.events_scenarios import EVENTS_SCENARIOS, EVENTS_SMOKE

    only = [arg for name in EVENTS_SCENARIOS for arg in ("--only", name)]
    _run("bench", "--smoke", *only, "--out", str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    results, skipped = saved["results"], saved["meta"]["skipped"]
    if skipped:  # no event service on Redis yet
        assert set(skipped) == set(EVENTS_SCENARIOS)
        assert all(skipped.values())
        assert results == []
        return
    found = {(r["scenario"], r["impl"], r.get("via"), r.get("where")) for r in results}
    expected: set[tuple[str, str, str | None, str | None]] = {
        ("events_latency", "ours", via, where)
        for via in ("server code", "wire client")
        for where in ("cross-node", "same-node")
    }
    expected |= {
        ("events_latency", "redis", "pub/sub", "cross-node"),
        ("events_fanout", "ours", None, None),
        ("events_fanout", "raw", None, None),
        ("events_register", "ours", "server code", None),
        ("events_register", "ours", "wire client", None),
        ("events_register", "redis", "XADD pipeline", None),
        ("events_replay", "ours", "wire client", None),
        ("events_replay", "ours", "server code", None),
        ("events_replay", "redis", "XRANGE pages", None),
    }
    assert found == expected
    for result in results:
        for key in ("latency_ms", "cpu_us_per_event", "events_per_s", "replay_ms"):
            if key in result:
                assert result[key]["n"] > 0, result
                assert result[key]["median"] > 0, result
    for fan in (r for r in results if r["scenario"] == "events_fanout"):
        # every subscriber got every event, in order, none dropped
        assert fan["subscribers"] == EVENTS_SMOKE.fanout_subscribers
        assert fan["incomplete"] == fan["missed"] == fan["out_of_order"] == 0, fan
    replays = [r for r in results if r["scenario"] == "events_replay"]
    assert {r["events"] for r in replays} == {EVENTS_SMOKE.replay_events}
    table = (tmp_path / "results.md").read_text()
    assert "wire subscriber on node B: ms" in table
    assert "(≤ 1.5)" in table
    assert "(≤ 1.15)" in table
    assert "register in batches of" in table
    assert "replay of 1,200 retained events" in table
    assert ".. list-table::" in (tmp_path / "results.rst").read_text()
