"""The one map, alarm board, manual clear and cockpit over real SQLite stores (seeded demo)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console.config import MapSettings
from console.geo import wgs84_to_gcj02
from console.onemap import load_map
from contracts.alarms import Severity
from contracts.errors import ConfigError
from tests.support.console_demo import DISTRICT, DemoEnv, build_demo, demo_settings, raise_alarm

pytestmark = pytest.mark.integration
Auth = Callable[[str], dict[str, str]]
PNG = b"\x89PNG\r\n\x1a\n" + b"tile-0-0-row1"


def test_map_markers_district_and_popup(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    h = as_user("duty")
    cfg = client.get("/api/v1/map/config", headers=h).json()
    assert cfg["district"] is True and cfg["base_layers"] == [] and cfg["datum"] == "wgs84"
    doc = client.get("/api/v1/map/district", headers=h).json()
    assert {f["properties"]["layer"] for f in doc["features"]} == {"grid", "street", "river"}
    data = client.get("/api/v1/map/devices", headers=h).json()
    assert data["fields"] == ["id", "kind", "lat", "lon", "state"]
    assert len(data["rows"]) == len(env.demo.devices) and data["unplaced"] == 0
    states = {r[0]: r[4] for r in data["rows"]}
    alarmed = {a.device: a.severity.value for a in env.alarm_store.list(active_only=True)}
    assert alarmed and all(states[d] == sev for d, sev in alarmed.items())
    gauge = next(iter(alarmed))
    pop = client.get(f"/api/v1/map/devices/{gauge}", headers=h).json()
    assert pop["address"] and "灵隐" in pop["address"]  # nearest streets and the grid's name
    depth = next(v for v in pop["latest"] if v["metric"] == "depth")
    assert depth["text"].endswith(" m") and depth["label"] == "积水深度 water depth"
    assert pop["open_case"] is not None and pop["alarms"][0]["rule"] == "road-water-depth"
    # a handler of another unit sees the marker but not the other unit's case
    assert client.get(f"/api/v1/map/devices/{gauge}", headers=as_user("handler-b")).json()["open_case"] is None
    assert client.get("/api/v1/map/devices/nope", headers=h).status_code == 404


def test_board_order_values_and_manual_clear(env: DemoEnv, client: TestClient, as_user: Auth) -> None:
    now = time.time()
    wim = next(d for d in env.demo.devices if d.kind == "wim")
    tr = raise_alarm(env.case_store, wim, "wim-overload", Severity.CRITICAL, t=now - 10, value=77_900.0,
                     alarms=env.alarm_store)
    h = as_user("duty")
    board = client.get("/api/v1/board", headers=h).json()
    assert [i["rule"] for i in board["items"]] == ["road-water-depth", "road-water-depth", "wim-overload"]
    row = board["items"][-1]
    assert row["value_text"] == "77.9 t" and row["clearable"] and row["rule_label"] == "车辆超限 vehicle overload"
    assert board["counts"]["wim"]["critical"] == 1
    only = client.get("/api/v1/board", headers=h, params={"kind": "wim", "acknowledged": False}).json()
    assert [i["device"] for i in only["items"]] == [wim.id] and only["all"] == 3
    # manual clear: needs a note, goes to the rule engine (alarm-ack action=clear), audited
    assert client.post(f"/api/v1/alarms/{tr.alarm_id}/clear", headers=h, json={"note": " "}).status_code == 400
    r = client.post(f"/api/v1/alarms/{tr.alarm_id}/clear", headers=h, json={"note": "truck unloaded at 路口"})
    assert r.status_code == 202
    assert env.acks.cleared == [(tr.alarm_id, wim.id, "duty", env.acks.cleared[0][3], "truck unloaded at 路口")]
    flood = board["items"][0]["alarm_id"]
    assert client.post(f"/api/v1/alarms/{flood}/clear", headers=h, json={"note": "x"}).status_code == 409
    audit = client.get("/api/v1/audit", headers=as_user("sup"), params={"object": f"alarm:{tr.alarm_id}"}).json()
    assert audit["chain_ok"] and [(e["action"], e["result"]) for e in audit["items"]] == [("alarm.clear", 202)]
    assert audit["items"][0]["detail"]["note"] == "truck unloaded at 路口"


def test_cockpit_kpis_by_role(client: TestClient, as_user: Auth) -> None:
    sup = client.get("/api/v1/cockpit", headers=as_user("sup")).json()
    assert sup["alarms_total"] == 2 and sup["devices"]["total"] == 16
    assert sup["cases"]["open"] >= 6 and sup["on_time"].keys() == {"today", "days30"}
    assert len(sup["gauges"]) >= 1 and sup["top"][0]["severity"] == "critical"
    handler = client.get("/api/v1/cockpit", headers=as_user("handler-a")).json()
    assert "on_time" not in handler  # no statistics permission
    assert all(c["unit_name"] for c in handler["cases"]["recent"])
    assert handler["cases"]["open"] < sup["cases"]["open"]  # only their unit's cases


def _mbtiles(path: Path, fmt: str = "png") -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
        db.executemany("INSERT INTO metadata VALUES (?, ?)", [("name", "test"), ("format", fmt)])
        db.execute("INSERT INTO tiles VALUES (1, 0, 1, ?)", (PNG,))  # TMS row 1 at z1 = XYZ y 0
    return path


def test_mbtiles_layer_gcj02_and_csp(tmp_path: Path) -> None:
    archive = _mbtiles(tmp_path / "city.mbtiles")
    settings = demo_settings(map={
        "district_geojson": str(DISTRICT),
        "base_layers": [{"kind": "mbtiles", "name": "本地 local", "path": str(archive), "gcj02": True}]})
    env = build_demo(str(tmp_path / "s"), now=time.time(), settings=settings)
    try:
        with TestClient(env.app) as c:
            tok = c.post("/api/v1/auth/login", json={"username": "duty", "password": "citywatch-demo"}).json()
            h = {"Authorization": f"Bearer {tok['access_token']}"}
            cfg = c.get("/api/v1/map/config", headers=h).json()
            assert cfg["datum"] == "gcj02" and cfg["base_layers"][0]["urls"] == ["/tiles/0/{z}/{x}/{y}"]
            r = c.get("/tiles/0/1/0/0", headers=h)
            assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
            assert c.get("/tiles/0/1/0/1", headers=h).status_code == 204  # not in the archive
            assert c.get("/tiles/0/1/5/0", headers=h).status_code == 404
            assert TestClient(env.app).get("/tiles/0/1/0/0").status_code == 401  # tiles need a login like the map
            row = c.get("/api/v1/map/devices", headers=h).json()["rows"][0]
            dev = next(d for d in env.demo.devices if d.id == row[0])
            assert dev.lat is not None and dev.lon is not None
            assert row[2:4] == [round(x, 6) for x in wgs84_to_gcj02(dev.lat, dev.lon)]  # shifted for the tiles
            street = next(f for f in c.get("/api/v1/map/district", headers=h).json()["features"]
                          if f["properties"]["layer"] == "street")
            assert street["geometry"]["coordinates"][0] != [120.128, 30.2655]  # the district shifted too
    finally:
        env.close()
    osm = {"kind": "xyz", "name": "osm", "url": "https://{s}.tile.example.org/{z}/{x}/{y}.png"}
    xyz = demo_settings(map={"base_layers": [osm]})
    env = build_demo(str(tmp_path / "x"), now=time.time(), settings=xyz)
    try:
        with TestClient(env.app) as c:
            csp = c.get("/login").headers["content-security-policy"]
            assert "img-src 'self' data: https://*.tile.example.org;" in csp and "script-src" not in csp
    finally:
        env.close()


def test_surveyed_device_address_wins(tmp_path: Path) -> None:
    """A ``layer: device`` point in the district file gives a device its surveyed street address."""
    doc = json.loads(DISTRICT.read_text(encoding="utf-8"))
    doc["features"].append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.13, 30.25]},
                            "properties": {"layer": "device", "device": "wl-0000", "address": "灵隐路 18 号下穿通道"}})
    path = tmp_path / "district.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    env = build_demo(str(tmp_path / "s"), now=time.time(), settings=demo_settings(map={"district_geojson": str(path)}))
    try:
        with TestClient(env.app) as c:
            tok = c.post("/api/v1/auth/login", json={"username": "duty", "password": "citywatch-demo"}).json()
            h = {"Authorization": f"Bearer {tok['access_token']}"}
            surveyed = c.get("/api/v1/map/devices/wl-0000", headers=h).json()["address"]
            assert surveyed.startswith("灵隐路 18 号下穿通道 · ")
            assert c.get("/api/v1/map/devices/wl-0004", headers=h).json()["address"] == "灵隐路 · 灵隐-2"  # streets
    finally:
        env.close()


def test_bad_map_files_stop_the_start(tmp_path: Path) -> None:
    """create_app reads the map files (load_map) before serving: a bad one names the key, not a blank map later."""
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Feature"}', encoding="utf-8")
    vector = _mbtiles(tmp_path / "v.mbtiles", "pbf")
    for m, needle in (({"district_geojson": str(bad)}, "district_geojson"),
                      ({"district_geojson": str(tmp_path / "missing.geojson")}, "cannot read"),
                      ({"base_layers": [{"kind": "mbtiles", "name": "v", "path": str(vector)}]}, "raster")):
        with pytest.raises(ConfigError, match=needle):
            load_map(MapSettings.model_validate(m))
