"""Ratios, the table (reStructuredText and Markdown) and the plot of a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from . import events_report, locks_report, messaging_report

Result = dict[str, Any]
NONE = "n/a"
IMPLS = ("ours", "raw", "socketio")
RATES = {"msgs_per_s", "cycles_per_s"}
"""Higher is better: their tail is the p1, the slowest repetitions."""

FANOUT_TARGETS = {"raw": 1.15, "socketio": 0.25}
PUSH_TARGETS = {"raw": 1.1, "socketio": 0.25}
"""Server CPU per delivered message with the protocol (the push service's issue)."""
PUBSUB_TARGET = 1.5
"""Cross-node push p50 at most this many Redis pub/sub round trips."""


def _close_targets(result: Result) -> dict[str, float]:
    # the push service's issue: a close <= 1.2x the floor at every K
    return {"raw": 1.2, **({"socketio": 0.5} if result["sockets"] == 100 else {})}


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
    targets: Callable[[Result], dict[str, float]] = lambda result: {}
    """The targets of this row: ours / baseline must not exceed them."""
    baseline_scenario: str | None = None
    """Where the baselines' figures come from, if not from ``scenario``."""


FIGURES = [
    Figure(
        "fanout",
        "cpu_us_per_msg",
        "fan-out, {sessions} sessions: server CPU µs/msg",
        ".2f",
        "sessions",
        lambda result: FANOUT_TARGETS,
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
        "push_session",
        "cpu_us_per_msg",
        "push to 1 session x {sockets} protocol sockets: server CPU µs/msg",
        ".2f",
        "sockets",
        lambda result: PUSH_TARGETS,
    ),
    Figure(
        "push_fanout",
        "cpu_us_per_msg",
        "push to {sessions} sessions x 2 protocol sockets: server CPU µs/msg",
        ".2f",
        "sessions",
        lambda result: PUSH_TARGETS,
    ),
    Figure(
        "push_fanout",
        "msgs_per_s",
        "push to {sessions} sessions: delivered msgs/s (client-bound; higher "
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
        _close_targets,
    ),
    Figure(
        "push_latency",
        "latency_ms",
        "push latency, {where}, 1 socket: ms",
        ".3f",
        "where",
    ),
    Figure(
        "idle_memory",
        "kib_per_socket",
        "idle memory, {sockets} sockets: KiB/socket",
        ".1f",
        targets=lambda result: {"raw": 1.3},
    ),
    Figure(
        "idle_memory_protocol",
        "kib_per_socket",
        "idle memory, {sockets} protocol connections (vs plain sockets): KiB/socket",
        ".1f",
        targets=lambda result: {"raw": 1.3},
        baseline_scenario="idle_memory",
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
    if figure.baseline_scenario is not None:
        for base in ("raw", "socketio"):
            found[base] = _find(results, scenario=figure.baseline_scenario, impl=base)
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
        target = figure.targets(ours).get(base)
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


def _pubsub_rows(results: list[Result]) -> list[dict[str, str]]:
    """Each implementation's cross-node push p50 over the Redis pub/sub p50."""
    pubsub = _find(results, scenario="push_latency", impl="redis", where="pub/sub")
    if pubsub is None:
        return []
    floor = pubsub["latency_ms"]["median"]
    label = (
        f"cross-node push p50 / Redis pub/sub round trip p50, through another process "
        f"({floor:.3f} ms, p99 {pubsub['latency_ms']['p99']:.3f}"
    )
    here = _find(
        results, scenario="push_latency", impl="redis", where="pub/sub, one process"
    )
    if here is not None:
        label += f"; within one process {here['latency_ms']['median']:.3f}"
    row = {
        "figure": label + ")",
        "vs raw": "",
        "vs socketio": "",
    }
    for impl in IMPLS:
        found = _find(results, scenario="push_latency", impl=impl, where="cross-node")
        if found is None or not floor:
            row[impl] = NONE
            continue
        ratio = found["latency_ms"]["median"] / floor
        row[impl] = f"{ratio:.2f}x"
        if impl == "ours":
            verdict = "✓" if ratio <= PUBSUB_TARGET else "✗"
            row[impl] += f" (≤ {PUBSUB_TARGET}) {verdict}"
    return [row]


def rows(results: list[Result]) -> list[dict[str, str]]:
    """One table row per measured figure: each implementation, and the ratios."""
    table: list[dict[str, str]] = []
    for figure in FIGURES:
        for ours in results:
            if ours["scenario"] == figure.scenario and ours["impl"] == "ours":
                table.append(_measured_row(results, figure, ours))
        if figure.scenario == "push_latency":
            table += _pubsub_rows(results)
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
    return table + messaging_report.rows(results)


COLUMNS = ["figure", "ours", "raw", "socketio", "vs raw", "vs socketio"]
HEADINGS = [
    "Figure",
    "ours",
    "raw aiohttp",
    "python-socketio",
    "ours / raw",
    "ours / socketio",
]


def markdown(
    table: list[dict[str, str]],
    meta: dict[str, Any],
    locks: list[dict[str, str]] | None = None,
    events: list[dict[str, str]] | None = None,
) -> str:
    """The run's description and its table as Markdown; then the side tables.

    Those of the lock and event scenarios. The main table is left out when
    only those ran.
    """
    lines = [describe(meta), ""]
    sides = [t for t in (locks, events) if t]
    if table or not sides:
        lines += [
            "| " + " | ".join(HEADINGS) + " |",
            "|" + "---|" * len(HEADINGS),
        ]
        lines += [
            "| " + " | ".join(row.get(c, "") for c in COLUMNS) + " |" for row in table
        ]
    text = "\n".join(lines) + "\n"
    separate = bool(table)
    for side, render in (
        (locks, locks_report.markdown),
        (events, events_report.markdown),
    ):
        if side:
            text += ("\n" if separate else "") + render(side)
            separate = True
    return text


def describe(meta: dict[str, Any]) -> str:
    """One sentence on when and where the run was made."""
    size = "smoke sizes" if meta["smoke"] else "full sizes"
    text = (
        f"Run of {meta['date']}: Python {meta['python']} on {meta['machine']}, "
        f"{meta['cpus']} CPU(s), {size}, {meta['seconds']:.0f} s in all."
    )
    if meta.get("lib"):
        text += f" Library from {meta['lib']}."
    for scenario, reason in meta.get("skipped", {}).items():
        text += f" Skipped {scenario}: {reason}."
    return text


def rst(
    table: list[dict[str, str]],
    meta: dict[str, Any],
    locks: list[dict[str, str]] | None = None,
    events: list[dict[str, str]] | None = None,
) -> str:
    """The run's description and its table as a reStructuredText list-table.

    Then the lock and event tables, if those scenarios ran (alone, they are
    the only ones).
    """
    lines = [describe(meta), ""]
    sides = [t for t in (locks, events) if t]
    if table or not sides:
        lines += [".. list-table::", "   :header-rows: 1", ""]
        for cells in [HEADINGS] + [[row.get(c, "") for c in COLUMNS] for row in table]:
            lines.append(f"   * - {cells[0]}")
            lines += [f"     - {cell}" if cell else "     -" for cell in cells[1:]]
    text = "\n".join(lines) + "\n"
    separate = bool(table)
    for side, render in ((locks, locks_report.rst), (events, events_report.rst)):
        if side:
            text += ("\n" if separate else "") + render(side)
            separate = True
    return text


Group = tuple[str, str, dict[str, Any]]
"""A bar group of a panel: its label, its scenario, the fields its results match."""


def _groups(results: list[Result], scenario: str, key: str, label: str) -> list[Group]:
    values = sorted({r[key] for r in results if r["scenario"] == scenario})
    return [(label.format(value), scenario, {key: value}) for value in values]


def plot(results: list[Result], path: Path) -> None:
    """Six panels, medians with tail whiskers, one colour per implementation."""
    colours = {"ours": "#2b7bba", "raw": "#7f7f7f", "socketio": "#e07b39"}
    push_groups = _groups(results, "push_session", "sockets", "1 x {}") + _groups(
        results, "push_fanout", "sessions", "{} x 2"
    )
    panels: list[tuple[str, str, list[Group]]] = [
        (
            "Fan-out: server CPU µs per message",
            "cpu_us_per_msg",
            _groups(results, "fanout", "sessions", "{} sessions"),
        ),
        (
            "Cross-node close: latency ms",
            "latency_ms",
            _groups(results, "close", "sockets", "{} on B"),
        ),
        (
            "Idle memory: KiB per socket",
            "kib_per_socket",
            _groups(results, "idle_memory", "sockets", "{} sockets")
            + _groups(results, "idle_memory_protocol", "sockets", "{} protocol"),
        ),
        (
            "Churn: open+close cycles per s",
            "cycles_per_s",
            _groups(results, "churn", "cycles", "{} cycles"),
        ),
        ("Push: server CPU µs per message", "cpu_us_per_msg", push_groups),
        (
            "Push latency ms (line: Redis pub/sub round trip)",
            "latency_ms",
            [
                g
                for g in _groups(results, "push_latency", "where", "{}")
                if not g[0].startswith("pub/sub")
            ],
        ),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    width = 0.8 / len(IMPLS)
    for axis, (title, metric, groups) in zip(axes.flat, panels, strict=True):
        axis.set_title(title)
        if not groups:
            axis.text(0.5, 0.5, "not run", ha="center", va="center")
            axis.set_xticks([])
            continue
        for index, impl in enumerate(IMPLS):
            xs, medians, errors = [], [], []
            for position, (_, scenario, match) in enumerate(groups):
                found = _find(results, scenario=scenario, impl=impl, **match)
                if found is None:
                    continue
                summary = found[metric]
                xs.append(position + (index - 1) * width)
                medians.append(summary["median"])
                tail = summary["p1" if metric in RATES else "p99"]
                errors.append(abs(tail - summary["median"]))
            zeros = [0] * len(errors)
            axis.bar(
                xs,
                medians,
                width,
                yerr=[errors, zeros] if metric in RATES else [zeros, errors],
                label=impl,
                color=colours[impl],
                capsize=3,
            )
        axis.set_xticks(range(len(groups)), [g[0] for g in groups])
        if metric == "latency_ms" and groups[0][1] == "close":
            axis.set_yscale("log")
        pubsub = _find(results, scenario="push_latency", impl="redis", where="pub/sub")
        if groups[0][1] == "push_latency" and pubsub is not None:
            axis.axhline(pubsub["latency_ms"]["median"], color="black", linewidth=1)
    if axes.flat[0].get_legend_handles_labels()[0]:  # not when only locks ran
        axes.flat[0].legend()
    figure.suptitle(
        "aiohttp-session-ws, raw aiohttp, python-socketio: median, whisker to the tail"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
