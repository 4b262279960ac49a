"""The demo district (``configs/sim/demo.yaml``) as code, so it can be regenerated and checked.

``python -m firmware_sim.demo > configs/sim/demo.yaml`` rewrites the file; a unit test checks
that the file on disk still equals this output and has the promised contents.

West Lake district around 30.25 N 120.15 E: 22 road-water gauges (peaks spread below and
above the 0.15 / 0.25 / 0.40 m thresholds, a few staying dry), 20 manhole covers (two lifted
and re-seated, one flipped over, two with water under them), 40 lamps on four circuits (an
underpass circuit burning day and night, a supply outage on another, burnt-out and
day-burning lamps) and two WIM lanes on a bridge, spread over four gateways.
"""

from __future__ import annotations

from typing import Any

import yaml

from firmware_sim.district import grid_at
from firmware_sim.physics import unit_uniform

SEED = 20260701
COUNTY = "330106"  # 西湖区
GRIDS = ("330106001001", "330106001002", "330106002001")

# peak depth (m) of each gauge: dry, below 0.15, 0.15–0.25, 0.25–0.40, above 0.40
GAUGE_PEAKS = (
    0.0, 0.0, 0.06, 0.09, 0.12, 0.14,
    0.17, 0.19, 0.21, 0.23, 0.245,
    0.27, 0.30, 0.33, 0.36, 0.385,
    0.43, 0.47, 0.52, 0.61, 0.11, 0.28,
)  # fmt: skip

COVER_MINORS = (
    ("01", "water-supply"), ("02", "drainage"), ("03", "drainage"),
    ("05", "power-grid"), ("07", "telecom"), ("11", "gas"),
)  # fmt: skip


def _where(key: str) -> tuple[float, float, str]:
    """A device's place and the demo grid polygon it stands in (firmware_sim.district)."""
    lat = round(30.240 + 0.030 * unit_uniform(SEED, key + "/lat"), 5)
    lon = round(120.130 + 0.040 * unit_uniform(SEED, key + "/lon"), 5)
    grid = grid_at(lat, lon)
    assert grid in GRIDS, f"{key} at {lat}, {lon} is outside the demo grids"
    return lat, lon, grid


def _component(major: str, minor: str, serial: int) -> str:
    return f"{COUNTY}{major}{minor}{serial:06d}"


def demo_config() -> dict[str, Any]:
    buses: list[dict[str, Any]] = [
        {"id": "rs485-gauges-1", "gateway": "gw-xihu-01", "transport": "rtu", "baudrate": 9600},
        {"id": "rs485-covers-1", "gateway": "gw-xihu-01", "transport": "rtu", "baudrate": 9600},
        {"id": "rs485-gauges-2", "gateway": "gw-xihu-02", "transport": "rtu", "baudrate": 19200},
        {"id": "tcp-covers-2", "gateway": "gw-xihu-02", "transport": "tcp"},
        {"id": "tcp-lamps-1", "gateway": "gw-lamps-01", "transport": "tcp"},
        {"id": "tcp-lamps-2", "gateway": "gw-lamps-01", "transport": "tcp"},
        {"id": "tcp-wim", "gateway": "gw-bridge-01", "transport": "tcp"},
    ]
    devices: list[dict[str, Any]] = []
    # ---- water gauges: 12 on gateway 1, 10 on gateway 2; every fourth one is the int32 variant
    for i, peak in enumerate(GAUGE_PEAKS, start=1):
        did = f"wl-{i:04d}"
        lat, lon, grid = _where(did)
        underpass = i % 3 == 0
        i32 = i % 4 == 0
        dev: dict[str, Any] = {
            "id": did,
            "profile": "water_gauge_i32" if i32 else "water_gauge",
            "bus": "rs485-gauges-1" if i <= 12 else "rs485-gauges-2",
            "unit": i if i <= 12 else i - 12,
            "lat": lat,
            "lon": lon,
            "grid": grid,
            "component_id": _component("02", "06", i) if underpass else _component("01", "04", i),
            "owner": "drainage",
            "scenario": {
                "role": "water_gauge",
                "peak_m": peak,
                "lag_s": round(600 * unit_uniform(SEED, did + "/lag")),
                "rise_s": round(600 + 600 * unit_uniform(SEED, did + "/rise")),
                "install_height_m": 2.5 if underpass else 3.0,
            },
        }
        if i32:
            dev["word_order"] = "CDAB"
        devices.append(dev)
    # ---- manhole covers
    for i in range(1, 21):
        did = f"mh-{i:04d}"
        lat, lon, grid = _where(did)
        minor, owner = COVER_MINORS[i % len(COVER_MINORS)]
        scenario: dict[str, Any] = {"role": "manhole"}
        if i == 3:
            scenario["lift"] = {"lift_s": 300, "reseat_s": 900, "tilt_deg": 28}
        elif i == 8:
            scenario["lift"] = {"lift_s": 1200, "reseat_s": 1500, "tilt_deg": 15}
        elif i == 14:
            scenario["lift"] = {"lift_s": 700, "reseat_s": 2400, "tilt_deg": 120}  # flipped over
        if i in (5, 17):
            scenario["water_under"] = [{"start_s": 600, "end_s": 2400}]
        devices.append(
            {
                "id": did,
                "profile": "manhole",
                "bus": "rs485-covers-1" if i <= 10 else "tcp-covers-2",
                "unit": i if i <= 10 else i - 10 + 20,
                "lat": lat,
                "lon": lon,
                "grid": grid,
                "component_id": _component("01", minor, i),
                "owner": owner,
                "scenario": scenario,
            }
        )
    # ---- lamps: c-xihu-01..04, ten each; c-xihu-03 lights an underpass day and night
    for i in range(1, 41):
        did = f"lamp-{i:04d}"
        lat, lon, grid = _where(did)
        circuit = f"c-xihu-{(i - 1) // 10 + 1:02d}"
        scenario = {"role": "lamp", "rated_w": 120 if circuit != "c-xihu-03" else 60}
        if circuit == "c-xihu-03":
            scenario["schedule"] = "always_on"
        if i in (7, 23):
            scenario["fault"] = "burnt_out"
            scenario["fault_from_s"] = 400 if i == 7 else 0
        if i in (15, 36):
            scenario["fault"] = "day_burning"
        dev = {
            "id": did,
            "profile": "lamp",
            "bus": "tcp-lamps-1" if i <= 20 else "tcp-lamps-2",
            "unit": (i - 1) % 20 + 1,
            "lat": lat,
            "lon": lon,
            "grid": grid,
            "component_id": _component("01", "18", i),
            "owner": "street-lighting",
            "circuit": circuit,
            "scenario": scenario,
        }
        if circuit == "c-xihu-04":
            dev["word_order"] = "ABCD"  # the other vendor's controllers
        devices.append(dev)
    # ---- two WIM lanes on the bridge
    for lane in (1, 2):
        did = f"wim-{lane:04d}"
        lat, lon, grid = _where("wim-bridge")
        devices.append(
            {
                "id": did,
                "profile": "wim",
                "bus": "tcp-wim",
                "unit": lane,
                "lat": lat,
                "lon": round(lon + 0.0001 * lane, 5),
                "grid": grid,
                "component_id": _component("02", "08", lane),
                "owner": "bridges",
                "scenario": {
                    "role": "wim",
                    "lane": lane,
                    "mean_headway_s": 20 if lane == 1 else 35,
                    "overload_fraction": 0.15,
                },
            }
        )
    return {
        "seed": SEED,
        "clock": {"speed": 4.0, "start_local_hour": None, "tz_offset_h": 8},
        "storm": {"start_s": 120},
        "repeat_s": 7200,
        "outages": [{"circuit": "c-xihu-02", "start_s": 900, "end_s": 1800}],
        "buses": buses,
        "devices": devices,
    }


HEADER = """\
# The demo district for `citywatch sim -c configs/sim/demo.yaml` and `citywatch up`.
# Generated by `python -m firmware_sim.demo > configs/sim/demo.yaml` (edit firmware_sim/demo.py,
# not this file; tests/unit/firmware_sim checks the two agree).
#
# Times (`*_s`) are simulated seconds since the simulator started; clock.speed runs simulated
# time faster than the wall clock (x4: the storm peaks 5-10 minutes into the demo). The script
# (storm, cover lifts, water under covers, the circuit outage) repeats every repeat_s (7200 s,
# 30 wall minutes at x4), so a demo left running keeps producing alarms.
# clock.start_local_hour null: the lamp schedule follows the local (UTC+8) wall time of day.
"""


def render() -> str:
    return HEADER + yaml.safe_dump(demo_config(), sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    print(render(), end="")
