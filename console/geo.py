"""Pure geometry for the map: WGS-84 -> GCJ-02 and the nearest named street.

Data stays WGS-84 everywhere; a Chinese base map (天地图 is CGCS2000 ≈ WGS-84, but AMap/
Tencent-style XYZ tiles are GCJ-02) needs the points shifted before drawing, and the console
does that shift server-side, once, so the browser holds no copy of the formula.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_A = 6378245.0  # Krasovsky 1940 semi-major axis, as the GCJ-02 algorithm uses it
_EE = 0.00669342162296594323


def in_china(lat: float, lon: float) -> bool:
    """The rough box outside which GCJ-02 applies no offset (as every public implementation)."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def _d_lat(x: float, y: float) -> float:
    r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    r += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return r


def _d_lon(x: float, y: float) -> float:
    r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    r += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return r


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) on GCJ-02 for a WGS-84 point; unchanged outside China."""
    if not in_china(lat, lon):
        return lat, lon
    d_lat = _d_lat(lon - 105.0, lat - 35.0)
    d_lon = _d_lon(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lat + d_lat, lon + d_lon


def _seg_dist_m(lat: float, lon: float, a: Sequence[float], b: Sequence[float]) -> float:
    """Metres from a point to segment a-b (local equirectangular; fine over a district)."""
    kx = 111_320.0 * math.cos(math.radians(lat))
    ky = 110_574.0
    ax, ay = (a[0] - lon) * kx, (a[1] - lat) * ky
    bx, by = (b[0] - lon) * kx, (b[1] - lat) * ky
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    t = 0.0 if len2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / len2))
    return math.hypot(ax + t * dx, ay + t * dy)


@dataclass(frozen=True, slots=True)
class Street:
    name: str
    line: Sequence[Sequence[float]]  # [lon, lat] points


def street_address(lat: float, lon: float, streets: Iterable[Street], max_m: float = 400.0) -> str:
    """"保俶路近灵隐路" style: the nearest named street and the nearest other one, within ``max_m``.

    A device's address for people when the registry has none: a duty officer finds a flooded
    underpass by its streets, not by its coordinates.
    """
    best: dict[str, float] = {}
    for s in streets:
        d = min((_seg_dist_m(lat, lon, a, b) for a, b in itertools.pairwise(s.line)), default=math.inf)
        if d <= max_m and d < best.get(s.name, math.inf):
            best[s.name] = d
    near = sorted(best, key=lambda n: (best[n], n))
    if not near:
        return ""
    return near[0] if len(near) == 1 else f"{near[0]}近{near[1]}"
