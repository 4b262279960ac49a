"""Point in polygon over GeoJSON rings, shared by the demo district and the console map."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

Ring = Sequence[Sequence[float]]  # GeoJSON order: [lon, lat], closed


def in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Even-odd ray casting; a point exactly on an edge counts as whichever side the test puts it."""
    hit = False
    for a, b in itertools.pairwise(ring):
        x1, y1, x2, y2 = a[0], a[1], b[0], b[1]
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def in_polygon(lon: float, lat: float, rings: Sequence[Ring]) -> bool:
    """Inside the outer ring and outside every hole."""
    return bool(rings) and in_ring(lon, lat, rings[0]) and not any(in_ring(lon, lat, h) for h in rings[1:])
