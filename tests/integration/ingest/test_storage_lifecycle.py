"""Storage lifecycle against real SQLite files and a real PostgreSQL: rollups, compaction, retention."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_ingest.retention import Hold, RetentionSettings, run
from cloud_ingest.rollup import aggregate
from cloud_ingest.store import WriteBatch, open_store
from cloud_ingest.store.lifecycle import DAY_MS, Lifecycle
from contracts.payloads import ts_ms
from contracts.reading import Quality, Reading
from rules.history import load_history
from tests.support.services import pg_database

pytestmark = pytest.mark.integration

DAY0 = 20_417  # 2025-11-25
T0 = DAY0 * 86_400.0
SERIES = [("wl-1", "depth"), ("wl-1", "battery"), ("mh-2", "tilt")]
UNITS = {"depth": "m", "battery": "V", "tilt": "deg"}


@contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/cw.db"
    else:
        with pg_database() as dsn:
            yield dsn


def execute(url: str, sql: str) -> None:
    """Harness-side SQL (tampering, cleaning), outside the store."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute(sql)
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)


def lifecycle_store(url: str) -> Lifecycle:
    store = open_store(url)
    assert isinstance(store, Lifecycle)
    return store


def reading(device: str, metric: str, t: float, value: float) -> Reading:
    return Reading(device, metric, t, value, UNITS[metric], Quality.GOOD)


@st.composite
def arrivals(draw: st.DrawFn) -> list[list[tuple[str, str, int, float]]]:
    """Batches in arrival order: any order, late data, duplicates (a later copy may carry another value)."""
    n = draw(st.integers(1, 60))
    base = [
        (*draw(st.sampled_from(SERIES)), ts_ms(T0) - 2 * 3_600_000 + draw(st.integers(0, 4 * 3_600_000)),
         draw(st.integers(-5000, 5000)) / 100)
        for _ in range(n)
    ]
    dups = [(d, m, t, draw(st.integers(-5000, 5000)) / 100) for d, m, t, _ in draw(st.lists(st.sampled_from(base)))]
    rows = draw(st.permutations(base + dups))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)), max_size=5)))
    return [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True) if rows[a:b]]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_rollups_equal_raw_aggregates_for_any_arrival(kind: str, tmp_path: Path) -> None:
    with store_url(kind, tmp_path) as url:
        store = lifecycle_store(url)

        @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
        @given(arrivals())
        def check(batches: list[list[tuple[str, str, int, float]]]) -> None:
            for day in store.partitions().rollup_days:
                execute(url, f"DELETE FROM rollup_1m_d{day}")
            execute(url, "DELETE FROM rollup_1h")
            for name in store.partitions().raw_days:
                execute(url, f"DELETE FROM readings_d{name}")
            first: dict[tuple[str, str, int], float] = {}
            inserted = 0
            for batch in batches:
                res = store.write(WriteBatch(readings=[reading(d, m, t / 1000, v) for d, m, t, v in batch]))
                inserted += res.readings_inserted
                for d, m, t, v in batch:
                    first.setdefault((d, m, t), v)
            assert inserted == len(first)  # duplicates are not inserted, so not counted
            for res_s in (60, 3600):
                want = aggregate([(d, m, t, v) for (d, m, t), v in first.items()], res_s)
                got = {}
                for d, m in SERIES:
                    for b, agg in store.rollups(d, m, T0 - 86_400, T0 + 86_400, res_s):
                        got[(d, m, ts_ms(b))] = agg
                assert got.keys() == want.keys()
                for key, a in want.items():
                    g = got[key]
                    assert (g.n, g.min, g.max, g.last_ts_ms, g.last) == (a.n, a.min, a.max, a.last_ts_ms, a.last)
                    assert g.mean == pytest.approx(a.mean, rel=1e-9, abs=1e-9)  # float sums depend on order

        try:
            check()
        finally:
            store.close()


def write_days(url: str, days: int = 3, step_s: int = 300) -> int:
    """Readings every ``step_s`` for each series over ``days`` days from DAY0; returns the count."""
    store = open_store(url)
    rng = random.Random(7)
    rows = [
        reading(d, m, T0 + i * step_s + k, round(rng.uniform(0, 3), 3))
        for i in range(days * 86_400 // step_s)
        for k, (d, m) in enumerate(SERIES)
    ]
    for i in range(0, len(rows), 2000):
        store.write(WriteBatch(readings=rows[i : i + 2000]))
    store.close()
    return len(rows)


def snapshot(url: str) -> dict[str, Any]:
    """Everything a reader sees: raw and bucketed ranges, all readings in order, the backtest's history."""
    store = open_store(url)
    try:
        out: dict[str, Any] = {}
        for d, m in SERIES:
            out[f"raw {d} {m}"] = store.range(d, m, T0 - 86_400, T0 + 4 * 86_400)
            out[f"30s {d} {m}"] = store.range(d, m, T0 + 3000, T0 + 90_000, bucket_s=30)
            out[f"1h {d} {m}"] = store.range(d, m, T0, T0 + 3 * 86_400, bucket_s=3600)
        chunks = list(store.iter_readings(T0 + 1000, T0 + 3 * 86_400 - 1000, chunk=1000))
        assert all(len(c) == 1000 for c in chunks[:-1])
        out["iter"] = [(str(a), str(b), float(t), float(v), int(q)) for c in chunks
                       for a, b, t, v, q in zip(c.device, c.metric, c.ts, c.value, c.quality, strict=True)]
        out["iter wl-1"] = sum(len(c) for c in store.iter_readings(T0, T0 + 86_400, devices=["wl-1"]))
    finally:
        store.close()
    hist = load_history(url, T0, T0 + 3 * 86_400)
    out["history"] = {k: (s.t.tolist(), s.v.tolist()) for k, s in sorted(hist.series.items())}
    return out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_compaction_is_invisible_to_readers_and_retention_keeps_what_it_must(kind: str, tmp_path: Path) -> None:
    with store_url(kind, tmp_path) as url:
        n = write_days(url)
        before = snapshot(url)
        assert len(before["iter"]) == n - 3 * 4 - 3 * 3  # 1000 s trimmed at the start (4 steps), 1000 s at the end
        cfg = RetentionSettings(compact_after_days=15, default_raw_days=30,
                                classes={"hydro": {"metrics": ["depth"], "raw_days": 60}})
        store = lifecycle_store(url)
        try:
            done = run(store, cfg, now=T0 + 20 * 86_400)
            assert [(a.kind, a.day) for a in done] == [("compact", DAY0 + i) for i in range(3)]
            parts = store.partitions()
            assert parts.raw_days == frozenset()
            assert parts.packed == {(c, DAY0 + i) for c in ("default", "hydro") for i in range(3)}
        finally:
            store.close()
        assert snapshot(url) == before  # the backtest and every query read compacted data alike

        # past the default class's 30 days: its days go, except one a case refers to; depth (hydro) stays
        store = lifecycle_store(url)
        try:
            hold = Hold("mh-2", T0 + 86_400 + 100, T0 + 86_400 + 200)
            done = run(store, cfg, now=T0 + 40 * 86_400, holds=[hold])
            assert sorted((a.kind, a.cls, a.day - DAY0) for a in done) == [
                ("drop", "default", 0), ("drop", "default", 2), ("keep", "default", 1)]
            assert store.range("wl-1", "battery", T0, T0 + 86_400) == []
            assert len(store.range("wl-1", "battery", T0 + 86_400, T0 + 2 * 86_400)) == 288  # held
            assert len(store.range("wl-1", "depth", T0, T0 + 86_400)) == 288
            # the rollups still answer for dropped days
            assert store.range("wl-1", "battery", T0, T0 + 3 * 86_400, bucket_s=3600) == before["1h wl-1 battery"]

            # unrolled data is never dropped: rollups that miss a reading keep hydro's day 0
            execute(url, f"DELETE FROM rollup_1m_d{DAY0} WHERE bucket_ms = {ts_ms(T0)} AND metric = 'depth'")
            done = run(store, cfg, now=T0 + 80 * 86_400, holds=[hold])
            kept = {(a.cls, a.day - DAY0): a.reason for a in done if a.kind == "keep"}
            assert "rollups count" in kept[("hydro", 0)]
            assert ("hydro", 2) in {(a.cls, a.day - DAY0) for a in done if a.kind == "drop"}
            assert len(store.range("wl-1", "depth", T0, T0 + 86_400)) == 288
        finally:
            store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_late_rows_of_a_compacted_day_merge_first_write_wins(kind: str, tmp_path: Path) -> None:
    """Ingest's late limit keeps this from happening; a direct writer (an import) may still do it."""
    with store_url(kind, tmp_path) as url:
        store = lifecycle_store(url)
        try:
            store.write(WriteBatch(readings=[reading("wl-1", "depth", T0 + i * 60, i / 10) for i in range(10)]))
            store.compact_day(DAY0, {})
            store.write(WriteBatch(readings=[reading("wl-1", "depth", T0 + i * 60 + 30, 9.0) for i in range(3)]))
            store.compact_day(DAY0, {})
            pts = store.range("wl-1", "depth", T0, T0 + 3600)
            assert [p.ts - T0 for p in pts] == [0, 30, 60, 90, 120, 150, *range(180, 600, 60)]
            assert store.partitions().raw_days == frozenset()
            assert np.isclose(sum(p.value for p in pts), sum(i / 10 for i in range(10)) + 27.0)
            assert store.day_counts("default", DAY0, {}) == (13, 13)
        finally:
            store.close()


def test_day_boundary(tmp_path: Path) -> None:
    """A reading at midnight belongs to the new day's table."""
    store = lifecycle_store(f"sqlite:///{tmp_path}/cw.db")
    try:
        store.write(WriteBatch(readings=[reading("wl-1", "depth", T0 - 0.001, 1.0), reading("wl-1", "depth", T0, 2.0)]))
        assert store.partitions().raw_days == {DAY0 - 1, DAY0}
        assert ts_ms(T0) % DAY_MS == 0
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_writer_recovers_when_maintenance_compacts_a_day_it_wrote(kind: str, tmp_path: Path) -> None:
    """The ingester caches PostgreSQL's day partitions; the retention job (another process) drops
    one: the next write into that day is retryable (StoreUnavailable), and the retry lands."""
    from cloud_ingest.errors import StoreUnavailable

    with store_url(kind, tmp_path) as url:
        writer, maintenance = lifecycle_store(url), lifecycle_store(url)
        try:
            writer.write(WriteBatch(readings=[reading("wl-1", "depth", T0 + i, 1.0) for i in range(5)]))
            assert maintenance.compact_day(DAY0, {}) == 5
            late = WriteBatch(readings=[reading("wl-1", "depth", T0 + 100, 2.0)])
            if kind == "postgres":  # SQLite creates the day table (IF NOT EXISTS) in every write
                with pytest.raises(StoreUnavailable, match="readings_d"):
                    writer.write(late)
            assert writer.write(late).readings_inserted == 1
            assert len(writer.range("wl-1", "depth", T0, T0 + 200)) == 6
        finally:
            writer.close()
            maintenance.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_compaction_in_passes_of_a_few_devices_keeps_everything(kind: str, tmp_path: Path) -> None:
    with store_url(kind, tmp_path) as url:
        store = lifecycle_store(url)
        try:
            store.write(WriteBatch(readings=[reading(f"wl-{k}", "depth", T0 + i * 60, k + i / 100)
                                             for k in range(7) for i in range(30)]))
            before = [store.range(f"wl-{k}", "depth", T0, T0 + 86_400) for k in range(7)]
            assert store.compact_day(DAY0, {}, devices_per_pass=3) == 7 * 30
            assert [store.range(f"wl-{k}", "depth", T0, T0 + 86_400) for k in range(7)] == before
            assert store.day_counts("default", DAY0, {}) == (210, 210)
        finally:
            store.close()
