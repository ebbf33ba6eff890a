"""Ratios, the table (reStructuredText and Markdown) and the plot of a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Result = dict[str, Any]
NONE = "n/a"
IMPLS = ("ours", "raw", "socketio")
RATES = {"msgs_per_s", "cycles_per_s"}
"""Higher is better: their tail is the p1, the slowest repetitions."""

TARGETS = {
    ("fanout", "raw"): 1.15,
    ("fanout", "socketio"): 0.25,
    ("close", "raw"): 1.2,
    ("close", "socketio"): 0.5,
    ("idle_memory", "raw"): 1.3,
}
"""The targets: ours / baseline must not exceed these."""


def _find(results: list[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.get(k) == v for k, v in match.items()):
            return result
    return None


@dataclass(frozen=True)
class Figure:
    """One kind of table row: a metric of a scenario, per group of results."""

    scenario: str
    metric: str
    label: str
    """Formatted with the result's fields, e.g. ``{sessions}``."""
    fmt: str
    group: str | None = None
    """The result field that tells rows of the scenario apart, if any."""
    targeted: Callable[[Result], bool] = lambda result: False
    """Whether a target is set for this row."""


FIGURES = [
    Figure(
        "fanout",
        "cpu_us_per_msg",
        "fan-out, {sessions} sessions: server CPU µs/msg",
        ".2f",
        "sessions",
        lambda result: True,
    ),
    Figure(
        "fanout",
        "msgs_per_s",
        "fan-out, {sessions} sessions: delivered msgs/s (client-bound; higher "
        "is better)",
        ",.0f",
        "sessions",
    ),
    Figure(
        "close",
        "latency_ms",
        "cross-node close, {sockets} socket(s): ms",
        ".2f",
        "sockets",
        lambda result: bool(result["sockets"] == 100),
    ),
    Figure(
        "idle_memory",
        "kib_per_socket",
        "idle memory, {sockets} sockets: KiB/socket",
        ".1f",
        targeted=lambda result: True,
    ),
    Figure(
        "churn",
        "cycles_per_s",
        "churn, {cycles} cycles: cycles/s (higher is better)",
        ",.0f",
    ),
]


def _measured_row(
    results: list[Result], figure: Figure, ours: Result
) -> dict[str, str]:
    match = {} if figure.group is None else {figure.group: ours[figure.group]}
    found = {
        i: _find(results, scenario=figure.scenario, impl=i, **match) for i in IMPLS
    }
    row = {"figure": figure.label.format(**ours)}
    tail = "p1" if figure.metric in RATES else "p99"
    for impl, result in found.items():
        if result is None:
            row[impl] = NONE
            continue
        summary = result[figure.metric]
        row[impl] = (
            f"{summary['median']:{figure.fmt}} ({tail} {summary[tail]:{figure.fmt}})"
        )
    for base in ("raw", "socketio"):
        result = found[base]
        denominator = None if result is None else result[figure.metric]["median"]
        if not denominator:
            row[f"vs {base}"] = NONE
            continue
        ratio = ours[figure.metric]["median"] / denominator
        target = TARGETS.get((figure.scenario, base)) if figure.targeted(ours) else None
        if target is None:
            row[f"vs {base}"] = f"{ratio:.2f}x"
        else:
            verdict = "✓" if ratio <= target else "✗"
            row[f"vs {base}"] = f"{ratio:.2f}x (≤ {target}) {verdict}"
    return row


def _churn_row(
    churned: list[Result], label: str, cell: Callable[[Result], str]
) -> dict[str, str]:
    row = {"figure": label, "vs raw": "", "vs socketio": ""}
    for impl in IMPLS:
        found = _find(churned, impl=impl)
        row[impl] = NONE if found is None else cell(found)
    return row


def _settled(result: Result) -> str:
    if result["empty"]:
        return f"{result['settle_s']:.2f}"
    return f"not within {result['settle_s']:.0f}"


def rows(results: list[Result]) -> list[dict[str, str]]:
    """One table row per measured figure: each implementation, and the ratios."""
    table: list[dict[str, str]] = []
    for figure in FIGURES:
        for ours in results:
            if ours["scenario"] == figure.scenario and ours["impl"] == "ours":
                table.append(_measured_row(results, figure, ours))
    churned = [r for r in results if r["scenario"] == "churn"]
    if churned:
        table += [
            _churn_row(
                churned,
                "churn: state back to empty",
                lambda result: "yes" if result["empty"] else "NO",
            ),
            _churn_row(
                churned,
                "churn: tasks before any socket / baseline / after",
                lambda result: (
                    f"{result['tasks_fresh']} / "
                    f"{result['before']['tasks']} / {result['after']['tasks']}"
                ),
            ),
            _churn_row(churned, "churn: seconds until empty", _settled),
            _churn_row(
                churned,
                "churn: RSS growth over the timed cycles, KiB",
                lambda result: f"{result['rss_growth_kib']:,.0f}",
            ),
        ]
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
    impls = IMPLS
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
