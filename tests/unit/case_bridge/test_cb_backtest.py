from __future__ import annotations

from case_bridge.backtest import cases_would_open
from contracts.alarms import AlarmTransition, Severity, TransitionKind


def _tr(alarm: str, device: str, rule: str, kind: TransitionKind, t: float) -> AlarmTransition:
    return AlarmTransition(alarm, device, rule, kind, Severity.MAJOR, t)


def test_one_case_per_open_condition_and_a_new_one_after_clear() -> None:
    trs = [
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.RAISED, 1),
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.ESCALATED, 2),
        _tr("a1", "wl-0001", "road-water-depth", TransitionKind.CLEARED, 3),
        _tr("a2", "wl-0001", "road-water-depth", TransitionKind.RAISED, 4),
        _tr("a3", "wl-0002", "road-water-depth", TransitionKind.RAISED, 5),
        _tr("x1", "wl-0002", "no_such_rule_maps_to_a_case", TransitionKind.RAISED, 6),
    ]
    assert cases_would_open(trs) == {"road-water-depth": 3}
