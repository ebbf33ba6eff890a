"""The table rows of the messaging scenarios, with their targets.

Targets (issue 12), on p50:

- same node: ours <= 1.3x the floor;
- cross-node: ours <= 2x the floor + one Redis pub/sub round trip;
- both: ours <= 0.5x python-socketio.

The floor of the targets is the raw relay on one node (A -> server -> B ->
server -> A: the hops ours makes); the one-hop raw echo and the raw relay
across nodes are shown beside it.
"""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]
NONE = "n/a"
SAME_TARGET = 1.3
CROSS_TARGET = 1.0
"""Of 2x the same-node floor plus one Redis pub/sub round trip."""
SOCKETIO_TARGET = 0.5
FLOOR = "relay"
ECHO = "echo (one hop)"


def _find(results: list[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.get(k) == v for k, v in match.items()):
            return result
    return None


def _p50(result: Result | None, metric: str = "latency_ms") -> float | None:
    if result is None or metric not in result:
        return None
    value = float(result[metric]["median"])
    return value if value else None


def _cell(result: Result | None, metric: str, fmt: str) -> str:
    if result is None or metric not in result:
        return NONE
    summary = result[metric]
    return f"{summary['median']:{fmt}} (p95 {summary['p95']:{fmt}})"


def _verdict(ratio: float, target: float) -> str:
    return f"(≤ {target}) {'✓' if ratio <= target else '✗'}"


def _rtt_rows(results: list[Result]) -> list[dict[str, str]]:
    rtt = [r for r in results if r["scenario"] == "messaging_rtt"]
    if not rtt:
        return []
    floor_same = _find(rtt, impl="raw", via=FLOOR, where="same-node")
    echo = _find(rtt, impl="raw", via=ECHO)
    pubsub = _find(rtt, impl="redis")
    floor_ms, echo_ms, pubsub_ms = _p50(floor_same), _p50(echo), _p50(pubsub)
    rows: list[dict[str, str]] = []
    for ours in (r for r in rtt if r["impl"] == "ours"):
        where = ours["where"]
        raw = _find(rtt, impl="raw", via=FLOOR, where=where)
        sio = _find(rtt, impl="socketio", via="call", where=where)
        ms = _p50(ours)
        row = {
            "figure": f"request round trip, {where}, {ours['via']}: ms",
            "ours": _cell(ours, "latency_ms", ".3f"),
            "raw": f"relay {_cell(raw, 'latency_ms', '.3f')}",
            "socketio": f"call {_cell(sio, 'latency_ms', '.3f')}",
        }
        notes: list[str] = []
        if ms is not None and where == "same-node" and floor_ms:
            ratio = ms / floor_ms
            notes.append(f"{ratio:.2f}x relay {_verdict(ratio, SAME_TARGET)}")
        if ms is not None and where == "cross-node" and floor_ms and pubsub_ms:
            goal = 2 * floor_ms + pubsub_ms
            ratio = ms / goal
            notes.append(
                f"{ratio:.2f}x of 2 x relay + pub/sub ({goal:.3f} ms) "
                f"{_verdict(ratio, CROSS_TARGET)}"
            )
            raw_cross = _p50(raw)
            if raw_cross:
                notes.append(f"{ms / raw_cross:.2f}x cross-node relay")
        if ms is not None and echo_ms:
            notes.append(f"{ms / echo_ms:.2f}x one-hop echo")
        row["vs raw"] = "; ".join(notes) or NONE
        sio_ms = _p50(sio)
        if ms is not None and sio_ms:
            ratio = ms / sio_ms
            row["vs socketio"] = f"{ratio:.2f}x {_verdict(ratio, SOCKETIO_TARGET)}"
        else:
            row["vs socketio"] = NONE
        rows.append(row)
        rows.append(_cpu_row(ours, raw, sio))
    baselines = {
        "figure": "round-trip baselines: one-hop raw echo / Redis pub/sub round "
        "trip through another process: ms",
        "ours": "",
        "raw": f"echo {_cell(echo, 'latency_ms', '.3f')}",
        "socketio": f"pub/sub {_cell(pubsub, 'latency_ms', '.3f')}",
        "vs raw": "",
        "vs socketio": "",
    }
    return [*rows, baselines]


def _cpu_row(ours: Result, raw: Result | None, sio: Result | None) -> dict[str, str]:
    metric = "cpu_us_per_request"
    row = {
        "figure": f"request round trip, {ours['where']}, {ours['via']}: server CPU "
        "µs per request (both nodes)",
        "ours": _cell(ours, metric, ".1f"),
        "raw": f"relay {_cell(raw, metric, '.1f')}",
        "socketio": f"call {_cell(sio, metric, '.1f')}",
    }
    mine = _p50(ours, metric)
    for key, base in (("vs raw", raw), ("vs socketio", sio)):
        theirs = _p50(base, metric)
        row[key] = f"{mine / theirs:.2f}x" if mine is not None and theirs else NONE
    return row


def _filter_rows(results: list[Result]) -> list[dict[str, str]]:
    found = {r["impl"]: r for r in results if r["scenario"] == "messaging_filter"}
    ours = found.get("ours")
    if ours is None:
        return []
    label = f"filter send to {ours['sessions']} sessions on 2 nodes"
    rows: list[dict[str, str]] = []
    for metric, what, fmt in (
        ("latency_ms", "ms to the last response", ".1f"),
        ("done_ms", "ms to the end of the send (ours: its done frame)", ".1f"),
        ("cpu_us_per_response", "server CPU µs per response (both nodes)", ".1f"),
    ):
        row = {"figure": f"{label}: {what}"}
        for impl in ("ours", "raw", "socketio"):
            row[impl] = _cell(found.get(impl), metric, fmt)
        mine = _p50(ours, metric)
        for impl in ("raw", "socketio"):
            theirs = _p50(found.get(impl), metric)
            row[f"vs {impl}"] = (
                f"{mine / theirs:.2f}x" if mine is not None and theirs else NONE
            )
        rows.append(row)
    problems = {
        impl: f"{r['errors']} errors, {r['unanswered']} unanswered, "
        f"{r.get('client_failures', 0)} unexpected frames"
        for impl, r in found.items()
        if r["errors"] or r["unanswered"] or r.get("client_failures")
    }
    if problems or ours["expected"] != [ours["sessions"]]:
        row = {
            "figure": f"{label}: answers missing or failed",
            "vs raw": "",
            "vs socketio": "",
        }
        for impl in ("ours", "raw", "socketio"):
            row[impl] = problems.get(impl, "none" if impl in found else NONE)
        row["ours"] += f"; expected {ours['expected']}"
        rows.append(row)
    return rows


def rows(results: list[Result]) -> list[dict[str, str]]:
    """The messaging rows of the table (none when the scenarios did not run)."""
    return _rtt_rows(results) + _filter_rows(results)
