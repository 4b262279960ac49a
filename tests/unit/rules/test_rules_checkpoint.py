"""Checkpoints: what a commit persists follows what changed, and the state log rebuilds the exact state."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_helpers import T0, birth, gauge, key, rules_from, series

from contracts.alarms import TransitionKind
from contracts.reading import Quality, Reading
from rules.evaluate import EngineState, RuleSet, evaluate, fold_state_log

RULES = rules_from(
    """
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 60, clear_after_s: 300}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.03, raise_after_s: 0, clear_after_s: 600}
    flapping: {max_raises: 2, window_s: 7200, hold_s: 900}
  - name: rising
    kind: rate
    applies_to: {kinds: [water_gauge]}
    metric: depth
    rate_per_h: 0.10
    hysteresis_per_h: 0.03
    window_s: 1800
    min_points: 4
    max_points: 12
    eval_every_s: 120
    raise_after_s: 60
    clear_after_s: 300
  - name: fault
    kind: sensor_fault
    applies_to: {kinds: [water_gauge]}
    metric: depth
    min: -0.05
    max: 2.0
    bad_count: 2
    good_count: 2
  - name: gone
    kind: staleness
    applies_to: {kinds: [water_gauge]}
    factor: 3
    min_silence_s: 600
"""
)
DEVICES = ("wl-0001", "wl-0002", "wl-0003")


class FakeStore:
    """The store's checkpoint semantics without SQL (the SQL itself is tested against real databases):
    a compaction replaces rows and empties the log, anything else appends one log record."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.log: list[bytes] = []
        self.global_part: dict[str, Any] = {}

    def commit(self, st: EngineState, names: tuple[str, ...], max_log: int) -> tuple[int, int, bool]:
        parts, entries, compact = st.take_checkpoint(names, max_log)
        self.global_part = orjson.loads(orjson.dumps(st.global_json()))
        if compact:
            self.rows.update(orjson.loads(orjson.dumps(parts)))
            self.log.clear()
        elif parts or entries:
            self.log.append(orjson.dumps({"p": parts, "s": entries}))
        return len(parts), len(entries), compact

    def load(self) -> EngineState:
        parts = {d: orjson.loads(orjson.dumps(p)) for d, p in self.rows.items()}
        fold_state_log(parts, (orjson.loads(r) for r in self.log))
        return EngineState.from_parts(self.global_part, parts.values())


def _stream(values: list[float], gaps: list[float], qs: list[int]) -> list[Reading]:
    out = []
    t = T0
    for i, v in enumerate(values):
        dev = DEVICES[i % len(DEVICES)]
        out.append(Reading(dev, "depth", t, v + 0.01 * (i % 3), "m", Quality(qs[i])))
        t += gaps[i]
    return out


values_st = st.lists(
    st.one_of(st.floats(min_value=-0.1, max_value=0.6, allow_nan=False), st.sampled_from([0.15, 0.13, 0.40, 0.0, 5.0])),
    min_size=1, max_size=80,
)
gaps_st = st.lists(st.sampled_from([10.0, 30.0, 60.0, 60.0, 300.0, 3000.0]), min_size=80, max_size=80)
qs_st = st.lists(st.sampled_from([0, 0, 0, 0, 0, 1, 2]), min_size=80, max_size=80)


@settings(max_examples=40, deadline=None)
@given(values=values_st, gaps=gaps_st, qs=qs_st, cuts=st.lists(st.integers(0, 80), max_size=6),
       max_log=st.integers(0, 12))
def test_state_log_rebuilds_the_state_and_a_restart_continues_alike(
    values: list[float], gaps: list[float], qs: list[int], cuts: list[int], max_log: int
) -> None:
    stream = _stream(values, gaps, qs)
    rs = RuleSet(RULES)
    names = rs.condition_names
    store = FakeStore()
    state, _ = evaluate(rs, EngineState(), [birth(*(gauge(d) for d in DEVICES))], T0)
    store.commit(state, names, max_log)
    bounds = sorted({0, len(stream), *[c for c in cuts if c <= len(stream)]})
    for a, b in itertools.pairwise(bounds):
        state, _ = evaluate(rs, state, stream[a:b], stream[b - 1].ts if b else T0)
        store.commit(state, names, max_log)
        # a kill -9 here: the rows plus the log since the last compaction are exactly the state
        restored = store.load()
        assert restored.to_json() == state.to_json()
        # and the restarted engine goes on to raise and clear exactly what the live one does
        rest = stream[b:] + series(DEVICES[0], "depth", [0.5] * 3, stream[-1].ts + 60.0)
        copy = EngineState.from_json(orjson.loads(orjson.dumps(state.to_json())))  # to_json shares lists
        _, live_after = evaluate(rs, copy, rest, rest[-1].ts + 4000.0)
        _, restored_after = evaluate(rs, restored, rest, rest[-1].ts + 4000.0)
        # (the order among devices within one tick follows dict order, which a reload does not keep)
        assert sorted(key(restored_after)) == sorted(key(live_after))


def test_a_reading_logs_its_series_not_its_device() -> None:
    rs = RuleSet(RULES)
    names = rs.condition_names
    state, _ = evaluate(rs, EngineState(), [birth(*(gauge(d) for d in DEVICES))], T0)
    parts, entries, compact = state.take_checkpoint(names, 1000)
    assert set(parts) == {*DEVICES, "gw-1"} and entries == [] and not compact  # the birth: whole parts
    readings = [*series("wl-0001", "depth", [0.01, 0.02], T0 + 60), *series("wl-0002", "battery", [3.6], T0 + 60)]
    state, trs = evaluate(rs, state, readings, T0 + 200)
    assert trs == []
    parts, entries, compact = state.take_checkpoint(names, 1000)
    assert parts == {} and not compact  # wl-0003 did not report: nothing of it is serialised
    assert sorted((e[0], e[1]) for e in entries) == [("wl-0001", "depth"), ("wl-0002", "battery")]
    depth = next(e for e in entries if e[0] == "wl-0001")
    assert depth[2] == [T0 + 120, 0.02, True]  # the latest value: its time is the watermark and the last seen
    n = depth[3]
    assert set(depth[4 : 4 + 3 * n : 3]) == {"depth|wl-0001", "fault|wl-0001"}  # the latches of the rules on depth
    assert set(depth[4 + 3 * n :: 2]) == {"rising|wl-0001", "fault|wl-0001"}  # and their scratch
    assert state.take_checkpoint(names, 1000) == ({}, [], False)  # taken: nothing changed since


def test_an_alarm_change_logs_the_whole_device() -> None:
    rs = RuleSet(RULES)
    names = rs.condition_names
    state, _ = evaluate(rs, EngineState(), [birth(gauge())], T0)
    state.take_checkpoint(names, 1000)
    state, trs = evaluate(rs, state, series("wl-0001", "depth", [0.5], T0 + 60), T0 + 60)
    assert [tr.kind for tr in trs] == [TransitionKind.RAISED]
    parts, entries, _ = state.take_checkpoint(names, 1000)
    assert set(parts) == {"wl-0001"} and entries == []  # a raise can delete state later: whole part, no entry
    assert parts["wl-0001"]["active"] == {"depth|wl-0001": trs[0].alarm_id}


def test_compaction_after_max_log_entries_writes_every_logged_device() -> None:
    rs = RuleSet(RULES)
    names = rs.condition_names
    state, _ = evaluate(rs, EngineState(), [birth(*(gauge(d) for d in DEVICES))], T0)
    assert state.take_checkpoint(names, 5)[2] is False  # 4 whole parts logged
    state, _ = evaluate(rs, state, series("wl-0001", "depth", [0.0], T0 + 60), T0 + 60)
    parts, entries, compact = state.take_checkpoint(names, 5)  # the fifth entry: compact instead
    assert compact and entries == [] and set(parts) == {*DEVICES, "gw-1"}
    state, _ = evaluate(rs, state, series("wl-0002", "depth", [0.0], T0 + 120), T0 + 120)
    parts, entries, compact = state.take_checkpoint(names, 5)
    assert not compact and parts == {} and [e[0] for e in entries] == ["wl-0002"]
    # 0: every checkpoint is a compaction of what changed (one row per changed device)
    state, _ = evaluate(rs, state, series("wl-0003", "depth", [0.0], T0 + 180), T0 + 180)
    parts, entries, compact = state.take_checkpoint(names, 0)
    assert compact and set(parts) == {"wl-0002", "wl-0003"}
