"""Unit tests of each rule kind, the lifecycle (ack, open cases, flapping) and spec validation."""

from __future__ import annotations

import datetime as dt

import pytest
from rules_helpers import CLOUD_EXAMPLE, DEFAULT_RULES, ROOT, T0, birth, gauge, rules_from, run, series

from contracts.alarms import Severity, TransitionKind
from contracts.errors import ConfigError
from contracts.payloads import AlarmAck, OpenCases
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.robust import theil_sen_slope
from rules.specs import load_rules, parse_rules
from rules.sun import sun_is_up, sun_times

DEPTH = """
rules:
  - name: road-water-depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 60, clear_after_s: 300}
      - {severity: major, raise_at: 0.25, hysteresis: 0.03, raise_after_s: 60, clear_after_s: 300}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.03, raise_after_s: 0, clear_after_s: 300}
    flapping: {max_raises: 3, window_s: 3600, hold_s: 900}
    overrides:
      wl-0002: {offset: -0.05}
      wl-0003: {enabled: false}
"""


def kinds(trs: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(tr.kind.value, tr.severity.value) for tr in trs]


# ---------------------------------------------------------------- threshold


def test_levels_escalate_and_deescalate_one_alarm_with_delays() -> None:
    rules = rules_from(DEPTH)
    depths = [0.0, 0.16, 0.17, 0.18, 0.26, 0.27, 0.45, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30] + [0.1] * 8
    _, trs = run(rules, [birth(gauge()), *series("wl-0001", "depth", depths)])
    assert kinds(trs) == [
        ("raised", "minor"),  # 0.16 at 60 s held 60 s -> raised at 120 s
        ("escalated", "major"),
        ("escalated", "critical"),  # critical has no delay
        ("de-escalated", "major"),  # 0.30 < 0.37 held 300 s
        ("cleared", "major"),
    ]
    assert [tr.t - T0 for tr in trs][:3] == [120.0, 300.0, 360.0]
    assert len({tr.alarm_id for tr in trs}) == 1
    assert trs[0].alarm_id == f"wl-0001.road-water-depth.{int((T0 + 120) * 1000)}"


def test_override_offset_and_disable() -> None:
    rules = rules_from(DEPTH)
    reads = series("wl-0002", "depth", [0.18] * 5) + series("wl-0003", "depth", [0.9] * 5)
    _, trs = run(rules, [birth(gauge("wl-0002"), gauge("wl-0003")), *reads])
    assert trs == []  # 0.18 - 0.05 = 0.13 < 0.15; wl-0003 disabled


def test_no_threshold_alarm_from_bad_readings() -> None:
    rules = rules_from(DEPTH)
    bad = series("wl-0001", "depth", [0.9] * 20, quality=Quality.OUT_OF_RANGE)
    _, trs = run(rules, [birth(gauge()), *bad])
    assert trs == []


def test_duplicate_and_late_readings_are_ignored() -> None:
    rules = rules_from(DEPTH)
    reads = series("wl-0001", "depth", [0.5, 0.5, 0.5])
    state, trs = run(rules, [birth(gauge()), *reads])
    assert kinds(trs) == [("raised", "critical")]
    _, again = run(rules, [*reads, Reading("wl-0001", "depth", T0 - 60, 0.0)], state=state)
    assert again == []


def test_flapping_alarm_is_held_instead_of_renotified() -> None:
    rules = rules_from(DEPTH)
    # 0.45 (critical, no delay) alternating with 0.0 held 300 s: raise/clear/raise/clear/raise -> flapping
    values: list[float] = []
    for _ in range(6):
        values += [0.45] + [0.0] * 6
    _, trs = run(rules, [birth(gauge()), *series("wl-0001", "depth", values)])
    raised = [tr for tr in trs if tr.kind is TransitionKind.RAISED]
    assert len(raised) == 3  # the third raise marks it flapping; then it is held through the next dips
    assert raised[-1].evidence.get("flapping") is True
    assert trs[-1].kind is TransitionKind.RAISED


# ---------------------------------------------------------------- ack, open cases


def test_ack_once_and_open_case_attaches() -> None:
    rules = rules_from(DEPTH)
    rs = RuleSet(rules)
    st = EngineState()
    st, trs = evaluate(rs, st, [birth(gauge()), *series("wl-0001", "depth", [0.5, 0.5])], 0.0)
    aid = trs[0].alarm_id
    ack = AlarmAck(aid, "wl-0001", "duty-zhang", T0 + 200, "on my way")
    st, trs = evaluate(rs, st, [ack, ack], 0.0)
    assert [(tr.kind, tr.actor) for tr in trs] == [(TransitionKind.ACKNOWLEDGED, "duty-zhang")]
    assert st.alarms[aid].acked_by == "duty-zhang"
    # an open case for the condition: the next alarm attaches to it
    st, _ = evaluate(rs, st, [OpenCases("wl-0001", {"road-water-depth": "case-42"})], 0.0)
    st, trs = evaluate(rs, st, series("wl-0001", "depth", [0.0] * 10, t0=T0 + 300), 0.0)
    assert trs[-1].kind is TransitionKind.CLEARED
    st, trs = evaluate(rs, st, series("wl-0001", "depth", [0.5], t0=T0 + 2000), 0.0)
    assert trs[0].kind is TransitionKind.RAISED
    assert trs[0].evidence["case_id"] == "case-42" and trs[0].evidence["attach"] is True


# ---------------------------------------------------------------- rate, sensor faults


def test_rate_warns_before_the_depth_threshold() -> None:
    rules = load_rules([DEFAULT_RULES])
    depths = [0.002 * i for i in range(60)]  # +0.12 m/h, below 0.15 m for 75 minutes
    _, trs = run(rules, [birth(gauge()), *series("wl-0001", "depth", depths)])
    first = trs[0]
    assert (first.rule, first.kind) == ("road-water-rising", TransitionKind.RAISED)
    assert abs(first.value - 0.12) < 1e-6


def test_theil_sen_ignores_a_spike() -> None:
    t = [float(i * 60) for i in range(20)]
    v = [0.001 * i for i in range(20)]
    v[10] = 5.0
    assert abs(theil_sen_slope(t, v) - 0.001 / 60) < 1e-9


def test_out_of_range_and_flatline_raise_a_sensor_fault() -> None:
    rules = load_rules([DEFAULT_RULES])
    out = series("wl-0001", "depth", [0.1, 9.0, 9.0, 9.0, 0.1, 0.1, 0.1])
    _, trs = run(rules, [birth(gauge()), *out])
    assert [(tr.rule, tr.kind.value) for tr in trs] == [
        ("gauge-sensor-fault", "raised"),
        ("gauge-sensor-fault", "cleared"),
    ]
    stuck = series("wl-0001", "distance", [1.234] * 30, step_s=1800)
    _, trs = run(rules, [birth(gauge()), *stuck])
    assert [(tr.rule, tr.kind.value, tr.evidence["reason"]) for tr in trs] == [
        ("gauge-distance-stuck", "raised", "flatline")
    ]


# ---------------------------------------------------------------- staleness, gateway offline


def test_silent_device_versus_gateway_offline() -> None:
    rules = load_rules([DEFAULT_RULES])
    rs = RuleSet(rules)
    a, b = gauge("wl-0001", interval_s=60.0), gauge("wl-0002", interval_s=60.0)
    st = EngineState()
    st, _ = evaluate(rs, st, [GatewayStatus("gw-1", "online", T0, (a,)), GatewayStatus("gw-2", "online", T0, (b,))], T0)
    first = [Reading("wl-0001", "depth", T0 + 10, 0.0), Reading("wl-0002", "depth", T0 + 10, 0.0)]
    st, _ = evaluate(rs, st, first, T0 + 10)
    # gw-2 loses its uplink (last will); wl-0001 just goes quiet
    st, trs = evaluate(rs, st, [GatewayStatus("gw-2", "offline", T0 + 20)], T0 + 20)
    assert trs == []
    st, trs = evaluate(rs, st, [], T0 + 100)
    assert [(tr.device, tr.rule) for tr in trs] == [("gw-2", "gateway_offline")]
    assert trs[0].evidence["devices"] == ["wl-0002"]
    st, trs = evaluate(rs, st, [], T0 + 400)
    assert [(tr.device, tr.rule, tr.kind.value) for tr in trs] == [("wl-0001", "device-offline", "raised")]
    st, trs = evaluate(rs, st, [], T0 + 4000)
    assert trs == []  # no repeat
    back = [GatewayStatus("gw-2", "online", T0 + 4010, (b,)), Reading("wl-0001", "depth", T0 + 4005, 0.0)]
    st, trs = evaluate(rs, st, back, T0 + 4010)
    assert sorted((tr.device, tr.kind.value) for tr in trs) == [("gw-2", "cleared"), ("wl-0001", "cleared")]
    st, trs = evaluate(rs, st, [], T0 + 4020)
    assert trs == []  # wl-0002's silence counts from its gateway's return


# ---------------------------------------------------------------- manhole, lamps


def test_manhole_tilt_limit_and_ninety_degrees_and_cover_event() -> None:
    rules = rules_from("""
rules:
  - {name: tilt, kind: tilt, applies_to: {kinds: [manhole]}, limit_deg: 10, raise_after_s: 2, clear_after_s: 60,
     overrides: {mh-0002: {limit_deg: 20}}}
  - {name: cover, kind: cover_open, applies_to: {kinds: [manhole]}, clear_after_s: 60}
""")
    mh1 = DeviceInfo("mh-0001", "mh", "manhole")
    mh2 = DeviceInfo("mh-0002", "mh", "manhole")
    reads = series("mh-0001", "tilt", [1, 12, 12, 12, 95, 95], step_s=1) + series("mh-0002", "tilt", [15] * 5, step_s=1)
    _, trs = run(rules, [GatewayStatus("gw", "online", 0.0, (mh1, mh2)), *sorted(reads, key=lambda r: r.ts)])
    assert [(tr.device, tr.kind.value, tr.severity.value) for tr in trs] == [
        ("mh-0001", "raised", "major"),
        ("mh-0001", "escalated", "critical"),
    ]
    _, trs = run(rules, [GatewayStatus("gw", "online", 0.0, (mh1,)), Event("mh-0001", "cover_open", "7", T0)])
    assert [(tr.rule, tr.severity) for tr in trs] == [("cover", Severity.CRITICAL)]


LAMP_RULES = """
rules:
  - {name: lampFailure, kind: lamp_failure, applies_to: {kinds: [lamp]}, raise_after_s: 120}
  - {name: lampUnexpectedOn, kind: lamp_unexpected_on, applies_to: {kinds: [lamp]}, margin_s: 1800, raise_after_s: 600}
  - {name: lampDarkAtNight, kind: lamp_dark, applies_to: {kinds: [lamp]}, margin_s: 1800, raise_after_s: 600}
  - {name: supplyVoltage, kind: supply_voltage, applies_to: {kinds: [lamp]}, raise_after_s: 300}
"""


def _lamp_stream(t0: float, relay: float, current: float, n: int = 20, volts: float = 225.0) -> list[Reading]:
    out = []
    for i in range(n):
        t = t0 + i * 60
        out += [Reading("lamp-0001", "relay", t, relay), Reading("lamp-0001", "current", t, current),
                Reading("lamp-0001", "voltage", t, volts)]
    return out


def test_lamp_faults_by_sun_position() -> None:
    rules = rules_from(LAMP_RULES)
    lamp = DeviceInfo("lamp-0001", "lamp", "lamp", lat=30.27, lon=120.15)  # Hangzhou
    noon = dt.datetime(2025, 12, 1, 4, 0, tzinfo=dt.UTC).timestamp()  # 12:00 CST
    night = dt.datetime(2025, 12, 1, 14, 0, tzinfo=dt.UTC).timestamp()  # 22:00 CST
    on = GatewayStatus("gw", "online", 0.0, (lamp,))
    _, trs = run(rules, [on, *_lamp_stream(noon, 1.0, 0.45)])
    assert [tr.rule for tr in trs] == ["lampUnexpectedOn"]
    _, trs = run(rules, [on, *_lamp_stream(night, 0.0, 0.0)])
    assert [tr.rule for tr in trs] == ["lampDarkAtNight"]
    _, trs = run(rules, [on, *_lamp_stream(night, 1.0, 0.0)])
    assert [tr.rule for tr in trs] == ["lampFailure"]
    _, trs = run(rules, [on, *_lamp_stream(night, 1.0, 0.45, volts=250.0)])
    assert [(tr.rule, tr.evidence["fault"]) for tr in trs] == [("supplyVoltage", "supplyVoltageTooHigh")]
    _, trs = run(rules, [on, *_lamp_stream(night, 1.0, 0.45)])
    assert trs == []


@pytest.mark.parametrize(
    ("lat", "lon", "date", "rise_local", "set_local"),
    [
        (30.2741, 120.1551, dt.date(2026, 6, 21), "04:57", "19:03"),  # Hangzhou, solstices (NOAA calculator)
        (30.2741, 120.1551, dt.date(2026, 12, 21), "06:51", "17:02"),
        (39.9042, 116.4074, dt.date(2026, 6, 21), "04:45", "19:46"),  # Beijing
        (39.9042, 116.4074, dt.date(2026, 12, 21), "07:32", "16:52"),
    ],
)
def test_sun_times_known_values(lat: float, lon: float, date: dt.date, rise_local: str, set_local: str) -> None:
    cst = dt.timezone(dt.timedelta(hours=8))
    # China's morning sunrise is on the previous UTC day; sunset on the same UTC date
    rise_prev, _ = sun_times(lat, lon, date - dt.timedelta(days=1))
    _, sset = sun_times(lat, lon, date)
    assert rise_prev is not None and sset is not None
    want_rise = dt.datetime.combine(date, dt.time.fromisoformat(rise_local), cst).timestamp()
    want_set = dt.datetime.combine(date, dt.time.fromisoformat(set_local), cst).timestamp()
    assert abs((rise_prev + 86400) - want_rise) < 120  # +1 day: the sunrise of `date`, within ~2 min
    assert abs(sset - want_set) < 120
    noon = dt.datetime.combine(date, dt.time(12), cst).timestamp()
    assert sun_is_up(lat, lon, noon) is True
    assert sun_is_up(lat, lon, noon + 12 * 3600) is False


def test_polar_night_and_day() -> None:
    t_dec = dt.datetime(2025, 12, 21, 12, tzinfo=dt.UTC).timestamp()
    assert sun_is_up(78.2, 15.6, t_dec) is False  # Svalbard, polar night
    assert sun_is_up(78.2, 15.6, t_dec - 183 * 86400) is True


# ---------------------------------------------------------------- WIM


WIM = """
rules:
  - {name: wim-overload, kind: wim_overload, applies_to: {kinds: [wim]}, tolerance_pct: 5, axle_limit_kg: 13000,
     auto_clear_s: 600}
"""


def test_wim_each_overload_is_its_own_alarm_with_the_record() -> None:
    rules = rules_from(WIM)
    wim = DeviceInfo("wim-0001", "wim", "wim")
    trucks = [
        Event("wim-0001", "vehicle", "1", T0, {"axles": 2, "gross_kg": 18500, "axle_kg": [7000, 11500]}),  # within 5 %
        Event("wim-0001", "vehicle", "2", T0 + 1, {"axles": 2, "gross_kg": 19500, "axle_kg": [7000, 12500]}),
        Event("wim-0001", "vehicle", "3", T0 + 2, {"axles": 6, "gross_kg": 70000, "axle_kg": [7000] + [12600] * 5}),
        Event("wim-0001", "vehicle", "4", T0 + 3, {"axles": 3, "gross_kg": 28000, "combination": True,
                                                   "axle_kg": [7000, 10500, 10500]}),  # 27 t combination, +3.7 %
        Event("wim-0001", "vehicle", "5", T0 + 4,
              {"axles": 4, "gross_kg": 30000, "axle_kg": [7000, 7000, 8000, 14000]}),
    ]
    st, trs = run(rules, [GatewayStatus("gw", "online", 0.0, (wim,)), *trucks])
    got = [(tr.rule, tr.severity.value, tr.evidence["record"]["event_id"]) for tr in trs]
    assert got == [
        ("wim-overload", "major", "2"),
        ("wim-overload", "critical", "3"),  # 70 t on 49 t: +43 % > 30 %
        ("wim-axle-overload", "major", "5"),
    ]
    assert len({tr.alarm_id for tr in trs}) == 3
    _, trs = run(rules, trucks[1:2], now=T0 + 700, state=st)  # a redelivered record raises nothing new
    assert [tr.kind for tr in trs] == [TransitionKind.CLEARED] * 3  # they clear themselves at t + 600 s
    assert {tr.t for tr in trs} == {T0 + 601, T0 + 602, T0 + 604}


# ---------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rules: [{name: x, kind: threshold, applies_to: {kinds: [water_gauge]}, metric: depth, levels: []}]",
         "rules[0].levels"),
        ("rules: [{name: x, kind: threshold, applies_to: {kinds: [water_gauge]}, metric: depth, levelz: []}]",
         "rules[0].levelz"),
        ("rules: [{name: x, kind: tilt, applies_to: {kinds: [manhole]}, limit_deg: 95}]", "rules[0].limit_deg"),
        ("rules: [{name: x, kind: nope, applies_to: {kinds: [manhole]}}]", "rules[0]"),
        ("rules: [{name: x, kind: staleness, applies_to: {}}]", "rules[0].applies_to"),
        ("rules: [{name: 'a b', kind: staleness, applies_to: {kinds: [lamp]}}]", "rules[0].name"),
        ("rules: [{name: x, kind: threshold, applies_to: {kinds: [water_gauge]}, metric: depth,"
         " levels: [{severity: major, raise_at: 0.3}, {severity: minor, raise_at: 0.1}]}]", "rules[0]"),
    ],
)
def test_bad_rule_files_name_file_key_and_value(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rules(text, "bad.yaml")
    assert err.value.source == "bad.yaml"
    assert err.value.key_path.startswith(where)


def test_duplicate_rule_names_across_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = tmp_path / "a.yaml"
    a.write_text("rules: [{name: x, kind: staleness, applies_to: {kinds: [lamp]}}]")
    with pytest.raises(ConfigError, match="already defined"):
        load_rules([a, a])


def test_example_rules_and_cloud_config_load() -> None:
    from rules.config import load_settings

    assert len(load_rules([DEFAULT_RULES])) == 13
    _mqtt, cfg = load_settings(CLOUD_EXAMPLE)
    assert load_rules([ROOT / f for f in cfg.files])


def test_backtest_staleness_from_gaps_matches_live_ticks() -> None:
    from rules.backtest import backtest, history_from_readings

    rules = rules_from("rules: [{name: gone, kind: staleness, applies_to: {kinds: [water_gauge]}, min_silence_s: 600}]")
    dev = gauge("wl-0001", interval_s=60.0)
    times = [T0 + 60 * i for i in range(10)] + [T0 + 3000 + 60 * i for i in range(5)]  # a 2400 s hole
    reads = [Reading("wl-0001", "depth", t, 0.0) for t in times]
    rep = backtest(rules, history_from_readings(reads, {"wl-0001": dev}))
    assert [(tr.kind.value, tr.t - T0) for tr in rep.transitions] == [("raised", 540 + 600), ("cleared", 3000)]
    assert rep.rules["gone"].raised == 1 and rep.rules["gone"].alarm_time_s == 3000 - 1140
    # the live engine, ticking every 10 s, sees the same silence within one tick
    rs = RuleSet(rules)
    st, _ = evaluate(rs, EngineState(), [birth(dev)], T0)
    live = []
    for k in range(0, 320):
        now = T0 + 10 * k
        st, trs = evaluate(rs, st, [r for r in reads if now - 10 < r.ts <= now], now)
        live += trs
    assert [tr.kind.value for tr in live] == ["raised", "cleared"]
    assert 0 < live[0].t - (T0 + 1140) <= 10 and live[1].t == T0 + 3000
