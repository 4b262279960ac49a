"""Report by exception: the publish rules, and the proof that the demo storm loses no alarm.

The proof replays the demo district's storm (configs/sim/demo.yaml) as the gateways sample it
(normal and storm poll intervals, storm mode decided by the edge on every sample) through the
cloud rules (configs/rules/default.yaml), once with every reading and once with only the
readings the deadbands of configs/gateway.demo-deadbands.yaml publish. Every alarm raised (or
escalated) on full data is raised on the thinned data too, no later than one poll interval.
"""

from __future__ import annotations

import pytest

from contracts.reading import Quality, Reading
from firmware_sim.config import load_sim_config
from gateway.deadband import ReportByException, for_device
from gateway.registers import Deadband
from tests.support import district


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


@pytest.mark.timeout(600)
def test_deadbands_miss_and_delay_no_alarm_on_the_storm() -> None:
    cfg = load_sim_config(district.ROOT / "configs" / "sim" / "demo.yaml")
    polls, reports = district.sample(cfg, until_s=2400.0)
    full = district.raises(cfg, [(p.t, p.readings) for p in polls])
    thinned = district.raises(cfg, [(p.t, reports[p.readings[0].device].select(p.readings))
                                    for p in polls if p.readings])
    assert len(full) >= 50, "the storm must raise alarms for this proof to mean anything"
    interval = {(p.readings[0].device, round(p.t, 6)): p.interval_s for p in polls if p.readings}
    problems, worst = district.compare(full, thinned, interval)
    assert problems == [] and worst <= 10.0
    sampled = sum(rep.sampled for rep in reports.values())
    published = sum(rep.published for rep in reports.values())
    assert published < 0.6 * sampled  # and it saves a good part of the readings


class _Gauge:
    """A fake poller: depth from a list, battery constant."""

    def __init__(self, depths: list[float]) -> None:
        self.depths = depths
        self.health = None

    async def poll(self, now: float) -> object:
        from dataclasses import dataclass, field

        @dataclass
        class Result:
            readings: list[Reading]
            events: list[object] = field(default_factory=list)

        d = self.depths.pop(0)
        return Result([Reading("wl-0001", "depth", now, d, "m"), Reading("wl-0001", "battery", now, 3.6, "V")])

    async def write_field(self, field: str, value: float, now: float) -> float:
        return value


async def test_the_agent_publishes_the_selection_and_still_sees_every_sample(tmp_path: object) -> None:
    from edge_agent.agent import Agent, DeviceRuntime
    from edge_agent.config import parse_agent_config
    from gateway import profiles

    text = f"""
gateway: {{id: gw-1}}
mqtt: {{url: "mqtt://127.0.0.1:1"}}
outbox: {{path: {tmp_path}/o.db, budget_bytes: 10000000}}
storm: {{enter_depth_m: 0.15, exit_depth_m: 0.10, enter_rise_m_per_h: null, exit_rise_m_per_h: null, min_hold_s: 0}}
buses: [{{id: b1, type: tcp, host: 127.0.0.1}}]
devices:
  - id: wl-0001
    profile: water_gauge
    bus: b1
    unit_id: 1
    poll_interval_s: 300
    storm_poll_interval_s: 10
    deadbands: {{depth: {{abs: 0.5, heartbeat_s: 3600}}, battery: {{abs: 0.1, heartbeat_s: 3600}}}}
"""
    cfg = parse_agent_config(text, "gw.yaml")
    agent = Agent(cfg, boot="b1")
    d = cfg.devices[0]
    assert for_device(profiles.get(d.profile).deadbands, d.deadband_overrides()) is not None
    report = ReportByException(d.deadband_overrides(), hold_s=0.0)  # no hold: show the suppression at once
    dev = DeviceRuntime(d.id, d.kind, 300.0, 10.0, _Gauge([0.02, 0.03, 0.20, 0.21]), report=report)
    agent.devices[dev.id] = dev
    for _ in range(4):
        await agent.poll_once(dev)
    assert dev.storm.storm  # 0.20 m switched storm mode on, although no depth beyond the band was published
    assert (report.sampled, report.published) == (8, 2)
    assert agent.outbox.ledger().telemetry.appended == 2
    agent.outbox.close()
