"""A compaction spread over steps (take_checkpoint_sliced): after every commit the stored rows plus the state log
are exactly the engine state, and the log stays bounded (records before a finished compaction are dropped)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.reading import DeviceInfo, Quality, Reading
from rules.evaluate import EngineState, GatewayStatus, RuleSet, evaluate, fold_state_log
from rules.specs import parse_rules
from rules.store import SqliteAlarmStore, StateDelta

pytestmark = pytest.mark.integration
T0 = 1_764_057_600.0
RULES = parse_rules("""
rules:
  - name: depth
    kind: threshold
    applies_to: {kinds: [water_gauge]}
    metric: depth
    levels:
      - {severity: minor, raise_at: 0.15, hysteresis: 0.02, raise_after_s: 60, clear_after_s: 300}
      - {severity: critical, raise_at: 0.40, hysteresis: 0.03}
  - name: gone
    kind: staleness
    applies_to: {kinds: [water_gauge]}
    factor: 3
    min_silence_s: 600
""", "test.yaml")
DEVICES = tuple(f"wl-{i:04d}" for i in range(6))


def stored_state(path: Path) -> tuple[EngineState, int, int]:
    """What a load would rebuild (read without folding in place), the log records held and the newest's number."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, state FROM rules_state ORDER BY id").fetchall()
        parts = {d: orjson.loads(s) for d, s in conn.execute("SELECT device, state FROM rules_device_state")}
    finally:
        conn.close()
    fold_state_log(parts, (orjson.loads(r[1]) for r in rows[1:]))
    return EngineState.from_parts(orjson.loads(rows[0][1]), parts.values()), len(rows) - 1, rows[-1][0] - 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.sampled_from([0.0, 0.1, 0.16, 0.3, 0.45, 0.0]), min_size=10, max_size=60),
       per_step=st.integers(1, 4), max_log=st.integers(1, 10), slice_devices=st.integers(1, 3))
def test_rows_plus_log_are_the_state_after_every_sliced_commit(
    tmp_path_factory: pytest.TempPathFactory, values: list[float], per_step: int, max_log: int, slice_devices: int
) -> None:
    path = tmp_path_factory.mktemp("sliced") / "rules.db"
    store = SqliteAlarmStore(str(path))
    rs = RuleSet(RULES)
    names = rs.condition_names
    infos = tuple(DeviceInfo(d, "radar", "water_gauge") for d in DEVICES)
    state = EngineState()
    batches = [[GatewayStatus("gw-1", "online", T0, infos)]]
    readings = [Reading(DEVICES[i % len(DEVICES)], "depth", T0 + 60.0 * (i + 1), v, "m", Quality.GOOD)
                for i, v in enumerate(values)]
    batches += [list(readings[i : i + per_step]) for i in range(0, len(readings), per_step)]
    drops = 0
    max_records = 0
    try:
        for batch in batches:
            state, trs = evaluate(rs, state, batch, batch[-1].ts if isinstance(batch[-1], Reading) else T0)
            parts, series, drop = state.take_checkpoint_sliced(names, max_log, slice_devices)
            store.commit(StateDelta(state.global_json(), parts, series, compact=False, drop_log_through=drop), trs)
            drops += drop > 0
            restored, records, newest = stored_state(path)
            max_records = max(max_records, records)
            assert restored.to_json() == state.to_json()
            assert newest == state.log_records  # the engine numbers the records as the store does
        # a real load folds the log into the rows and the engine goes on from an empty log
        loaded = store.load_state()
        assert loaded is not None
        assert EngineState.from_parts(*loaded).to_json() == state.to_json()
    finally:
        store.close()
    if len(batches) > 2 * (len(DEVICES) + 1) and max_log <= 4:
        assert drops > 0  # compactions finished and dropped what they superseded
        assert max_records < len(batches)
