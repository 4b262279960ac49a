"""Astronomical switching: the nights of a circuit and what a scheduler tick sends (pure)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from contracts.config import parse_cloud_section
from contracts.errors import ConfigError
from lighting.schedule import (
    CircuitSchedule,
    DimStep,
    LightingSettings,
    Step,
    due,
    night,
    position,
    steps_between,
    upcoming,
)

TZ = ZoneInfo("Asia/Shanghai")
HZ = (30.25, 120.13)  # Hangzhou, West Lake
CFG = CircuitSchedule(on_after_dusk_min=10, off_before_dawn_min=15,
                      night_steps=(DimStep(at="23:00", level_pct=50), DimStep(at="05:00", level_pct=30)))


def local(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, TZ)


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()


def test_summer_night_in_hangzhou() -> None:
    # NOAA: sunset 2026-06-21 19:04, sunrise 06-22 04:58 local; on 10 min after, off 15 min before
    steps = night("c1", CFG, HZ, dt.date(2026, 6, 21), TZ)
    assert [(s.action, s.level_pct) for s in steps] == [("on", None), ("dim", 100.0), ("dim", 50.0), ("off", None)]
    assert abs(steps[0].t - at(2026, 6, 21, 19, 14)) < 120
    assert steps[2].t == at(2026, 6, 21, 23)
    assert abs(steps[3].t - at(2026, 6, 22, 4, 43)) < 120  # 05:00 falls after switch-off: no 30 % step


def test_winter_night_has_the_morning_step() -> None:
    steps = night("c1", CFG, HZ, dt.date(2026, 12, 21), TZ)
    assert [(local(s.t).strftime("%m-%d %H:%M"), s.action, s.level_pct) for s in steps][2:4] == [
        ("12-21 23:00", "dim", 50.0), ("12-22 05:00", "dim", 30.0)]
    assert abs(steps[0].t - at(2026, 12, 21, 17, 13)) < 180 and abs(steps[-1].t - at(2026, 12, 22, 6, 36)) < 180


def test_position_shifts_the_times() -> None:
    east = night("c1", CircuitSchedule(), (30.25, 125.0), dt.date(2026, 3, 20), TZ)
    west = night("c1", CircuitSchedule(), (30.25, 120.0), dt.date(2026, 3, 20), TZ)
    assert west[0].t - east[0].t == pytest.approx(20 * 60, abs=30)  # 5° of longitude: 20 minutes
    assert [s.action for s in west] == ["on", "off"]  # no steps: no dim commands at all
    assert position([(30.0, 120.0), (30.2, 120.2), (None, None)]) == pytest.approx((30.1, 120.1))
    assert position([(None, 1.0)]) is None


def test_polar_night_and_nonsense_offsets_give_no_events() -> None:
    assert night("c1", CircuitSchedule(), (78.2, 15.6), dt.date(2026, 6, 21), TZ) == []  # Svalbard, midnight sun
    # offsets that close the night (on after off) give nothing rather than a lamp switched off before on
    short = CircuitSchedule(on_after_dusk_min=120, off_before_dawn_min=120)
    assert night("c1", short, (66.0, 25.0), dt.date(2026, 6, 10), TZ) == []


def test_steps_between_and_catch_up() -> None:
    circuits = {"c1": (CFG, *HZ), "c2": (CircuitSchedule(), 30.3, 120.2)}
    steps = steps_between(circuits, at(2026, 12, 21, 12), at(2026, 12, 22, 12), TZ)
    # c2 stands further east and switches at sunset itself: on before c1, off after it
    assert [(s.circuit, s.action) for s in steps] == [
        ("c2", "on"), ("c1", "on"), ("c1", "dim"), ("c1", "dim"), ("c1", "dim"), ("c1", "off"), ("c2", "off")]
    assert steps_between(circuits, at(2026, 12, 21, 23), at(2026, 12, 21, 23), TZ) == []  # (after, until]
    # after a restart at 23:05: the night's switch-on is too old, the 23:00 dim step is still sent
    since_noon = steps_between(circuits, at(2026, 12, 21, 12), at(2026, 12, 21, 23, 5), TZ)
    assert [(s.circuit, s.action, s.level_pct) for s in due(since_noon, at(2026, 12, 21, 23, 5), 900)] == [
        ("c1", "dim", 50.0)]
    # down all evening with a long catch-up: only where each circuit should be now, not the history
    sent = due(since_noon, at(2026, 12, 21, 23, 5), 86400)
    assert [(s.circuit, s.action, s.level_pct) for s in sent] == [("c2", "on", None), ("c1", "on", None),
                                                                  ("c1", "dim", 50.0)]
    nxt = upcoming("c1", CFG, HZ, at(2026, 12, 21, 22), TZ, hours=3)
    assert [s.label for s in nxt] == ["调光 dim 50 %"]
    assert Step(0.0, "c", "on").label == "开 on" and Step(0.0, "c", "off").label == "关 off"


def test_config_is_validated_strictly() -> None:
    text = """
lighting:
  enabled: true
  circuits:
    c-xihu-01: {on_after_dusk_min: 10, off_before_dawn_min: 10, night_steps: [{at: "23:00", level_pct: 50}]}
"""
    s = parse_cloud_section(text, "lighting", LightingSettings, "cloud.yaml")
    assert s.enabled and s.circuits["c-xihu-01"].night_steps[0].minutes == 23 * 60
    for bad, where in (
        ("circuits: {c1: {on_after_dusk: 10}}", "lighting.circuits.c1.on_after_dusk"),  # unknown key
        ('circuits: {c1: {night_steps: [{at: "24:00", level_pct: 50}]}}', "lighting.circuits.c1.night_steps[0].at"),
        ('circuits: {c1: {night_steps: [{at: "23:00", level_pct: 150}]}}', "level_pct"),
        ('circuits: {c1: {night_steps: [{at: "23:00", level_pct: 5}, {at: "23:00", level_pct: 9}]}}', "same time"),
        ("timezone: Mars/Olympus", "time zone"),
        ("circuits: {'../x': {}}", "circuit id"),
        ("tick_s: 0", "lighting.tick_s"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_cloud_section(f"lighting:\n  {bad}\n", "lighting", LightingSettings, "cloud.yaml")
        assert where in str(exc.value) and "cloud.yaml" in str(exc.value)


def test_tick_sends_each_lamp_of_a_due_circuit_once() -> None:
    from lighting.schedule import Lamp, tick

    settings = LightingSettings(enabled=True, catch_up_s=600, circuits={"c1": CFG, "c9": CircuitSchedule()})
    lamps = [Lamp("lamp-2", "gw1", "c1", 30.25, 120.13), Lamp("lamp-1", "gw2", "c1", 30.25, 120.13),
             Lamp("lamp-3", "gw1", "c-other", 30.25, 120.13), Lamp("lamp-4", "gw1", "c1", None, None)]
    t23 = at(2026, 12, 21, 23)
    cmds, last = tick(settings, lamps, {}, t23 + 20, TZ)
    assert [(gw, c.action, c.device, c.args) for gw, c in cmds] == [
        ("gw2", "dim", "lamp-1", {"level_pct": 50.0}), ("gw1", "dim", "lamp-2", {"level_pct": 50.0}),
        ("gw1", "dim", "lamp-4", {"level_pct": 50.0})]  # a lamp without a position still belongs to its circuit
    assert all(len(c.id) <= 64 and c.id.startswith("astro-") for _g, c in cmds)
    assert last == {"c1": t23 + 20}  # c9 has no known lamp: not advanced, its steps wait for its lamps
    cmds, last = tick(settings, lamps, last, t23 + 50, TZ)
    assert cmds == [] and last["c1"] == t23 + 50  # nothing new since the last tick
    dawn, _ = tick(settings, lamps, last, at(2026, 12, 22, 6, 40), TZ)  # ticks missed overnight
    assert [c.action for _g, c in dawn] == ["lamp_off"] * 3  # only the latest switch, within catch-up
