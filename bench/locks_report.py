"""The table of the lock scenarios: ours beside each competitor, and the ratios.

Targets (issue 13):

- hand-off to a waiter on another node: ours p50 <= 2 ms, and below every
  competitor's p50;
- uncontended take + release: ours at least as fast as redis-py's ``Lock``
  (p50 per pair, ratio <= 1).
"""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]
NONE = "n/a"
HANDOFF_MS_TARGET = 2.0
HANDOFF_RATIO_TARGET = 1.0
"""Below every competitor: the ratio must be under this."""
PAIR_TARGET = 1.0
"""Of redis-py's Lock, per pair."""
COLUMNS = ("ours", "redispy", "redispy_fast", "redis_lock", "aioredlock")
HEADINGS = (
    "Figure",
    "ours",
    "redis-py Lock (sleep 0.1)",
    "redis-py Lock (sleep 0.01)",
    "python-redis-lock",
    "aioredlock",
)


def _find(results: list[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.get(k) == v for k, v in match.items()):
            return result
    return None


RATES = {"pairs_per_s"}
"""Higher is better: the tail shown is the p1 (the slowest blocks)."""


def _cell(result: Result | None, metric: str, fmt: str) -> str:
    if result is None or metric not in result:
        return NONE
    summary = result[metric]
    tail = "p1" if metric in RATES else "p95"
    return f"{summary['median']:{fmt}} ({tail} {summary[tail]:{fmt}})"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _handoff_rows(results: list[Result]) -> list[dict[str, str]]:
    found = {
        r["impl"]: r
        for r in results
        if r["scenario"] == "lock_handoff" and r.get("via") == "server"
    }
    ours = found.get("ours")
    if ours is None:
        return []
    figure = {"figure": "lock hand-off to a waiter on another node: ms"}
    ratios = {"figure": "hand-off p50, ours / competitor (target < 1; ours ≤ 2 ms)"}
    mine = float(ours["latency_ms"]["median"])
    for impl in COLUMNS:
        figure[impl] = _cell(found.get(impl), "latency_ms", ".3f")
        theirs = found.get(impl)
        if impl == "ours":
            ok = mine <= HANDOFF_MS_TARGET
            ratios[impl] = f"{mine:.3f} ms (≤ {HANDOFF_MS_TARGET:g}) {_mark(ok)}"
        elif theirs is None or not theirs["latency_ms"]["median"]:
            ratios[impl] = NONE
        else:
            ratio = mine / float(theirs["latency_ms"]["median"])
            ratios[impl] = f"{ratio:.3f}x {_mark(ratio < HANDOFF_RATIO_TARGET)}"
    release = {
        "figure": "  node A's release call, from its start until it returned: ms"
    }
    for impl in COLUMNS:
        release[impl] = _cell(found.get(impl), "release_ms", ".3f")
    rows = [figure, ratios, release]
    wire = _find(results, scenario="lock_handoff", impl="ours", via="wire")
    if wire is not None:
        rows.append(
            {
                "figure": "lock hand-off, ours over the wire (client A's unlock to "
                "client B's lock result): ms",
                "ours": _cell(wire, "latency_ms", ".3f"),
            }
        )
    return rows


def _pair_rows(results: list[Result]) -> list[dict[str, str]]:
    found = {
        r["impl"]: r
        for r in results
        if r["scenario"] == "lock_uncontended" and r.get("via") == "server"
    }
    ours = found.get("ours")
    if ours is None:
        return []
    label = "uncontended lock + unlock, in-process"
    rows: list[dict[str, str]] = []
    for metric, what, fmt in (
        ("pair_us", "µs per pair", ".1f"),
        ("pairs_per_s", "pairs/s (higher is better)", ",.0f"),
        ("cpu_us_per_pair", "process CPU µs per pair", ".1f"),
    ):
        row = {"figure": f"{label}: {what}"}
        for impl in COLUMNS:
            row[impl] = _cell(found.get(impl), metric, fmt)
        rows.append(row)
    ratios = {"figure": f"{label}: p50 per pair, ours / competitor (≤ 1 vs redis-py)"}
    mine = float(ours["pair_us"]["median"])
    for impl in COLUMNS[1:]:
        theirs = found.get(impl)
        if theirs is None or not theirs["pair_us"]["median"]:
            ratios[impl] = NONE
            continue
        ratio = mine / float(theirs["pair_us"]["median"])
        ratios[impl] = f"{ratio:.2f}x"
        if impl == "redispy":
            ratios[impl] += f" (≤ {PAIR_TARGET:g}) {_mark(ratio <= PAIR_TARGET)}"
    if "redispy" in found and "redispy_fast" not in found:
        ratios["redispy_fast"] = "(same as sleep 0.1: no waiting)"
    rows.append(ratios)
    wire = _find(results, scenario="lock_uncontended", impl="ours", via="wire")
    if wire is not None:
        rows.append(
            {
                "figure": "uncontended lock + unlock, ours over the wire (two ops "
                "from one client): µs per pair",
                "ours": _cell(wire, "pair_us", ".1f"),
            }
        )
    return rows


def rows(results: list[Result]) -> list[dict[str, str]]:
    """The lock rows (none when the lock scenarios did not run)."""
    return _handoff_rows(results) + _pair_rows(results)


def markdown(table: list[dict[str, str]]) -> str:
    """The lock table as Markdown ('' when empty)."""
    if not table:
        return ""
    lines = [
        "| " + " | ".join(HEADINGS) + " |",
        "|" + "---|" * len(HEADINGS),
    ]
    lines += [
        "| " + " | ".join(row.get(c, "") for c in ("figure", *COLUMNS)) + " |"
        for row in table
    ]
    return "\n".join(lines) + "\n"


def rst(table: list[dict[str, str]]) -> str:
    """The lock table as a reStructuredText list-table ('' when empty)."""
    if not table:
        return ""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [list(HEADINGS)] + [
        [row.get(c, "") for c in ("figure", *COLUMNS)] for row in table
    ]:
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {cell}" if cell else "     -" for cell in cells[1:]]
    return "\n".join(lines) + "\n"
