"""The load generator's pure plan: rate, kind mix, storm selection, schedule and determinism."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from citywatch.loadplan import (
    KINDS,
    STORM_DEPTH_M,
    LoadgenError,
    device_infos,
    make_plan,
    readings_at,
)
from tests.support.nats_loadgen import load_devices

DEFAULT_RULES = Path(__file__).resolve().parents[3] / "configs" / "rules" / "default.yaml"
GWS = [f"gw-{i:02d}" for i in range(10)]


def test_rate_is_met_over_a_full_cycle() -> None:
    plan = make_plan(GWS, 200, 400.0, seed=3)
    assert plan.rate_per_s == pytest.approx(400.0, rel=0.05)
    # the longest period repeats the whole schedule: readings over it / its length = planned rate
    longest = max(p for gp in plan.gateways for p in gp.buckets)
    n = sum(len(readings_at(plan, gp, t, 1000.0 + t)) for gp in plan.gateways for t in range(longest))
    assert n / (longest * plan.tick_s) == pytest.approx(plan.rate_per_s, rel=1e-9)


def test_load_is_flat_across_ticks() -> None:
    plan = make_plan(GWS, 500, 1000.0, seed=5)
    longest = max(p for gp in plan.gateways for p in gp.buckets)
    per_tick = [sum(len(readings_at(plan, gp, t, 0.0)) for gp in plan.gateways) for t in range(longest)]
    mean = sum(per_tick) / len(per_tick)
    assert max(per_tick) < 2.0 * mean, per_tick  # phases spread: no thundering herd on tick 0


def test_every_device_reports_once_per_period_with_its_kinds_metrics() -> None:
    plan = make_plan(["gw-a"], 100, 50.0, seed=2)
    gp = plan.gateways[0]
    longest = max(gp.buckets)
    seen: Counter[tuple[str, str]] = Counter()
    for t in range(longest):
        for r in readings_at(plan, gp, t, float(t)):
            seen[(r.device, r.metric)] += 1
    for i, dev in enumerate(gp.devices):
        for m in KINDS[gp.kinds[i]].metrics:
            assert seen[(dev, m.name)] == longest // gp.period_ticks[i]


def test_mix_is_split_exactly_per_gateway() -> None:
    plan = make_plan(GWS, 1000, 2000.0, seed=1)
    assert plan.kind_counts() == {"water_gauge": 3000, "manhole": 4000, "lamp": 2500, "wim": 500}
    custom = make_plan(["g"], 7, 1.0, mix={"water_gauge": 2, "lamp": 1})
    assert custom.kind_counts() == {"water_gauge": 5, "manhole": 0, "lamp": 2, "wim": 0}


def test_intervals_keep_their_realistic_ratio_after_scaling() -> None:
    plan = make_plan(["g"], 1000, 10.0, mix={"water_gauge": 1.0}, seed=4)
    gp = plan.gateways[0]
    periods = sorted(set(gp.period_ticks))
    assert len(periods) == 2 and periods[1] / periods[0] == pytest.approx(300 / 60, rel=0.05)
    share_fast = gp.period_ticks.count(periods[0]) / len(gp.period_ticks)
    assert share_fast == pytest.approx(0.7, abs=0.06)


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    a = make_plan(GWS, 100, 200.0, storm_fraction=0.2, seed=9)
    b = make_plan(GWS, 100, 200.0, storm_fraction=0.2, seed=9)
    c = make_plan(GWS, 100, 200.0, storm_fraction=0.2, seed=10)
    assert a == b
    assert [readings_at(a, g, 7, 1.0) for g in a.gateways] == [readings_at(b, g, 7, 1.0) for g in b.gateways]
    assert a.storm_devices() != c.storm_devices()


def test_storm_floods_the_chosen_fraction_of_gauges_above_the_default_thresholds() -> None:
    plan = make_plan(GWS, 100, 20.0, storm_fraction=0.25, storm_start_s=10.0, storm_end_s=5000.0, tick_s=1.0, seed=1)
    gauges = plan.kind_counts()["water_gauge"]
    storm = plan.storm_devices()
    assert len(storm) == round(0.25 * gauges)
    assert all("-wl" in d for d in storm)
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))["rules"]
    levels = next(r for r in rules if r["name"] == "road-water-depth")["levels"]
    major = next(lv["raise_at"] for lv in levels if lv["severity"] == "major")
    critical = next(lv["raise_at"] for lv in levels if lv["severity"] == "critical")
    assert major < STORM_DEPTH_M - 0.005 and critical > STORM_DEPTH_M + 0.005

    def depths(tick: int) -> dict[str, float]:
        out = {}
        for gp in plan.gateways:
            for r in readings_at(plan, gp, tick, float(tick)):
                if r.metric == "depth":
                    out[r.device] = r.value
        return out

    longest = max(p for gp in plan.gateways for p in gp.buckets)
    during = {d: v for t in range(10, 10 + longest) for d, v in depths(t).items()}
    before = {d: v for t in range(0, 10) for d, v in depths(t).items()}
    after = {d: v for t in range(5000, 5000 + longest) for d, v in depths(t).items()}
    assert set(storm) <= set(during)
    assert all(v > major for d, v in during.items() if d in storm)
    assert all(v < 0.15 for d, v in during.items() if d not in storm)  # below minor: no other alarms
    assert all(v < 0.15 for v in before.values()) and all(v < 0.15 for v in after.values())


def test_a_dry_gauges_depth_is_steady_so_the_rate_rule_sees_no_rise() -> None:
    plan = make_plan(["g"], 50, 10.0, mix={"water_gauge": 1.0}, tick_s=1.0, seed=2)
    gp = plan.gateways[0]
    depths = {r.value for t in range(max(gp.buckets) * 2) for r in readings_at(plan, gp, t, float(t))
              if r.metric == "depth"}
    assert depths == {0.02}


def test_zero_storm_fraction_floods_nothing() -> None:
    assert make_plan(GWS, 50, 100.0).storm_devices() == []


def test_water_gauge_only_plan_keeps_the_chaos_ledgers_device_ids() -> None:
    plan = make_plan(["gw-load-01"], 20, 300.0, mix={"water_gauge": 1.0})
    assert list(plan.gateways[0].devices) == load_devices("gw-load-01", 20)


def test_birth_device_list_carries_kind_place_and_planned_interval() -> None:
    plan = make_plan(["gw-a", "gw-b"], 40, 20.0, seed=1)
    infos = device_infos(plan, plan.gateways[1], 1)
    assert [i.id for i in infos] == list(plan.gateways[1].devices)
    assert {i.kind for i in infos} == set(KINDS)
    assert all(i.interval_s == p * plan.tick_s for i, p in zip(infos, plan.gateways[1].period_ticks, strict=True))
    assert all(i.component_id is not None and len(i.component_id) == 16 for i in infos)
    assert len({i.component_id for i in infos}) == len(infos)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"rate_per_s": 0.0}, "rate=0.0"),
        ({"rate_per_s": math.inf}, "rate=inf"),
        ({"devices_per_gateway": 0}, "devices_per_gateway=0"),
        ({"storm_fraction": 1.5}, "storm_fraction=1.5"),
        ({"mix": {"toaster": 1.0}}, "mix.toaster"),
        ({"mix": {"lamp": -1.0}}, "mix.lamp"),
        ({"tick_s": 0.0}, "tick_s=0.0"),
        ({"gateways": ["a", "a"]}, "gateways=2"),
        ({"rate_per_s": 1e6, "tick_s": 1.0}, "more often than once a tick"),
        # one gauge, 3 metrics: every 1.45 s would round to every tick, 45 % over the request
        ({"gateways": ["g1"], "devices_per_gateway": 1, "mix": {"water_gauge": 1.0}, "rate_per_s": 3 / 1.45,
          "tick_s": 1.0}, "whole-tick intervals"),
    ],
)
def test_refuses_what_it_cannot_plan(kw: dict[str, object], needle: str) -> None:
    args: dict[str, object] = {"gateways": ["g1", "g2"], "devices_per_gateway": 10, "rate_per_s": 5.0}
    args.update(kw)
    with pytest.raises(LoadgenError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        make_plan(**args)  # type: ignore[arg-type]
