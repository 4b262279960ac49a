"""Inline SVG geometry for the pages: sparklines and the device map. Pure; no tiles, no CDN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from console.views import DeviceView


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


@dataclass(frozen=True, slots=True)
class Placed:
    device: DeviceView
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class GridBox:
    grid: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True, slots=True)
class MapLayout:
    width: float
    height: float
    devices: list[Placed]
    grids: list[GridBox]
    unplaced: list[DeviceView]


def layout_map(devices: Sequence[DeviceView], width: float = 800, height: float = 480, pad: float = 24) -> MapLayout:
    """Equirectangular projection of the devices' bounding box, x scaled by cos(latitude).

    Grid (单元网格) outlines are the padded bounding boxes of each grid's devices: without
    map tiles or grid polygons this is the honest picture of where a grid's sensors are.
    """
    located = [d for d in devices if d.lat is not None and d.lon is not None]
    unplaced = [d for d in devices if d.lat is None or d.lon is None]
    if not located:
        return MapLayout(width, height, [], [], unplaced)
    lats = [d.lat for d in located if d.lat is not None]
    lons = [d.lon for d in located if d.lon is not None]
    lat0, lat1, lon0, lon1 = min(lats), max(lats), min(lons), max(lons)
    kx = math.cos(math.radians((lat0 + lat1) / 2))
    span_x = max((lon1 - lon0) * kx, 1e-6)
    span_y = max(lat1 - lat0, 1e-6)
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)
    off_x = (width - span_x * scale) / 2
    off_y = (height - span_y * scale) / 2

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return off_x + (lon - lon0) * kx * scale, height - off_y - (lat - lat0) * scale

    placed = []
    for d in located:
        assert d.lat is not None and d.lon is not None
        x, y = xy(d.lat, d.lon)
        placed.append(Placed(d, round(x, 1), round(y, 1)))
    boxes: list[GridBox] = []
    by_grid: dict[str, list[Placed]] = {}
    for p in placed:
        if p.device.grid:
            by_grid.setdefault(p.device.grid, []).append(p)
    for grid, members in sorted(by_grid.items()):
        xs = [p.x for p in members]
        ys = [p.y for p in members]
        g = 14.0
        boxes.append(GridBox(grid, round(min(xs) - g, 1), round(min(ys) - g, 1),
                             round(max(xs) - min(xs) + 2 * g, 1), round(max(ys) - min(ys) + 2 * g, 1)))
    return MapLayout(width, height, placed, boxes, unplaced)
