"""The demo district's own map: streets, a river and grid (单元网格) polygons, as GeoJSON.

Made for the demo (not surveyed): the simulator's devices lie inside it, a grid is the polygon
a device stands in (so grid outlines and device grids agree), and the console draws it as its
offline base layer, so the all-in-one map shows where things are without internet.
``python -m firmware_sim.district > configs/map/demo-district.geojson`` rewrites the file; a
unit test checks that the file on disk equals this output.
"""

from __future__ import annotations

import json
from typing import Any

from contracts.geo import in_ring

WEST, EAST, SOUTH, NORTH = 120.128, 120.172, 30.238, 30.272

# The river runs north-west to south-east; the WIM bridge (曙光路桥) crosses it at 120.1322 E.
RIVER = (
    (WEST, 30.2700), (120.1322, 30.2682), (120.1400, 30.2630), (120.1500, 30.2596),
    (120.1560, 30.2585), (120.1640, 30.2560), (EAST, 30.2540),
)  # fmt: skip
RIVER_NAME = "古新河 Guxin River (demo)"
SPLIT_LON = 120.1500  # 保俶路 divides the two grids south of the river

# (name, points): E-W and N-S roads of the demo district
STREETS: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = (
    ("北山路", ((WEST, 30.2655), (EAST, 30.2655))),
    ("天目山路", ((WEST, 30.2560), (120.1500, 30.2545), (EAST, 30.2500))),
    ("灵隐路", ((WEST, 30.2490), (EAST, 30.2490))),
    ("南山路", ((WEST, 30.2420), (EAST, 30.2420))),
    ("曙光路", ((120.1323, SOUTH), (120.1323, NORTH))),
    ("保俶路", ((SPLIT_LON, SOUTH), (SPLIT_LON, NORTH))),
    ("环城西路", ((120.1620, SOUTH), (120.1620, NORTH))),
)

# grid code -> (name, ring); rings are closed, counter-clockwise, sharing the river as a border
_RIVER_WEST = tuple(p for p in RIVER if p[0] <= SPLIT_LON)
_RIVER_EAST = tuple(p for p in RIVER if p[0] >= SPLIT_LON)
GRID_RINGS: dict[str, tuple[str, tuple[tuple[float, float], ...]]] = {
    "330106002001": ("北山-1", (*RIVER, (EAST, NORTH), (WEST, NORTH), RIVER[0])),
    "330106001001": ("灵隐-1", ((WEST, SOUTH), (SPLIT_LON, SOUTH), *reversed(_RIVER_WEST), (WEST, SOUTH))),
    "330106001002": ("灵隐-2", ((SPLIT_LON, SOUTH), (EAST, SOUTH), *reversed(_RIVER_EAST), (SPLIT_LON, SOUTH))),
}


def grid_at(lat: float, lon: float) -> str | None:
    """The demo grid containing the point, or None outside the district."""
    return next((code for code, (_n, ring) in GRID_RINGS.items() if in_ring(lon, lat, ring)), None)


def _feature(geometry_type: str, coords: Any, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": {"type": geometry_type, "coordinates": coords}}


def district_geojson() -> dict[str, Any]:
    """All layers in one FeatureCollection; ``properties.layer`` says which (grid, river, street)."""
    features = [_feature("Polygon", [[list(p) for p in ring]], layer="grid", grid=code, name=name)
                for code, (name, ring) in GRID_RINGS.items()]
    features.append(_feature("LineString", [list(p) for p in RIVER], layer="river", name=RIVER_NAME))
    features += [_feature("LineString", [list(p) for p in pts], layer="street", name=name) for name, pts in STREETS]
    return {"type": "FeatureCollection", "name": "citywatch demo district (WGS-84)", "features": features}


def render() -> str:
    return json.dumps(district_geojson(), ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    print(render(), end="")
