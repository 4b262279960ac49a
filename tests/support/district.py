"""The demo district as its gateways sample it, without sockets (deadband test and bench/field.py).

Each device is polled at its normal or storm interval (storm mode decided by the edge's own
``edge_agent.storm`` on every sample), readings come from the simulator's scenario, and the
publish decision is the device's :class:`gateway.deadband.ReportByException`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts.alarms import AlarmTransition, TransitionKind
from contracts.metrics import METRIC_UNITS
from contracts.reading import Reading
from edge_agent import storm
from edge_agent.config import StormConfig
from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import field_config, load_deadbands
from firmware_sim.scenarios import Scenario
from gateway import profiles
from gateway.config import DeviceConfig
from gateway.deadband import ReportByException, for_device
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate
from rules.specs import parse_rules

ROOT = Path(__file__).resolve().parents[2]
DEADBANDS = ROOT / "configs" / "gateway.demo-deadbands.yaml"
RULES = ROOT / "configs" / "rules" / "default.yaml"
T0 = 1_764_547_200.0


@dataclass(frozen=True, slots=True)
class Poll:
    t: float  # simulated seconds
    readings: list[Reading]
    interval_s: float  # the device's poll interval at that moment


def devices(cfg: SimConfig) -> list[DeviceConfig]:
    """Every device of every gateway, as its gateway config says (demo deadbands included)."""
    deadbands = load_deadbands(DEADBANDS)
    out: list[DeviceConfig] = []
    for gw in cfg.gateways():
        ends = {b.id: "127.0.0.1:1502" if b.transport == "tcp" else "/dev/null" for b in cfg.buses}
        out += field_config(cfg, gw, ends, deadbands=deadbands).devices
    return out


def sample(cfg: SimConfig, until_s: float) -> tuple[list[Poll], dict[str, ReportByException]]:
    """Every poll of every device up to ``until_s`` in time order, and each device's publish decision."""
    sc = Scenario(cfg, start_unix=T0)
    storm_cfg = StormConfig()
    polls: list[Poll] = []
    reports: dict[str, ReportByException] = {}
    for d in devices(cfg):
        rep = for_device(profiles.get(d.profile).deadbands, d.deadband_overrides())
        reports[d.id] = rep if rep is not None else ReportByException({})
        state, t = storm.StormState(), 0.0
        while t <= until_s:
            values = sorted(sc.metrics(d.id, t).items())
            readings = [Reading(d.id, m, T0 + t, v, METRIC_UNITS[m]) for m, v in values]
            polls.append(Poll(t, readings, storm.interval_s(state, d.poll_interval_s, d.storm_poll_interval_s)))
            for x in readings:  # the edge sees every sample (storm detection)
                if d.storm_poll_interval_s is not None and x.metric == storm_cfg.metric:
                    state = storm.observe(state, x.ts, x.value, storm_cfg)
            t += storm.interval_s(state, d.poll_interval_s, d.storm_poll_interval_s)
    polls.sort(key=lambda p: p.t)
    return polls, reports


def raises(cfg: SimConfig, batches: list[tuple[float, list[Reading]]]) -> list[AlarmTransition]:
    """Alarms raised or escalated by the default rules on these readings, fed in time order."""
    rs = RuleSet(parse_rules(RULES.read_text(encoding="utf-8"), str(RULES)))
    infos = tuple(d.to_device_info() for d in devices(cfg))
    state, out = evaluate(rs, EngineState(), [GatewayStatus("gw", "online", T0 - 1, infos)], T0 - 1)
    for t, readings in batches:
        state, trs = evaluate(rs, state, readings, T0 + t)
        out += trs
    return [tr for tr in out if tr.kind in (TransitionKind.RAISED, TransitionKind.ESCALATED)]


def compare(full: list[AlarmTransition], thinned: list[AlarmTransition],
            interval_of: dict[tuple[str, float], float]) -> tuple[list[str], float]:
    """(problems, worst delay in s): each full-data alarm must be in ``thinned`` no later than one poll."""
    problems: list[str] = []
    worst = 0.0
    left = list(thinned)
    for a in full:
        match = next((b for b in left if (b.device, b.rule, b.kind, b.severity) == (a.device, a.rule, a.kind,
                                                                                     a.severity)), None)
        if match is None:
            problems.append(f"missed: {a.alarm_id} {a.kind} {a.severity}")
            continue
        left.remove(match)
        delay = match.t - a.t
        worst = max(worst, delay)
        step = interval_of.get((a.device, round(a.t - T0, 6)), 0.0)
        if delay > step + 1e-6:
            problems.append(f"delayed by {delay:.1f} s > one poll ({step} s): {a.alarm_id}")
    return problems, worst
