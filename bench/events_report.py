"""The table of the event scenarios: ours beside its baseline, and the ratios.

Targets (issue 14):

- cross-node delivery p50 (register on node A to the ``events`` frame at a
  wire subscriber on node B) at most 1.5 times the Redis pub/sub round
  trip through another process, measured in the same run;
- fan-out of one event to 1,000 subscribers: server CPU per delivered event
  at most 1.15 times a raw aiohttp server's that sends one pre-encoded
  frame to 1,000 websockets.

Register throughput (against a pipelined ``XADD`` of the same batches) and
the replay of 10,000 retained events are reported with their ratio, no target.
"""

from __future__ import annotations

from typing import Any

Result = dict[str, Any]
NONE = "n/a"
LATENCY_TARGET = 1.5
"""Cross-node p50, in Redis pub/sub round trips."""
FANOUT_TARGET = 1.15
"""Server CPU per delivered event, of the raw server's."""
RATES = {"events_per_s"}
"""Higher is better: the tail shown is the p1."""
COLUMNS = ("figure", "ours", "baseline", "ratio")
HEADINGS = ("Figure", "ours", "baseline", "ours / baseline")


def _find(results: list[Result], **match: Any) -> Result | None:
    for result in results:
        if all(result.get(k) == v for k, v in match.items()):
            return result
    return None


def _cell(result: Result | None, metric: str, fmt: str) -> str:
    if result is None or metric not in result:
        return NONE
    summary = result[metric]
    tail = "p1" if metric in RATES else "p95"
    return f"{summary['median']:{fmt}} ({tail} {summary[tail]:{fmt}})"


def _ratio(
    ours: Result | None,
    base: Result | None,
    metric: str,
    target: float | None = None,
) -> str:
    if ours is None or base is None or not base[metric]["median"]:
        return NONE
    ratio = float(ours[metric]["median"]) / float(base[metric]["median"])
    if target is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x (≤ {target:g}) {'✓' if ratio <= target else '✗'}"


def _latency_rows(results: list[Result]) -> list[dict[str, str]]:
    pubsub = _find(results, scenario="events_latency", impl="redis")
    rows = []
    for via in ("server code", "wire client"):
        for where in ("cross-node", "same-node"):
            ours = _find(
                results, scenario="events_latency", impl="ours", via=via, where=where
            )
            if ours is None:
                continue
            cross = where == "cross-node"
            node = "B" if cross else "A"
            rows.append(
                {
                    "figure": f"delivery, register ({via}) on node A to the frame at "
                    f"a wire subscriber on node {node}: ms; baseline: Redis pub/sub "
                    "round trip through another process",
                    "ours": _cell(ours, "latency_ms", ".3f"),
                    "baseline": _cell(pubsub, "latency_ms", ".3f"),
                    "ratio": _ratio(
                        ours, pubsub, "latency_ms", LATENCY_TARGET if cross else None
                    ),
                }
            )
    return rows


def _fanout_rows(results: list[Result]) -> list[dict[str, str]]:
    rows = []
    for ours in results:
        if ours["scenario"] != "events_fanout" or ours["impl"] != "ours":
            continue
        count = ours["subscribers"]
        raw = _find(results, scenario="events_fanout", impl="raw", subscribers=count)
        rows.append(
            {
                "figure": f"one event to {count:,} wire subscribers ({ours['layout']})"
                ": server CPU µs per delivered event; baseline: raw aiohttp, one "
                "pre-encoded frame to each websocket",
                "ours": _cell(ours, "cpu_us_per_event", ".2f"),
                "baseline": _cell(raw, "cpu_us_per_event", ".2f"),
                "ratio": _ratio(ours, raw, "cpu_us_per_event", FANOUT_TARGET),
            }
        )
        rows.append(
            {
                "figure": f"  the same: ms from the trigger to the last of the "
                f"{count:,} subscribers (client-bound)",
                "ours": _cell(ours, "last_ms", ".1f"),
                "baseline": _cell(raw, "last_ms", ".1f"),
                "ratio": _ratio(ours, raw, "last_ms"),
            }
        )
        lost = [
            f"{r['impl']}: {r['incomplete']} incomplete, {r['missed']} missed, "
            f"{r['out_of_order']} out of order"
            for r in (ours, raw)
            if r is not None and (r["incomplete"] or r["missed"] or r["out_of_order"])
        ]
        if lost:
            rows.append({"figure": "  subscribers short of events: " + "; ".join(lost)})
    return rows


def _register_rows(results: list[Result]) -> list[dict[str, str]]:
    raw = _find(results, scenario="events_register", impl="redis")
    rows = []
    for via in ("server code", "wire client"):
        ours = _find(results, scenario="events_register", impl="ours", via=via)
        if ours is None:
            continue
        label = f"register in batches of {ours['batch']}, {via} on node A"
        base = "baseline: a redis-py pipeline of XADD, server code"
        for metric, what, fmt in (
            ("events_per_s", "events/s (higher is better)", ",.0f"),
            ("cpu_us_per_event", "server process CPU µs per event", ".2f"),
            ("redis_cpu_us_per_event", "redis-server CPU µs per event", ".2f"),
        ):
            rows.append(
                {
                    "figure": f"{label}: {what}; {base}",
                    "ours": _cell(ours, metric, fmt),
                    "baseline": _cell(raw, metric, fmt),
                    "ratio": _ratio(ours, raw, metric),
                }
            )
            label, base = "  the same", "baseline: XADD"
    return rows


def _replay_rows(results: list[Result]) -> list[dict[str, str]]:
    raw = _find(results, scenario="events_replay", impl="redis")
    rows = []
    for via in ("wire client", "server code"):
        ours = _find(results, scenario="events_replay", impl="ours", via=via)
        if ours is None:
            continue
        where = (
            "subscribe(since) sent to the last replayed event at a wire client"
            if via == "wire client"
            else "registry.events.subscribe(since) to the last event iterated"
        )
        rows.append(
            {
                "figure": f"replay of {ours['events']:,} retained events, {where}: "
                "ms; baseline: redis-py XRANGE pages of 500, server code",
                "ours": _cell(ours, "replay_ms", ".1f"),
                "baseline": _cell(raw, "replay_ms", ".1f"),
                "ratio": _ratio(ours, raw, "replay_ms"),
            }
        )
    return rows


def rows(results: list[Result]) -> list[dict[str, str]]:
    """The event rows (none when the event scenarios did not run)."""
    return (
        _latency_rows(results)
        + _fanout_rows(results)
        + _register_rows(results)
        + _replay_rows(results)
    )


def markdown(table: list[dict[str, str]]) -> str:
    """The event table as Markdown ('' when empty)."""
    if not table:
        return ""
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += [
        "| " + " | ".join(row.get(c, "") for c in COLUMNS) + " |" for row in table
    ]
    return "\n".join(lines) + "\n"


def rst(table: list[dict[str, str]]) -> str:
    """The event table as a reStructuredText list-table ('' when empty)."""
    if not table:
        return ""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    body = [[row.get(c, "") for c in COLUMNS] for row in table]
    for cells in [list(HEADINGS), *body]:
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {cell}" if cell else "     -" for cell in cells[1:]]
    return "\n".join(lines) + "\n"
