"""Inline SVG sparklines for the pages (the map is Leaflet: console/static/onemap.js). Pure."""

from __future__ import annotations

from collections.abc import Sequence


def sparkline(values: Sequence[float], width: float = 120, height: float = 28, pad: float = 2) -> str:
    """``points`` attribute of a polyline through ``values`` (empty string if fewer than two)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    step = (width - 2 * pad) / (len(values) - 1)
    return " ".join(
        f"{pad + i * step:.1f},{height - pad - (v - lo) / span * (height - 2 * pad):.1f}" for i, v in enumerate(values)
    )
