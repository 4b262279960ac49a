"""Event replay in the backtest: WIM vehicles and cover interrupts reach alarms and predicted cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from case_bridge.backtest import cases_would_open, predict_cases
from contracts.alarms import TransitionKind
from contracts.reading import DeviceInfo, Event
from rules.backtest import History, backtest
from rules.history import load_events
from rules.specs import load_rules

DEFAULT_RULES = Path(__file__).resolve().parents[3] / "configs" / "rules" / "default.yaml"
T0 = 1_764_547_200.0
WIM = DeviceInfo("wim-0001", "wim", "wim", 30.28, 120.16, grid="330106001001")
COVER = DeviceInfo("mh-0001", "tilt", "manhole", 30.26, 120.14, grid="330106002001",
                   component_id="3301060101000001")


def _vehicle(seq: int, t: float, gross_kg: int) -> Event:
    return Event("wim-0001", "vehicle", f"v{seq}", t, {"gross_kg": gross_kg, "axles": 6, "axle_kg": [8000] * 6})


def test_wim_and_cover_events_are_replayed_into_alarms_and_cases() -> None:
    events = [
        _vehicle(1, T0 + 10, 60_000),  # 49 t limit + 5 %: overloaded
        _vehicle(2, T0 + 20, 40_000),  # legal
        _vehicle(3, T0 + 30, 70_000),  # > 30 % over: critical
        _vehicle(4, T0 + 7200, 60_000),  # after the first two cleared themselves (auto_clear_s 3600)
        Event("mh-0001", "cover_open", "c1", T0 + 100, {}),
    ]
    history = History({}, {WIM.id: WIM, COVER.id: COVER}, events, T0, T0 + 3 * 3600)
    report = backtest(load_rules([str(DEFAULT_RULES)]), history, cases_would_open)
    wim = [(tr.kind, tr.severity.value) for tr in report.transitions if tr.rule == "wim-overload"]
    assert wim.count((TransitionKind.RAISED, "major")) == 2 and (TransitionKind.RAISED, "critical") in wim
    assert sum(k is TransitionKind.CLEARED for k, _s in wim) == 3
    assert report.rules["wim-overload"].raised == 3
    assert report.rules["manhole-cover-open"].raised == 1
    # one enforcement case per overloaded vehicle (the category table's ``correlate: vehicle``)
    assert report.rules["wim-overload"].cases_opened == 3
    assert report.rules["manhole-cover-open"].cases_opened == 1
    cases = predict_cases(report.transitions, history.registry, fixed_on_clear=False)
    assert sorted((c.service_code, c.corr_key, len(c.alarms)) for c in cases) == [
        ("B0101", "incident:mh-0001", 1), ("S9901", "vehicle:wim-0001:wim-0001/v1", 1),
        ("S9901", "vehicle:wim-0001:wim-0001/v3", 1), ("S9901", "vehicle:wim-0001:wim-0001/v4", 1)]


class _PagedEvents:
    """Stands in for ``Store.events``: time range, oldest first, at most ``limit``."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.calls: list[tuple[float, int]] = []

    def events_(self, start: float, end: float, device: Any = None, kind: Any = None, limit: int = 1000
                ) -> list[Event]:
        self.calls.append((start, limit))
        return [e for e in self.events if start <= e.ts < end][:limit]


def test_load_events_pages_by_time_without_losing_or_repeating_equal_times() -> None:
    evs = [Event("wim-0001", "vehicle", f"a{i}", T0 + i // 4, {}) for i in range(23)]  # 4 per second
    evs += [Event("wim-0002", "vehicle", f"b{i}", T0 + 100, {}) for i in range(9)]  # 9 at one time: > a page
    evs.append(Event("wim-0002", "vehicle", "late", T0 + 200, {}))
    fake = _PagedEvents(evs)
    store: Any = type("S", (), {"events": fake.events_})()
    got = load_events(store, T0, T0 + 300, page=5)
    assert [e.id for e in got] == [e.id for e in evs]
    assert any(limit > 5 for _s, limit in fake.calls)  # the one-timestamp page was read again, larger
    assert [e.id for e in load_events(store, T0, T0 + 300, ["wim-0002"], page=5)] == [e.id for e in evs[23:]]
