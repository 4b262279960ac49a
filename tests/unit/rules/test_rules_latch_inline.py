"""The evaluator's inlined latch steps equal the reference :func:`rules.lifecycle.step_latch`, sample by sample.

The live hot path copies ``step_latch`` into ``_step_one`` (single-level rules) and ``_levels_step`` (threshold
levels) to save a call per rule per reading; these properties pin the copies to the reference.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rules_helpers import T0, rules_from

from contracts.alarms import AlarmTransition
from contracts.reading import DeviceInfo, Reading
from rules.evaluate import EngineState, _levels_step, _step_one, compile_rule
from rules.lifecycle import LatchState, latched_severity, step_latch

RULES = rules_from(
    """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 60, clear_after_s: 300}
      - {severity: major, raise_at: 0.25, hysteresis: 0.03, raise_after_s: 120, clear_after_s: 0}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.03, raise_after_s: 0, clear_after_s: 600}
    flapping: null
  - name: low
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: distance
    direction: below
    offset: 0.1
    levels:
      - {severity: major, raise_at: 0.5, hysteresis: 0.1, raise_after_s: 30, clear_after_s: 90}
    flapping: null
"""
)
INFO = DeviceInfo("wl-0001", "water_gauge", "water_gauge")

steps = st.lists(
    st.tuples(st.sampled_from([0.0, 1.0, 30.0, 60.0, 119.0, 120.0, 300.0, 601.0]), st.booleans(), st.booleans()),
    min_size=1, max_size=40,
)


@given(steps, st.sampled_from([0.0, 60.0, 120.0]), st.sampled_from([0.0, 90.0, 300.0]), st.booleans())
def test_single_level_step_equals_step_latch(
    samples: list[tuple[float, bool, bool]], raise_after_s: float, clear_after_s: float, active: bool
) -> None:
    comp = compile_rule(RULES[0], INFO)
    assert comp is not None
    state = EngineState()
    if active:
        state.active[comp.key] = "some-alarm"
    ref = LatchState.fresh(len(comp.severities))
    t = T0
    for gap, raise_c, clear_c in samples:
        t += gap
        step_latch(ref, 0, raise_c, clear_c, t=t, raise_after_s=raise_after_s, clear_after_s=clear_after_s)
        on = _step_one(state, comp, t, raise_c, clear_c, raise_after_s=raise_after_s, clear_after_s=clear_after_s)
        latch = state.latches[comp.key]
        assert (latch.on[0], latch.since[0]) == (ref.on[0], ref.since[0])
        assert on == (latch.on if ref.on[0] or active else None)


@given(
    st.lists(st.tuples(st.sampled_from([1.0, 30.0, 60.0, 120.0, 301.0, 600.0]),
                       st.floats(-0.2, 0.8, allow_nan=False)), min_size=1, max_size=40),
    st.sampled_from([0, 1]),
)
def test_levels_step_equals_step_latch_per_level(samples: list[tuple[float, float]], which: int) -> None:
    rule = RULES[which]
    comp = compile_rule(rule, INFO)
    assert comp is not None
    metric = "depth" if which == 0 else "distance"
    state = EngineState()
    ref = LatchState.fresh(len(comp.severities))
    t = T0
    for gap, raw in samples:
        t += gap
        value = raw + comp.offset
        for i, lv in enumerate(comp.levels):
            if comp.above:
                rc, cc = value >= lv.raise_at, value < lv.clear_at
            else:
                rc, cc = value <= lv.raise_at, value > lv.clear_at
            step_latch(ref, i, rc, cc, t=t, raise_after_s=lv.raise_after_s, clear_after_s=lv.clear_after_s)
        out: list[AlarmTransition] = []
        _levels_step(state, comp, Reading(INFO.id, metric, t, raw), out)
        latch = state.latches[comp.key]
        assert (latch.on, latch.since) == (ref.on, ref.since)
        # the alarm follows the highest latched level (no flapping hold: it clears when none is latched)
        alarm = state.alarms.get(state.active.get(comp.key, ""))
        assert (alarm.severity if alarm is not None else None) == latched_severity(ref, comp.severities)
