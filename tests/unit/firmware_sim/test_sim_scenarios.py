"""Scenarios: device values as functions of simulated time, the demo district, commands and reboots."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import ConfigError
from firmware_sim.config import SimConfig, load_sim_config, parse_sim_config
from firmware_sim.demo import render
from firmware_sim.physics import GROSS_LIMIT_KG
from firmware_sim.scenarios import History, Scenario, expected_metrics, scenario_values
from gateway import profiles

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs" / "sim" / "demo.yaml"

SMALL = """
seed: 7
clock: {speed: 0, start_local_hour: 12.0}
storm: {start_s: 100}
outages: [{circuit: c-1, start_s: 1000, end_s: 2000}]
buses:
  - {id: rtu-1, gateway: gw-1, transport: rtu}
  - {id: tcp-1, gateway: gw-1, transport: tcp}
devices:
  - {id: wl-1, profile: water_gauge, bus: rtu-1, unit: 1,
     scenario: {role: water_gauge, peak_m: 0.3, lag_s: 100, rise_s: 600}}
  - {id: wl-2, profile: water_gauge_i32, bus: rtu-1, unit: 2, word_order: CDAB,
     scenario: {role: water_gauge, peak_m: 0.1, rise_s: 600, noise_m: 0}}
  - {id: mh-1, profile: manhole, bus: rtu-1, unit: 3,
     scenario: {role: manhole, lift: {lift_s: 300, reseat_s: 600, tilt_deg: 20}}}
  - {id: lamp-1, profile: lamp, bus: tcp-1, unit: 1, circuit: c-1, scenario: {role: lamp}}
  - {id: lamp-2, profile: lamp, bus: tcp-1, unit: 2, circuit: c-1,
     scenario: {role: lamp, fault: burnt_out, fault_from_s: 0, schedule: always_on}}
  - {id: lamp-3, profile: lamp, bus: tcp-1, unit: 3, circuit: c-2, scenario: {role: lamp, fault: day_burning}}
  - {id: wim-1, profile: wim, bus: tcp-1, unit: 9,
     scenario: {role: wim, lane: 1, mean_headway_s: 10, overload_fraction: 0.3}}
"""


@pytest.fixture
def cfg() -> SimConfig:
    return parse_sim_config(SMALL, "small.yaml")


# ---------------------------------------------------------------- config


def test_demo_file_is_the_generator_output() -> None:
    assert DEMO.read_text(encoding="utf-8") == render(), "run: python -m firmware_sim.demo > configs/sim/demo.yaml"


def test_demo_district_contents() -> None:
    cfg = load_sim_config(DEMO)
    kinds = [d.kind for d in cfg.devices]
    assert kinds.count("water_gauge") >= 20
    assert kinds.count("manhole") == 20
    assert kinds.count("lamp") == 40
    assert kinds.count("wim") == 2
    lamps = [d for d in cfg.devices if d.kind == "lamp"]
    assert len({d.circuit for d in lamps}) >= 3
    assert len(cfg.gateways()) >= 3
    assert {b.transport for b in cfg.buses} == {"tcp", "rtu"}
    for d in cfg.devices:
        assert d.lat is not None and abs(d.lat - 30.25) < 0.05
        assert d.lon is not None and abs(d.lon - 120.15) < 0.05
        assert d.grid and d.owner
        assert d.component_id is not None and d.component_id.startswith("330106")
        assert d.component_id[6:8] in ("01", "02")
    # peaks on both sides of each road-water threshold
    peaks = [d.scenario.peak_m for d in cfg.devices if d.scenario.role == "water_gauge"]
    for lo, hi in ((0.0, 0.15), (0.15, 0.25), (0.25, 0.40), (0.40, 9.0)):
        assert sum(lo < p <= hi for p in peaks) >= 3, (lo, hi)
    assert any(p == 0.0 for p in peaks)


def test_demo_peaks_are_reached_in_the_scenario() -> None:
    cfg = load_sim_config(DEMO)
    sc = Scenario(cfg)
    above = {0.15: 0, 0.25: 0, 0.40: 0}
    for d in cfg.devices:
        if d.kind != "water_gauge":
            continue
        h = sc.hydrograph(d.id)
        depth = sc.values(d.id, h.peak_time_s)["depth"]
        assert depth == pytest.approx(h.peak_m, abs=0.01)
        for th in above:
            above[th] += depth > th
    assert above[0.15] > above[0.25] > above[0.40] >= 3


def test_config_errors_name_the_key(cfg: SimConfig) -> None:
    bad = SMALL.replace("profile: manhole", "profile: lamp")
    with pytest.raises(ConfigError) as err:
        parse_sim_config(bad, "bad.yaml")
    assert "bad.yaml" in str(err.value) and "devices[2]" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_sim_config(SMALL.replace("seed: 7", "seed: 7\nsped: 3"), "bad.yaml")
    with pytest.raises(ConfigError, match="unit 2 already used"):
        parse_sim_config(SMALL.replace("unit: 3,", "unit: 2,"), "bad.yaml")


# ---------------------------------------------------------------- values


def test_values_cover_every_profile_field_and_encode(cfg: SimConfig) -> None:
    from gateway.registers import encode_image

    sc = Scenario(cfg)
    for d in cfg.devices:
        profile = profiles.get(d.profile)
        for t in (0.0, 500.0, 1500.0, 5000.0):
            values = sc.values(d.id, t)
            assert set(values) == {f.name for f in profile.fields}, d.id
            encode_image(profile, values, d.word_order)  # representable in the registers


def test_gauge_follows_the_storm_and_is_deterministic(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    h = sc.hydrograph("wl-1")
    assert h.onset_s == 200.0
    assert sc.values("wl-1", 150.0)["depth"] <= 0.002
    peak = sc.values("wl-1", h.peak_time_s)
    assert peak["depth"] == pytest.approx(0.3, abs=0.003)
    assert peak["distance"] == pytest.approx(3.0 - peak["depth"], abs=1e-9)
    assert scenario_values(cfg, "wl-1", 555.0) == Scenario(cfg).values("wl-1", 555.0)
    other_seed = parse_sim_config(SMALL.replace("seed: 7", "seed: 8"), "s.yaml")
    runs = [scenario_values(other_seed, "wl-1", float(t))["depth"] for t in range(300, 340)]
    assert runs != [scenario_values(cfg, "wl-1", float(t))["depth"] for t in range(300, 340)]
    m = expected_metrics(cfg, "wl-2", 700.0)
    assert m["depth"] == pytest.approx(0.1, abs=0.001)  # noise 0
    assert set(m) == {"depth", "distance", "install_height", "battery", "status"}


def test_cover_lift_metrics(cfg: SimConfig) -> None:
    tilt = [expected_metrics(cfg, "mh-1", t)["tilt"] for t in (100.0, 400.0, 800.0)]
    assert tilt[0] < 1.0 and tilt[1] > 10.0 and tilt[2] < 1.0
    assert expected_metrics(cfg, "mh-1", 400.0)["cover_open"] == 1.0
    assert expected_metrics(cfg, "mh-1", 800.0)["cover_open"] == 0.0
    bg = expected_metrics(cfg, "mh-1", 0.0)["background_tilt"]
    assert 0.9 < bg < 2.0


def test_lamps_day_night_burnt_out_day_burning_outage(cfg: SimConfig) -> None:
    sc = Scenario(cfg)  # starts at noon local time
    day = sc.values("lamp-1", 100.0)
    assert day["relay"] == 0.0 and day["current"] == 0.0
    night = sc.values("lamp-1", 8 * 3600.0)  # 20:00
    assert night["relay"] == 1.0 and night["power"] == pytest.approx(120.0) and night["current"] > 0.5
    burnt = sc.values("lamp-2", 100.0)
    assert burnt["relay"] == 1.0 and burnt["current"] < 0.02 and burnt["status"] == 1.0
    day_burning = sc.values("lamp-3", 100.0)
    assert day_burning["relay"] == 1.0 and day_burning["power"] > 100.0
    outage = sc.values("lamp-2", 1500.0)
    assert outage["voltage"] == 0.0 and outage["current"] == 0.0
    assert sc.values("lamp-3", 1500.0)["voltage"] > 200.0  # other circuit keeps its supply


def test_lamp_energy_is_the_integral_of_power(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    e0 = sc.values("lamp-3", 0.0)["energy"]
    e1 = sc.values("lamp-3", 3600.0)["energy"]  # day-burning: 120 W all hour
    assert e1 - e0 == pytest.approx(0.120, abs=1e-3)
    r0 = sc.values("lamp-1", 6 * 3600.0 + 1)["run_hours"]  # 18:00: lamp 1 switches on
    r1 = sc.values("lamp-1", 6 * 3600.0 + 3 * 3600.0 + 10)["run_hours"]
    assert r1 - r0 in (2.0, 3.0)


def test_lamp_commands_and_reboot(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    h = History()
    t_night = 8 * 3600.0
    h.writes.append((t_night, "dim_level", 50.0))
    dimmed = sc.values("lamp-1", t_night + 10, h)
    assert dimmed["dim_level"] == 50.0 and dimmed["power"] == pytest.approx(60.0)
    h.writes.append((t_night + 20, "relay", 0.0))
    off = sc.values("lamp-1", t_night + 30, h)
    assert off["relay"] == 0.0 and off["current"] == 0.0 and off["power"] == 0.0
    # the manual "off" holds until the schedule's next switch (06:00), then the schedule rules again
    assert sc.values("lamp-1", t_night + 9 * 3600.0, h)["relay"] == 0.0
    assert sc.values("lamp-1", t_night + 23 * 3600.0, h)["relay"] == 1.0  # next evening
    # energy stops growing while switched off
    e_a = sc.values("lamp-1", t_night + 100, h)["energy"]
    e_b = sc.values("lamp-1", t_night + 3000, h)["energy"]
    assert e_b == e_a
    # a reboot forgets commands and restarts run hours
    before = sc.values("lamp-1", t_night + 3600, h)["run_hours"]
    h.boots.append(t_night + 3600)
    after = sc.values("lamp-1", t_night + 3610, h)
    assert before > 100 and after["run_hours"] == 0.0
    assert after["relay"] == 1.0 and after["dim_level"] == 100.0


def test_wim_counter_records_and_reboot(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    vehicles = sc.vehicles("wim-1", 3600.0)
    assert sc.values("wim-1", 3600.0)["record_count"] == len(vehicles)
    records = sc.wim_records("wim-1", 3600.0)
    assert len(records) == 16
    assert [r.record_no for r in records] == list(range(len(vehicles) - 15, len(vehicles) + 1))
    last, v = records[-1], vehicles[-1]
    assert last.gross_kg == v.gross_kg and last.axle_kg == tuple(float(a) for a in v.axle_kg)
    assert last.ts == pytest.approx(sc.start_unix + v.t, abs=0.001)
    overloaded = [x for x in vehicles if x.gross_kg > GROSS_LIMIT_KG[min(x.axles, 6)]]
    assert 0.2 < len(overloaded) / len(vehicles) < 0.4
    h = History(boots=[3600.0])
    assert sc.values("wim-1", 3600.0, h)["record_count"] == 0.0
    after = sc.values("wim-1", 4200.0, h)["record_count"]
    assert after == len(sc.vehicles("wim-1", 4200.0)) - len(vehicles)
    ring = sc.wim_records("wim-1", 4200.0, h)
    assert [r.record_no for r in ring] == list(range(max(1, int(after) - 15), int(after) + 1))
    assert ring[-1].gross_kg == sc.vehicles("wim-1", 4200.0)[-1].gross_kg


def test_writes_to_configuration_fields_persist(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    h = History(writes=[(10.0, "install_height", 2.9)])
    v = sc.values("wl-1", 20.0, h)
    # the radar still measures 3.0 m to a dry road; the wrong height shows up in the computed depth
    assert v["install_height"] == 2.9
    assert v["depth"] == pytest.approx(2.9 - v["distance"])


def test_firmware_sim_imports_no_cloud_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, firmware_sim, firmware_sim.cli, firmware_sim.server\n"
        "bad = {'cloud_ingest', 'rules', 'case_bridge', 'console', 'edge_agent', 'psycopg', 'fastapi', 'paho'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sim").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sim_config_loads_and_evaluates(path: Path) -> None:
    cfg = load_sim_config(path)
    sc = Scenario(cfg)
    for d in cfg.devices:
        assert sc.metrics(d.id, 600.0)


def test_expected_readings_and_vehicle_events(cfg: SimConfig) -> None:
    sc = Scenario(cfg)
    readings = sc.readings("wl-1", 500.0)
    assert {r.metric for r in readings} == {"depth", "distance", "install_height", "battery", "status"}
    assert all(r.ts == sc.start_unix + 500.0 and r.device == "wl-1" for r in readings)
    assert next(r for r in readings if r.metric == "depth").unit == "m"
    events = sc.vehicle_events("wim-1", 0.0, 600.0)
    vehicles = sc.vehicles("wim-1", 600.0)
    assert len(events) == len(vehicles)
    first = events[0]
    assert first.kind == "vehicle" and first.id == f"1-{round(first.ts * 1000)}"
    assert first.body["gross_kg"] == vehicles[0].gross_kg and first.body["axles"] == vehicles[0].axles
    # after a reboot at 300 s the record numbers start again at 1
    h = History(boots=[300.0])
    after = [e for e in sc.vehicle_events("wim-1", 300.0, 600.0, h)]
    assert after and after[0].id.startswith("1-")


def test_repeated_script() -> None:
    text = SMALL.replace("seed: 7", "seed: 7\nrepeat_s: 5000")
    cfg = parse_sim_config(text, "r.yaml")
    sc = Scenario(cfg)
    h = sc.hydrograph("wl-1")
    first = sc.values("wl-1", h.peak_time_s)["depth"]
    second = sc.values("wl-1", h.peak_time_s + 5000)["depth"]
    assert first == pytest.approx(second, abs=0.005)
    assert sc.values("mh-1", 5400.0)["cover_open"] == 1.0  # lifted again in the second cycle
    assert sc.values("lamp-1", 6500.0)["voltage"] == 0.0  # the outage comes back too
    e0 = sc.values("lamp-3", 0.0)["energy"]
    assert sc.values("lamp-3", 10000.0)["energy"] > e0  # lamp 3 is on circuit c-2 (no outage)
    with pytest.raises(ConfigError, match="repeat_s"):
        parse_sim_config(SMALL.replace("seed: 7", "seed: 7\nrepeat_s: 500"), "r.yaml")
