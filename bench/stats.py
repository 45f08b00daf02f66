"""Percentiles (linear interpolation between closest ranks, numpy's default) and summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float | int]:
    """count/min/p50/p90/p99/max/mean of ``values`` multiplied by ``scale`` (e.g. 1000 for s -> ms)."""
    if not values:
        return {"count": 0}
    scaled = [v * scale for v in values]
    return {
        "count": len(scaled),
        "min": round(min(scaled), digits),
        "p50": round(percentile(scaled, 50), digits),
        "p90": round(percentile(scaled, 90), digits),
        "p99": round(percentile(scaled, 99), digits),
        "max": round(max(scaled), digits),
        "mean": round(sum(scaled) / len(scaled), digits),
    }
