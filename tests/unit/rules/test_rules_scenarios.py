"""The simulator's scenarios (storm, cover lift, lamps, trucks) through the default rules.

Readings come from ``firmware_sim.scenarios.Scenario`` — the same physics the simulated
devices serve over Modbus — sampled every ``POLL_S`` as a gateway would; each scenario must
produce exactly the expected alarms, with the expected severities and times (within one poll
plus the sensor noise's effect at a threshold crossing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from contracts.alarms import AlarmTransition
from contracts.reading import DeviceInfo, Event, Reading
from rules.backtest import backtest, history_from_readings
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import load_rules, parse_rules

firmware_sim = pytest.importorskip("firmware_sim.scenarios")
from firmware_sim.config import parse_sim_config  # noqa: E402
from firmware_sim.scenarios import Scenario  # noqa: E402

NOON_CST = 1_764_561_600.0  # 2025-12-01 04:00 UTC = 12:00 in Hangzhou
NIGHT_CST = NOON_CST + 10 * 3600  # 22:00
RULES = load_rules([Path(__file__).resolve().parents[3] / "configs" / "rules" / "default.yaml"])

SIM = """
seed: 7
clock: {speed: 1.0, start_unix: %(start)s, tz_offset_h: 8}
storm: {start_s: 60}
buses:
  - {id: rs485-1, gateway: gw-sim, transport: rtu, baudrate: 9600}
  - {id: tcp-1, gateway: gw-sim, transport: tcp}
devices:
  - {id: wl-0001, profile: water_gauge, bus: rs485-1, unit: 1, lat: 30.2741, lon: 120.1551,
     scenario: {role: water_gauge, peak_m: 0.32, lag_s: 0, rise_s: 900, install_height_m: 2.5}}
  - {id: wl-0002, profile: water_gauge, bus: rs485-1, unit: 2, lat: 30.2760, lon: 120.1602,
     scenario: {role: water_gauge, peak_m: 0.05, lag_s: 300, rise_s: 3600}}
  - {id: mh-0001, profile: manhole, bus: rs485-1, unit: 7, lat: 30.2745, lon: 120.1560,
     scenario: {role: manhole, lift: {lift_s: 300, reseat_s: 900, tilt_deg: 25}}}
  - {id: mh-0002, profile: manhole, bus: rs485-1, unit: 8, lat: 30.2745, lon: 120.1560,
     scenario: {role: manhole, lift: {lift_s: 300, reseat_s: 900, tilt_deg: 120}}}
  - {id: lamp-0001, profile: lamp, bus: tcp-1, unit: 1, lat: 30.2750, lon: 120.1570, circuit: c-1,
     scenario: {role: lamp, fault: burnt_out, schedule: always_on}}
  - {id: lamp-0002, profile: lamp, bus: tcp-1, unit: 2, lat: 30.2752, lon: 120.1574, circuit: c-1,
     scenario: {role: lamp, fault: day_burning}}
  - {id: lamp-0003, profile: lamp, bus: tcp-1, unit: 3, lat: 30.2752, lon: 120.1574, circuit: c-1,
     scenario: {role: lamp}}
  - {id: wim-0001, profile: wim, bus: tcp-1, unit: 10, lat: 30.2801, lon: 120.1633,
     scenario: {role: wim, lane: 1, mean_headway_s: 20, overload_fraction: 0.2}}
"""


def _scenario(start: float) -> Scenario:
    return Scenario(parse_sim_config(SIM % {"start": start}, "sim.yaml"))


def _infos(sc: Scenario, poll_s: float) -> tuple[DeviceInfo, ...]:
    return tuple(
        DeviceInfo(d.id, d.profile, d.kind, lat=d.lat, lon=d.lon, circuit=d.circuit, interval_s=poll_s)
        for d in sc.config.devices
    )


def _poll(sc: Scenario, devices: Sequence[str], end_s: float, poll_s: float) -> list[Reading]:
    out: list[Reading] = []
    t = 0.0
    while t <= end_s:
        for dev in devices:
            out.extend(sc.readings(dev, t))
        t += poll_s
    return out


def _live(sc: Scenario, inputs: Sequence[Reading | Event], poll_s: float) -> list[AlarmTransition]:
    rs = RuleSet(RULES)
    st = EngineState(next_tick_t=float("inf"))  # no silence checks: these scenarios are about values
    st, out = evaluate(rs, st, [GatewayStatus("gw-sim", "online", sc.start_unix, _infos(sc, poll_s))], 0.0)
    # feed in gateway-sized batches, in time order
    ordered = sorted(inputs, key=lambda x: x.ts)
    for i in range(0, len(ordered), 37):
        st, trs = evaluate(rs, st, ordered[i : i + 37], 0.0)
        out.extend(trs)
    return out


def _got(trs: Sequence[AlarmTransition], device: str, t0: float) -> list[tuple[str, str, str, float]]:
    return [(tr.rule, tr.kind.value, tr.severity.value, tr.t - t0) for tr in trs if tr.device == device]


Row = tuple[str, str, str, float]


def _near(got: Sequence[Row], want: Sequence[Row], tol_s: float) -> None:
    assert [g[:3] for g in got] == [w[:3] for w in want], got
    for g, w in zip(got, want, strict=True):
        assert abs(g[3] - w[3]) <= tol_s, (g, w)


def test_storm_gives_early_warning_then_minor_major_and_back() -> None:
    poll = 10.0
    sc = _scenario(NOON_CST)
    h = sc.hydrograph("wl-0001")
    up15, down13 = h.time_above_s(0.15) or (0, 0)
    up25, _ = h.time_above_s(0.25) or (0, 0)
    _, down22 = h.time_above_s(0.22) or (0, 0)  # major clears below 0.25 - 0.03
    _, down13 = h.time_above_s(0.13) or (0, 0)  # minor clears below 0.15 - 0.02
    end = down13 + 900
    trs = _live(sc, _poll(sc, ["wl-0001", "wl-0002"], end, poll), poll)
    got = _got(trs, "wl-0001", sc.start_unix)
    depth = [g for g in got if g[0] == "road-water-depth"]
    rate = [g for g in got if g[0] == "road-water-rising"]
    _near(
        depth,
        [
            ("road-water-depth", "raised", "minor", up15 + 60),
            ("road-water-depth", "escalated", "major", up25 + 60),
            ("road-water-depth", "de-escalated", "minor", down22 + 300),
            ("road-water-depth", "cleared", "minor", down13 + 300),
        ],
        tol_s=3 * poll,
    )
    # the rate warning comes first, well before the minor threshold
    assert [g[1] for g in rate] == ["raised", "cleared"]
    assert rate[0][2] == "major" and rate[0][3] < depth[0][3] - 120
    # a 5 cm puddle rising over an hour stays quiet (0.05 m/h < 0.10 m/h)
    assert _got(trs, "wl-0002", sc.start_unix) == []


def test_cover_lift_raises_tilt_and_cover_open_and_90_degrees_is_critical() -> None:
    poll = 5.0
    sc = _scenario(NOON_CST)
    trs = _live(sc, _poll(sc, ["mh-0001", "mh-0002"], 1200, poll), poll)
    _near(
        _got(trs, "mh-0001", sc.start_unix),
        [
            ("manhole-cover-open", "raised", "critical", 300),
            ("manhole-tilt", "raised", "major", 302),
            ("manhole-cover-open", "cleared", "critical", 960),
            ("manhole-tilt", "cleared", "major", 960),
        ],
        tol_s=poll,
    )
    got2 = _got(trs, "mh-0002", sc.start_unix)
    assert ("manhole-tilt", "raised", "critical") in [g[:3] for g in got2]  # 120° > 90°: critical at once


def test_lamps_burnt_out_and_day_burning_at_noon_dark_at_night() -> None:
    poll = 60.0
    sc = _scenario(NOON_CST)
    trs = _live(sc, _poll(sc, ["lamp-0001", "lamp-0002", "lamp-0003"], 1800, poll), poll)
    _near(_got(trs, "lamp-0001", sc.start_unix), [("lampFailure", "raised", "major", 120)], tol_s=poll)
    _near(_got(trs, "lamp-0002", sc.start_unix), [("lampUnexpectedOn", "raised", "minor", 600)], tol_s=poll)
    assert _got(trs, "lamp-0003", sc.start_unix) == []  # a healthy lamp, off at noon
    # at night the healthy lamp is on (no alarm); the burnt-out one still fails
    sc = _scenario(NIGHT_CST)
    trs = _live(sc, _poll(sc, ["lamp-0001", "lamp-0003"], 1800, poll), poll)
    assert [g[:2] for g in _got(trs, "lamp-0001", sc.start_unix)] == [("lampFailure", "raised")]
    assert _got(trs, "lamp-0003", sc.start_unix) == []


def test_lamp_switched_off_at_night_is_dark() -> None:
    poll = 60.0
    sc = _scenario(NIGHT_CST)
    reads = [r for r in _poll(sc, ["lamp-0003"], 1800, poll) if r.metric != "relay"]
    reads += [Reading("lamp-0003", "relay", r.ts, 0.0) for r in reads if r.metric == "current"]  # forced off
    trs = _live(sc, reads, poll)
    assert [g[:3] for g in _got(trs, "lamp-0003", sc.start_unix)] == [("lampDarkAtNight", "raised", "major")]


def test_trucks_every_overload_is_one_alarm_with_its_record() -> None:
    sc = _scenario(NOON_CST)
    events = sc.vehicle_events("wim-0001", 0.0, 3600.0)
    vehicles = {v.seq: v for v in sc.vehicles("wim-0001", 3600.0)}
    assert len(events) > 100
    strict = parse_rules(
        "rules: [{name: wim-overload, kind: wim_overload, applies_to: {kinds: [wim]}, tolerance_pct: 0,"
        " critical_over_pct: 30}]",
        "strict.yaml",
    )
    rs = RuleSet(strict)
    st = EngineState(next_tick_t=float("inf"))
    st, _ = evaluate(rs, st, [GatewayStatus("gw-sim", "online", 0.0, _infos(sc, 60.0))], 0.0)
    st, trs = evaluate(rs, st, events, 0.0)
    # oracle: the simulator's own overload flag (gross > 2016 limit for the axle count)
    by_ts = {round(sc.unix(v.t), 3): v for v in vehicles.values()}
    want = sorted(ev.id for ev in events if by_ts[ev.ts].overloaded)
    got = sorted(tr.evidence["record"]["event_id"] for tr in trs)
    assert got == want and len(want) > 5
    assert len({tr.alarm_id for tr in trs}) == len(trs)
    for tr in trs:
        v = by_ts[tr.t]
        over = (v.gross_kg / v.limit_kg - 1) * 100
        assert tr.severity.value == ("critical" if over > 30 else "major")
        assert tr.evidence["record"]["gross_kg"] == v.gross_kg


def test_storm_backtest_equals_live() -> None:
    poll = 10.0
    sc = _scenario(NOON_CST)
    reads = _poll(sc, ["wl-0001", "wl-0002", "mh-0001", "lamp-0001", "lamp-0002"], 3000, poll)
    live = _live(sc, reads, poll)
    rep = backtest(RULES, history_from_readings(reads, {d.id: d for d in _infos(sc, poll)}))
    key = sorted((tr.alarm_id, tr.kind.value, tr.severity.value, tr.t) for tr in live)
    staleness = {"device-offline", "gateway_offline"}
    assert sorted((tr.alarm_id, tr.kind.value, tr.severity.value, tr.t) for tr in rep.transitions
                  if tr.rule not in staleness) == key
    assert rep.rules["road-water-depth"].raised == 1
