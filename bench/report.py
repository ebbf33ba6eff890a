"""Ratios, the table (reStructuredText and Markdown) and the plot of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Result = dict[str, Any]
NONE = "n/a"
RATES = {"msgs_per_s", "cycles_per_s"}
"""Higher is better: their tail is the p1, the slowest repetitions."""

TARGETS = {
    ("fanout", "raw"): 1.15,
    ("fanout", "socketio"): 0.25,
    ("close", "raw"): 1.2,
    ("close", "socketio"): 0.5,
    ("idle_memory", "raw"): 1.3,
}
"""The issue's targets: ours / baseline must not exceed these."""


def _find(results: list[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.get(k) == v for k, v in match.items()):
            return result
    return None


def rows(results: list[Result]) -> list[dict[str, str]]:
    """One table row per measured figure: each implementation, and the ratios."""
    table: list[dict[str, str]] = []

    def add(
        scenario: str,
        label: str,
        metric: str,
        match: dict[str, Any],
        fmt: str,
        target_kind: str | None,
    ) -> None:
        found = {
            i: _find(results, scenario=scenario, impl=i, **match)
            for i in ("ours", "raw", "socketio")
        }
        ours = found["ours"]
        if ours is None:
            return
        row = {"figure": label}
        for impl, result in found.items():
            if result is None:
                row[impl] = NONE
                continue
            summary = result[metric]
            tail = "p1" if metric in RATES else "p99"
            row[impl] = f"{summary['median']:{fmt}} ({tail} {summary[tail]:{fmt}})"
        for base in ("raw", "socketio"):
            result = found[base]
            if result is None:
                row[f"vs {base}"] = NONE
                continue
            denominator = result[metric]["median"]
            if not denominator:
                row[f"vs {base}"] = NONE
                continue
            ratio = ours[metric]["median"] / denominator
            target = TARGETS.get((target_kind, base)) if target_kind else None
            verdict = "" if target is None else (" ✓" if ratio <= target else " ✗")
            bound = "" if target is None else f" (≤ {target})"
            row[f"vs {base}"] = f"{ratio:.2f}x{bound}{verdict}"
        table.append(row)

    for result in results:
        if result["scenario"] == "fanout" and result["impl"] == "ours":
            n = result["sessions"]
            add(
                "fanout",
                f"fan-out, {n} sessions: server CPU µs/msg",
                "cpu_us_per_msg",
                {"sessions": n},
                ".2f",
                "fanout",
            )
            add(
                "fanout",
                f"fan-out, {n} sessions: delivered msgs/s (client-bound; higher "
                "is better)",
                "msgs_per_s",
                {"sessions": n},
                ",.0f",
                None,
            )
    for result in results:
        if result["scenario"] == "close" and result["impl"] == "ours":
            k = result["sockets"]
            add(
                "close",
                f"cross-node close, {k} socket(s): ms",
                "latency_ms",
                {"sockets": k},
                ".2f",
                "close" if k == 100 else None,
            )
    for result in results:
        if result["scenario"] == "idle_memory" and result["impl"] == "ours":
            add(
                "idle_memory",
                f"idle memory, {result['sockets']} sockets: KiB/socket",
                "kib_per_socket",
                {},
                ".1f",
                "idle_memory",
            )
    for result in results:
        if result["scenario"] == "churn" and result["impl"] == "ours":
            add(
                "churn",
                f"churn, {result['cycles']} cycles: cycles/s (higher is better)",
                "cycles_per_s",
                {},
                ",.0f",
                None,
            )
    churned = [r for r in results if r["scenario"] == "churn"]
    if churned:
        row = {"figure": "churn: state back to empty"}
        for impl in ("ours", "raw", "socketio"):
            found = _find(churned, impl=impl)
            row[impl] = NONE if found is None else ("yes" if found["empty"] else "NO")
        row["vs raw"] = row["vs socketio"] = ""
        table.append(row)
        row = {"figure": "churn: tasks before any socket / baseline / after"}
        for impl in ("ours", "raw", "socketio"):
            found = _find(churned, impl=impl)
            row[impl] = (
                NONE
                if found is None
                else f"{found['tasks_fresh']} / {found['before']['tasks']} / "
                f"{found['after']['tasks']}"
            )
        row["vs raw"] = row["vs socketio"] = ""
        table.append(row)
        row = {"figure": "churn: seconds until empty"}
        for impl in ("ours", "raw", "socketio"):
            found = _find(churned, impl=impl)
            if found is None:
                row[impl] = NONE
            elif found["empty"]:
                row[impl] = f"{found['settle_s']:.2f}"
            else:
                row[impl] = f"not within {found['settle_s']:.0f}"
        row["vs raw"] = row["vs socketio"] = ""
        table.append(row)
    return table


COLUMNS = ["figure", "ours", "raw", "socketio", "vs raw", "vs socketio"]
HEADINGS = [
    "Figure",
    "ours",
    "raw aiohttp",
    "python-socketio",
    "ours / raw",
    "ours / socketio",
]


def markdown(table: list[dict[str, str]], meta: dict[str, Any]) -> str:
    """The run's description and its table as Markdown."""
    lines = [
        describe(meta),
        "",
        "| " + " | ".join(HEADINGS) + " |",
        "|" + "---|" * len(HEADINGS),
    ]
    lines += [
        "| " + " | ".join(row.get(c, "") for c in COLUMNS) + " |" for row in table
    ]
    return "\n".join(lines) + "\n"


def describe(meta: dict[str, Any]) -> str:
    """One sentence on when and where the run was made."""
    size = "smoke sizes" if meta["smoke"] else "full sizes"
    return (
        f"Run of {meta['date']}: Python {meta['python']} on {meta['machine']}, "
        f"{meta['cpus']} CPU(s), {size}, {meta['seconds']:.0f} s in all."
    )


def rst(table: list[dict[str, str]], meta: dict[str, Any]) -> str:
    """The run's description and its table as a reStructuredText list-table."""
    lines = [describe(meta), "", ".. list-table::", "   :header-rows: 1", ""]
    for cells in [HEADINGS] + [[row.get(c, "") for c in COLUMNS] for row in table]:
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {cell}" if cell else "     -" for cell in cells[1:]]
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> None:
    """Four panels, medians with p99 whiskers, one colour per implementation."""
    impls = ("ours", "raw", "socketio")
    colours = {"ours": "#2b7bba", "raw": "#7f7f7f", "socketio": "#e07b39"}
    panels = [
        (
            "fanout",
            "cpu_us_per_msg",
            "sessions",
            "Fan-out: server CPU µs per message",
            "sessions",
        ),
        (
            "close",
            "latency_ms",
            "sockets",
            "Cross-node close: latency ms",
            "sockets on B",
        ),
        (
            "idle_memory",
            "kib_per_socket",
            "sockets",
            "Idle memory: KiB per socket",
            "sockets",
        ),
        ("churn", "cycles_per_s", "cycles", "Churn: open+close cycles per s", "cycles"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for axis, (scenario, metric, key, title, xlabel) in zip(
        axes.flat, panels, strict=True
    ):
        groups = sorted({r[key] for r in results if r["scenario"] == scenario})
        width = 0.8 / len(impls)
        for index, impl in enumerate(impls):
            xs, medians, errors = [], [], []
            for position, group in enumerate(groups):
                found = _find(results, scenario=scenario, impl=impl, **{key: group})
                if found is None:
                    continue
                summary = found[metric]
                xs.append(position + (index - 1) * width)
                medians.append(summary["median"])
                tail = summary["p1" if metric in RATES else "p99"]
                errors.append(abs(tail - summary["median"]))
            axis.bar(
                xs,
                medians,
                width,
                yerr=[errors, [0] * len(errors)]
                if metric in RATES
                else [[0] * len(errors), errors],
                label=impl,
                color=colours[impl],
                capsize=3,
            )
        axis.set_xticks(range(len(groups)), [str(g) for g in groups])
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        if scenario == "close":
            axis.set_yscale("log")
    axes.flat[0].legend()
    figure.suptitle(
        "aiohttp-session-ws, raw aiohttp, python-socketio: median, whisker to the tail"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
