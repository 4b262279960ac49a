"""Pure parts of the one map and the alarm board: GCJ-02, addresses, board order, values, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from console.board import BoardFilter, counts_by_kind, incidents, priority_of
from console.config import DEFAULT_PRIORITY, ConsoleSettings, MapSettings, PriorityEntry
from console.geo import Street, in_china, street_address, wgs84_to_gcj02
from console.labels import alarm_value, fmt_value
from console.thresholds import for_device, load
from console.views import AlarmView, DeviceView

ROOT = Path(__file__).resolve().parents[3]

# googollee/eviltransform's published test points: (WGS-84 lat, lon) -> (GCJ-02 lat, lon)
GCJ_POINTS = [
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),  # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),  # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),  # Beijing
]


@pytest.mark.parametrize(("wgs", "gcj"), GCJ_POINTS)
def test_gcj02_known_points(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    lat, lon = wgs84_to_gcj02(*wgs)
    assert lat == pytest.approx(gcj[0], abs=1e-9) and lon == pytest.approx(gcj[1], abs=1e-9)


def test_gcj02_outside_china_is_unchanged() -> None:
    assert not in_china(51.5, -0.12)
    assert wgs84_to_gcj02(51.5, -0.12) == (51.5, -0.12)
    lat, lon = wgs84_to_gcj02(30.25, 120.15)  # Hangzhou: a few hundred metres
    assert 0.001 < abs(lat - 30.25) + abs(lon - 120.15) < 0.01


def test_street_address() -> None:
    streets = [Street("保俶路", [[120.15, 30.23], [120.15, 30.28]]),
               Street("灵隐路", [[120.12, 30.249], [120.18, 30.249]]), Street("远路", [[121.0, 31.0], [121.1, 31.0]])]
    assert street_address(30.2495, 120.1502, streets) == "保俶路近灵隐路"
    assert street_address(30.2600, 120.1502, streets) == "保俶路"  # 灵隐路 is over 1 km away
    assert street_address(40.0, 116.0, streets) == ""


def _alarm(aid: str, device: str, rule: str, sev: str, t: float, state: str = "active",
           value: float | None = None) -> AlarmView:
    return AlarmView(aid, device, rule, sev, state, t, t, value, "duty" if state == "acknowledged" else None)


DEVICES = {"wl-1": DeviceView("wl-1", "water_gauge", grid="g1"), "wl-2": DeviceView("wl-2", "water_gauge", grid="g2"),
           "wim-1": DeviceView("wim-1", "wim", grid="g1"), "mh-1": DeviceView("mh-1", "manhole", grid="g2")}


def test_board_puts_flood_first_and_groups_repeats() -> None:
    active = [
        _alarm("a1", "wim-1", "wim-overload", "critical", 100.0, value=77_900.0),
        _alarm("a2", "wim-1", "wim-overload", "major", 110.0, value=40_000.0),
        _alarm("a3", "mh-1", "manhole-tilt", "critical", 120.0),
        _alarm("a4", "wl-1", "road-water-depth", "minor", 50.0, value=0.17),
        _alarm("a5", "wl-2", "road-water-depth", "critical", 40.0, state="acknowledged", value=0.43),
        _alarm("a6", "wl-2", "road-water-rising", "major", 45.0),
    ]
    recent = [_alarm("old", "wl-1", "road-water-depth", "minor", 10.0, state="cleared")]
    items = incidents(active, recent, DEVICES, DEFAULT_PRIORITY)
    assert [(i.device, i.rule) for i in items] == [
        ("wl-2", "road-water-depth"),  # flood critical, even acknowledged
        ("wl-2", "road-water-rising"), ("wl-1", "road-water-depth"),  # then the rest of the flood
        ("mh-1", "manhole-tilt"), ("wim-1", "wim-overload"),  # other criticals: newest first
    ]
    wim = items[-1]
    assert wim.repeats == 2 and wim.severity == "critical" and wim.alarm_id == "a2"  # one row, the newest alarm
    assert items[2].repeats == 2  # a cleared alarm of the same condition in the window counts as a repeat
    assert counts_by_kind(items) == {"water_gauge": {"critical": 1, "major": 1, "minor": 1},
                                     "manhole": {"critical": 1, "major": 0, "minor": 0},
                                     "wim": {"critical": 1, "major": 0, "minor": 0}}
    assert [i.device for i in items if BoardFilter(grid="g2", acknowledged=False).keep(i)] == ["wl-2", "mh-1"]
    assert [i.rule for i in items if BoardFilter(kind="wim").keep(i)] == ["wim-overload"]


def test_board_priority_is_configurable() -> None:
    wim_first = (PriorityEntry(rule="wim-*"),)
    active = [_alarm("a", "wl-1", "road-water-depth", "critical", 1.0),
              _alarm("b", "wim-1", "wim-overload", "minor", 2.0)]
    assert [i.rule for i in incidents(active, [], DEVICES, wim_first)] == ["wim-overload", "road-water-depth"]
    assert priority_of(DEFAULT_PRIORITY, "lampFailure", "minor") == len(DEFAULT_PRIORITY)  # unmatched: last


def test_values_for_people() -> None:
    assert alarm_value("wim-overload", 77_900.0) == "77.9 t"
    assert alarm_value("road-water-depth", 0.31234) == "0.31 m"
    assert alarm_value("road-water-rising", 0.1234) == "0.12 m/h"
    assert alarm_value("manhole-tilt", 28.04) == "28.0°"
    assert alarm_value("manhole-cover-open", 1.0) == "—"
    assert fmt_value(123_456.0, "W") == "123 456 W"
    assert fmt_value(None, "m") == "—"
    assert "e+" not in alarm_value("wim-overload", 1e9)


def test_map_settings_are_validated() -> None:
    ok = MapSettings.model_validate({"base_layers": [
        {"kind": "tianditu", "key": "0123456789abcdef"},
        {"kind": "xyz", "name": "osm", "url": "https://{s}.tile.example.org/{z}/{x}/{y}.png"}]})
    assert not ok.gcj02
    for bad in ({"base_layers": [{"kind": "xyz", "name": "a", "url": "https://t/{z}/{x}.png"}]},
                {"base_layers": [{"kind": "wms", "name": "a"}]},
                {"base_layers": [{"kind": "tianditu", "key": "0123456789", "colour": "red"}]},
                {"base_layers": [{"kind": "xyz", "name": "a", "url": "https://a/{z}/{x}/{y}", "gcj02": True},
                                 {"kind": "tianditu", "key": "0123456789"}]},  # two datums
                {"zoom": 40}, {"centre": [30, 120]}):
        with pytest.raises(ValidationError):
            MapSettings.model_validate(bad)
    with pytest.raises(ValidationError):
        ConsoleSettings.model_validate({"secret_key": "x" * 32, "board": {"priority": [{"rule": "a", "sev": "x"}]}})


def test_chart_thresholds_come_from_the_rule_files() -> None:
    rules = load([ROOT / "configs/rules/default.yaml"])
    plain = {(t.rule, t.severity): t.value for t in for_device(rules, DeviceView("wl-0001", "water_gauge"))}
    assert plain[("road-water-depth", "critical")] == 0.40 and plain[("road-water-rising", "major")] == 0.10
    # the underpass gauge's override: its own levels, datum offset taken back out
    under = {(t.rule, t.severity): t.value for t in for_device(rules, DeviceView("wl-0002", "water_gauge"))}
    assert under[("road-water-depth", "critical")] == pytest.approx(0.28)
    assert {t.rule for t in for_device(rules, DeviceView("mh-1", "manhole"))} >= {"manhole-tilt"}


def test_base_layer_urls_and_csp_origins() -> None:
    from console.onemap import _layers_json, tile_sources

    m = MapSettings.model_validate({"base_layers": [
        {"kind": "tianditu", "key": "abcdef0123456789", "layer": "img"},
        {"kind": "xyz", "name": "osm", "url": "https://{s}.tile.example.org/{z}/{x}/{y}.png", "attribution": "© OSM"},
        {"kind": "mbtiles", "name": "离线", "path": "/srv/city.mbtiles"}]})
    layers = _layers_json(m)
    img, cia = layers[0]["urls"]
    assert "LAYER=img" in img and "LAYER=cia" in cia and img.endswith("tk=abcdef0123456789")
    assert "TILEMATRIX={z}&TILEROW={y}&TILECOL={x}" in img and layers[0]["subdomains"] == "01234567"
    assert layers[1]["urls"] == ["https://{s}.tile.example.org/{z}/{x}/{y}.png"]
    assert layers[2]["urls"] == ["/tiles/2/{z}/{x}/{y}"]
    assert tile_sources(m) == ["https://*.tianditu.gov.cn", "https://*.tile.example.org"]
