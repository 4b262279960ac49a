"""The console's half of the street-confirmed gate and of 督办 on the case: pure pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from case_bridge.policy import ClearCondition
from console.serialize import urges
from console.thresholds import clear_conditions, load
from console.views import DeviceView, TimelineEntry

ROOT = Path(__file__).resolve().parents[3]


def test_clear_conditions_come_from_the_rule_files_in_the_readings_scale() -> None:
    rules = load([ROOT / "configs/rules/default.yaml"])
    plain = {c.rule: c for c in clear_conditions(rules, DeviceView("wl-0001", "water_gauge"))}
    assert plain["road-water-depth"] == ClearCondition("road-water-depth", "depth", 0.13, True)  # 0.15 - 0.02
    # the underpass gauge: its own lowest level (0.10 - 0.02), datum offset (-0.01) taken back out
    under = {c.rule: c for c in clear_conditions(rules, DeviceView("wl-0002", "water_gauge"))}
    assert under["road-water-depth"].clear_at == pytest.approx(0.09)
    assert "road-water-rising" not in plain  # a rate rule has no level to read against


def test_urges_summary_counts_and_names_the_latest() -> None:
    entries = [TimelineEntry(1.0, "sys", "dispatch", "filed", "dispatched"),
               TimelineEntry(2.0, "cmd", "urge", "dispatched", "dispatched", "faster", {"overdue_s": -60.0}),
               TimelineEntry(3.0, "cmd2", "urge", "dispatched", "dispatched", "", {"overdue_s": 30.0})]
    assert urges(entries) == {"count": 2, "last": {"t": 3.0, "actor": "cmd2", "note": "", "overdue_s": 30.0}}
    assert urges(entries[:1]) == {"count": 0, "last": None}
