"""A threshold alarm's evidence names the condition that clears it, so a case returned for re-work
can show the readings against it without loading the rule files."""

from __future__ import annotations

from rules_helpers import T0, birth, gauge, rules_from, run, series

from contracts.alarms import TransitionKind

LEVELS = rules_from(
    """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 0, clear_after_s: 0}
      - {severity: major, raise_at: 0.25, hysteresis: 0.03, raise_after_s: 0, clear_after_s: 0}
    flapping: null
  - name: battery
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: battery
    direction: below
    levels:
      - {severity: minor, raise_at: 3.5, hysteresis: 0.1, raise_after_s: 0, clear_after_s: 0}
      - {severity: major, raise_at: 3.3, hysteresis: 0.1, raise_after_s: 0, clear_after_s: 0}
    flapping: null
"""
)


def test_threshold_evidence_names_the_lowest_levels_clear_condition() -> None:
    _, trs = run(LEVELS, [birth(gauge()), *series("wl-0001", "depth", [0.3, 0.1]),
                          *series("wl-0001", "battery", [3.2], t0=T0 + 500)])
    by = {(tr.rule, tr.kind): tr.evidence for tr in trs}
    raised = by[("depth", TransitionKind.RAISED)]
    assert raised["value"] == 0.3 and raised["threshold"] == 0.25
    assert raised["clear_at"] == 0.13 and raised["direction"] == "above"  # every level released below 0.15-0.02
    assert by[("depth", TransitionKind.CLEARED)]["clear_at"] == 0.13
    low = by[("battery", TransitionKind.RAISED)]
    assert low["clear_at"] == 3.6 and low["direction"] == "below"
