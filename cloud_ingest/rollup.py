"""Rollups: 1-minute and 1-hour aggregates (min, max, mean, count, last) kept after raw data is gone.

The stores maintain them incrementally in the transaction that inserts readings, from the rows
actually inserted (a duplicate changes nothing): SQLite through an ``AFTER INSERT`` trigger on
each day table, PostgreSQL through ``INSERT ... RETURNING`` feeding an upsert. This module is
the pure part: which resolution answers a query, and the reference aggregation the tests hold
the stores to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

ROLLUP_TABLES = {60: "rollup_1m", 3600: "rollup_1h"}  # resolution in seconds -> table


@dataclass(frozen=True, slots=True)
class Agg:
    """One rollup row: ``mean`` is ``total / n``; ``last`` is the value at ``last_ts_ms``."""

    n: int
    total: float
    min: float
    max: float
    last_ts_ms: int
    last: float

    @property
    def mean(self) -> float:
        return self.total / self.n


def aggregate(rows: Iterable[tuple[str, str, int, float]], resolution_s: int) -> dict[tuple[str, str, int], Agg]:
    """Reference aggregation of (device, metric, ts_ms, value) rows, keyed by (device, metric, bucket_ms)."""
    step = resolution_s * 1000
    out: dict[tuple[str, str, int], Agg] = {}
    for device, metric, t, v in rows:
        key = (device, metric, t // step * step)
        a = out.get(key)
        if a is None:
            out[key] = Agg(1, v, v, v, t, v)
        else:
            newer = t > a.last_ts_ms
            out[key] = Agg(a.n + 1, a.total + v, min(a.min, v), max(a.max, v),
                           t if newer else a.last_ts_ms, v if newer else a.last)
    return out


def rollup_for(bucket_s: float | None) -> int | None:
    """The coarsest rollup resolution that divides ``bucket_s`` (None: read raw rows)."""
    if bucket_s is None:
        return None
    for res in sorted(ROLLUP_TABLES, reverse=True):
        if bucket_s >= res and math.isclose(bucket_s % res, 0.0, abs_tol=1e-9):
            return res
    return None


def auto_bucket_s(span_s: float, max_points: int) -> float:
    """The bucket a chart should ask for: at most ``max_points`` buckets, rounded up to a
    rollup resolution once buckets are a minute or longer, so long windows read rollups."""
    raw = max(1.0, math.ceil(span_s / max(1, max_points)))
    if raw >= 3600:
        return float(math.ceil(raw / 3600) * 3600)
    if raw >= 60:
        return float(math.ceil(raw / 60) * 60)
    return raw
