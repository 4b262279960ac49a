"""Report by exception: the publish rules, and the proof that the demo storm loses no alarm.

The proof replays the demo district's storm (configs/sim/demo.yaml) as the gateways sample it
(normal and storm poll intervals, storm mode decided by the edge on every sample) through the
cloud rules (configs/rules/default.yaml), once with every reading and once with only the
readings the deadbands of configs/gateway.demo-deadbands.yaml publish. Every alarm raised (or
escalated) on full data is raised on the thinned data too, no later than one poll interval.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.alarms import AlarmTransition, TransitionKind
from contracts.metrics import METRIC_UNITS
from contracts.reading import Quality, Reading
from edge_agent import storm
from edge_agent.config import StormConfig
from firmware_sim.config import load_sim_config
from firmware_sim.gwconfig import field_config, load_deadbands
from firmware_sim.scenarios import Scenario
from gateway import profiles
from gateway.deadband import ReportByException, for_device
from gateway.registers import Deadband
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import parse_rules

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_764_547_200.0


def r(ts: float, value: float, metric: str = "depth", quality: Quality = Quality.GOOD) -> Reading:
    return Reading("wl-1", metric, ts, value, "m", quality)


def test_publish_rules() -> None:
    rbe = ReportByException({"depth": Deadband(abs=0.01, heartbeat_s=100)}, hold_s=30)
    assert rbe.select([r(0, 0.10), r(0, 3.0, "battery")]) == [r(0, 0.10), r(0, 3.0, "battery")]
    assert rbe.select([r(10, 0.105)]) == [r(10, 0.105)]  # the start counts as a move: hold_s at full rate
    assert rbe.select([r(40, 0.108)]) == []  # inside the band
    assert rbe.select([r(50, 0.109)]) == []
    assert rbe.select([r(60, 0.125)]) == [r(50, 0.109), r(60, 0.125)]  # left it: where it was, then now
    assert rbe.select([r(70, 0.125)]) == [r(70, 0.125)]  # active for hold_s: every sample
    assert rbe.select([r(100, 0.126)]) == []  # quiet again
    bad = Quality.SENSOR_FAULT
    assert rbe.select([r(110, 0.126, quality=bad)]) == [r(110, 0.126, quality=bad)]
    assert rbe.select([r(150, 0.126, quality=bad)]) == []
    assert rbe.select([r(210, 0.126, quality=bad)]) == [r(210, 0.126, quality=bad)]  # heartbeat
    assert (rbe.sampled, rbe.published) == (11, 8)
    pct = ReportByException({"voltage": Deadband(pct=2.0, heartbeat_s=600)})
    assert pct.select([r(0, 220.0, "voltage"), r(700, 224.0, "voltage")])[0].value == 220.0
    assert for_device((), {}) is None


def sample_storm(until_s: float) -> tuple[list[tuple[float, list[Reading], float]], dict[str, ReportByException]]:
    """(time, readings, the device's poll interval then) per poll of every demo device, in time order."""
    cfg = load_sim_config(ROOT / "configs" / "sim" / "demo.yaml")
    sc = Scenario(cfg, start_unix=T0)
    deadbands = load_deadbands(ROOT / "configs" / "gateway.demo-deadbands.yaml")
    storm_cfg = StormConfig()
    polls: list[tuple[float, list[Reading], float]] = []
    reports: dict[str, ReportByException] = {}
    for gw in cfg.gateways():
        fc = field_config(cfg, gw, {b.id: "127.0.0.1:1502" if b.transport == "tcp" else "/dev/null"
                                    for b in cfg.buses}, deadbands=deadbands)
        for d in fc.devices:
            rep = for_device(profiles.get(d.profile).deadbands, d.deadband_overrides())
            assert rep is not None
            reports[d.id] = rep
            state, t = storm.StormState(), 0.0
            while t <= until_s:
                values = sorted(sc.metrics(d.id, t).items())
                readings = [Reading(d.id, m, T0 + t, v, METRIC_UNITS[m]) for m, v in values]
                step = storm.interval_s(state, d.poll_interval_s, d.storm_poll_interval_s)
                polls.append((t, readings, step))
                for x in readings:  # the edge sees every sample (storm detection)
                    if d.storm_poll_interval_s is not None and x.metric == storm_cfg.metric:
                        state = storm.observe(state, x.ts, x.value, storm_cfg)
                t += storm.interval_s(state, d.poll_interval_s, d.storm_poll_interval_s)
    polls.sort(key=lambda p: p[0])
    return polls, reports


def raises(polls: list[tuple[float, list[Reading]]]) -> list[AlarmTransition]:
    cfg = load_sim_config(ROOT / "configs" / "sim" / "demo.yaml")
    rs = RuleSet(parse_rules((ROOT / "configs/rules/default.yaml").read_text(encoding="utf-8"), "default.yaml"))
    infos = []
    for gw in cfg.gateways():
        fc = field_config(cfg, gw, {b.id: "127.0.0.1:1502" if b.transport == "tcp" else "/dev/null"
                                    for b in cfg.buses})
        infos += [d.to_device_info() for d in fc.devices]
    state, out = evaluate(rs, EngineState(), [GatewayStatus("gw", "online", T0 - 1, tuple(infos))], T0 - 1)
    for t, readings in polls:
        state, trs = evaluate(rs, state, readings, T0 + t)
        out += trs
    return [tr for tr in out if tr.kind in (TransitionKind.RAISED, TransitionKind.ESCALATED)]


@pytest.mark.timeout(600)
def test_deadbands_miss_and_delay_no_alarm_on_the_storm() -> None:
    polls, reports = sample_storm(until_s=2400.0)
    full = raises([(t, rs) for t, rs, _step in polls])
    thinned = raises([(t, reports[rs[0].device].select(rs)) for t, rs, _step in polls if rs])
    interval = {(rs[0].device, round(t, 6)): step for t, rs, step in polls if rs}
    assert len(full) >= 10, "the storm must raise alarms for this proof to mean anything"
    left = list(thinned)
    for a in full:
        match = next((b for b in left if (b.device, b.rule, b.kind, b.severity) == (a.device, a.rule, a.kind,
                                                                                     a.severity)), None)
        assert match is not None, f"missed: {a}"
        step = interval.get((a.device, round(a.t - T0, 6)), 10.0)
        assert match.t <= a.t + step + 1e-6, f"delayed by {match.t - a.t:.1f} s > {step} s: {a}"
        left.remove(match)
    sampled = sum(rep.sampled for rep in reports.values())
    published = sum(rep.published for rep in reports.values())
    assert published < sampled  # and it does save something
