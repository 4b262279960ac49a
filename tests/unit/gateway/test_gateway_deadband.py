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
