"""Robust slope for rate-of-change rules: Theil–Sen (median of pairwise slopes).

One spike moves a least-squares slope a lot and a median slope hardly at all, which is what
an early flood warning needs from a radar gauge that sees a passing truck's splash.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=256)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, 1)
    return i, j


def theil_sen_slope(ts: Sequence[float] | np.ndarray, vs: Sequence[float] | np.ndarray, max_points: int = 48) -> float:
    """Median pairwise slope (value units per second); NaN with fewer than two distinct times.

    More than ``max_points`` samples are thinned to evenly spaced ones (first and last kept),
    which bounds the cost at ``max_points²/2`` pairs.
    """
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(vs, dtype=np.float64)
    n = t.size
    if n > max_points:
        idx = np.linspace(0, n - 1, max_points).round().astype(np.int64)
        t, v, n = t[idx], v[idx], max_points
    if n < 2:
        return float("nan")
    i, j = _pairs(n)
    dt = t[j] - t[i]
    ok = dt > 0
    if not ok.any():
        return float("nan")
    return float(np.median((v[j][ok] - v[i][ok]) / dt[ok]))
