"""AlarmStore on SQLite and PostgreSQL: one interface, atomic commits, idempotent replays, outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from rules.store import AlarmStore, StateDelta, open_alarm_store

pytestmark = pytest.mark.integration
T0 = 1_764_057_600.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlarmStore]:
    if request.param == "sqlite":
        s = open_alarm_store(f"sqlite:///{tmp_path}/rules.db")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:  # the session database is shared: start clean
            conn.execute("DROP TABLE IF EXISTS rules_state, rules_device_state, rules_alarms, rules_transitions")
            if conn.execute("SELECT to_regclass('schema_version')").fetchone() != (None,):
                conn.execute("DELETE FROM schema_version WHERE store = 'rules'")
        s = open_alarm_store(dsn)
    try:
        yield s
    finally:
        s.close()


def tr(kind: TransitionKind, sev: Severity, t: float, actor: str | None = None) -> AlarmTransition:
    return AlarmTransition("wl-0001.depth.1", "wl-0001", "depth", kind, sev, T0 + t, 0.3, {"metric": "depth"}, actor)


def test_lifecycle_is_stored_and_listed(store: AlarmStore) -> None:
    assert store.load_state() is None
    store.commit(StateDelta({"v": 1}, {"a": {"x": 1}, "b": {"x": 2}}), [tr(TransitionKind.RAISED, Severity.MINOR, 0)])
    store.commit(StateDelta({"v": 2}, {"a": {"x": 3}}), [tr(TransitionKind.ESCALATED, Severity.CRITICAL, 10),
                                                         tr(TransitionKind.DEESCALATED, Severity.MAJOR, 20)])
    loaded = store.load_state()
    assert loaded is not None
    assert loaded[0] == {"v": 2} and sorted(p["x"] for p in loaded[1]) == [2, 3]
    rec = store.get("wl-0001.depth.1")
    assert rec is not None and rec.active and rec.severity is Severity.MAJOR and rec.max_severity is Severity.CRITICAL
    store.commit(None, [tr(TransitionKind.ACKNOWLEDGED, Severity.MAJOR, 30, "duty-li")])
    store.commit(None, [tr(TransitionKind.CLEARED, Severity.MAJOR, 40)])
    rec = store.get("wl-0001.depth.1")
    assert rec is not None and not rec.active and rec.acked_by == "duty-li" and rec.cleared_t == T0 + 40
    assert [r.alarm_id for r in store.list(device="wl-0001")] == ["wl-0001.depth.1"]
    assert store.list(active_only=True) == []
    kinds = [t.kind for t in store.transitions("wl-0001.depth.1")]
    assert kinds == [TransitionKind.RAISED, TransitionKind.ESCALATED, TransitionKind.DEESCALATED,
                     TransitionKind.ACKNOWLEDGED, TransitionKind.CLEARED]
    assert store.get("nope") is None


def test_replayed_commit_is_a_no_op_and_outbox_drains(store: AlarmStore) -> None:
    raised = tr(TransitionKind.RAISED, Severity.MAJOR, 0)
    store.commit(StateDelta({"v": 1}, {}), [raised])
    store.commit(StateDelta({"v": 1}, {}), [raised])  # a crash between commit and ack replays the same step
    pending = store.unpublished()
    assert [p[1] for p in pending] == [raised]
    store.mark_published([pending[0][0]])
    assert store.unpublished() == []
    assert len(store.transitions(raised.alarm_id)) == 1


def test_state_log_is_folded_into_rows_on_load(store: AlarmStore) -> None:
    t = T0 + 60
    part_a = {"last_ts": {"a|depth": T0}, "latest": {"a": {"depth": [T0, 0.1, True]}}, "latches": {}, "active": {}}
    store.commit(StateDelta({"v": 1}, {"a": part_a}), [])  # a compaction: rows
    store.commit(StateDelta({"v": 2}, {"b": {"x": 1}}, compact=False), [])  # whole parts logged
    entry = ["a", "depth", [t, 0.3, True], 1, "depth|a", [True], [t], "rising|a", {"t": [t]}]
    store.commit(StateDelta({"v": 3}, {}, [entry], compact=False), [tr(TransitionKind.RAISED, Severity.MINOR, 60)])
    store.commit(StateDelta({"v": 4}, {"b": {"x": 2}}, compact=False), [])  # log order: the newer part wins
    want_a = {"last_ts": {"a|depth": t}, "latest": {"a": {"depth": [t, 0.3, True]}},
              "latches": {"depth|a": [[True], [t]]}, "active": {}, "last_seen": {"a": t},
              "scratch": {"rising|a": {"t": [t]}}}
    for _ in range(2):  # the first load folds the log into the rows, the second reads the rows alone
        loaded = store.load_state()
        assert loaded is not None and loaded[0] == {"v": 4}
        assert sorted(loaded[1], key=lambda p: "x" in p) == [want_a, {"x": 2}]
    store.commit(StateDelta({"v": 5}, {"b": {"x": 3}}, compact=False), [])  # the log starts again after a fold
    loaded = store.load_state()
    assert loaded is not None and loaded[0] == {"v": 5} and {"x": 3} in loaded[1]
    assert [t.kind for t in store.transitions("wl-0001.depth.1")] == [TransitionKind.RAISED]
