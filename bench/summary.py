"""Median and p99 of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, p1, p95 and p99 (interpolated), min, max and count of the samples.

    For a time the tail is the p99; for a rate (higher is better) it is the p1.
    """
    ordered = sorted(samples)
    if len(ordered) == 1:
        p1 = p95 = p99 = ordered[0]
    else:
        percentiles = statistics.quantiles(ordered, n=100, method="inclusive")
        p1, p95, p99 = percentiles[0], percentiles[94], percentiles[98]
    return {
        "median": statistics.median(ordered),
        "p1": p1,
        "p95": p95,
        "p99": p99,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }
