"""The demo district map: the committed GeoJSON is the generator's output and every demo device's grid agrees."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.geo import in_polygon
from firmware_sim.demo import GRIDS, demo_config
from firmware_sim.district import district_geojson, grid_at, render

ROOT = Path(__file__).resolve().parents[3]
GEOJSON = ROOT / "configs" / "map" / "demo-district.geojson"


def test_file_matches_generator() -> None:
    assert GEOJSON.read_text(encoding="utf-8") == render(), (
        "run: python -m firmware_sim.district > configs/map/demo-district.geojson")


def test_layers_and_grids() -> None:
    doc = district_geojson()
    layers = [f["properties"]["layer"] for f in doc["features"]]
    assert layers.count("grid") == 3 and layers.count("river") == 1 and layers.count("street") >= 5
    grids = {f["properties"]["grid"]: f["geometry"]["coordinates"] for f in doc["features"]
             if f["properties"]["layer"] == "grid"}
    assert set(grids) == set(GRIDS)
    for dev in demo_config()["devices"]:  # a device's grid is the polygon it stands in
        assert grid_at(dev["lat"], dev["lon"]) == dev["grid"], dev["id"]
        assert in_polygon(dev["lon"], dev["lat"], grids[dev["grid"]])
        assert sum(in_polygon(dev["lon"], dev["lat"], g) for g in grids.values()) == 1  # grids do not overlap
    assert json.loads(GEOJSON.read_text(encoding="utf-8"))["type"] == "FeatureCollection"
