"""Long run on a compressed clock: weeks of readings through the ingest store with retention
run every simulated day. Raw, compacted and 1-minute rollup storage stays bounded (only the
hourly rollups grow, by design), and queries keep answering throughout. Drives the store directly (one writer, as the
ingester does); bounded by the number of simulated days."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from cloud_ingest.retention import RetentionSettings, run
from cloud_ingest.store import WriteBatch, open_store
from cloud_ingest.store.lifecycle import Lifecycle
from tests.support.services import pg_database

pytestmark = [pytest.mark.integration, pytest.mark.long]

DAYS = 36
SERIES = [(f"wl-{i:03d}", m) for i in range(15) for m in ("depth", "battery")]
DAY0 = 20_000
SETTINGS = RetentionSettings(compact_after_days=2, default_raw_days=5, rollup_1m_days=12,
                             classes={"hydro": {"metrics": ["depth"], "raw_days": 10}})


@contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/cw.db"
    else:
        with pg_database() as dsn:
            yield dsn


def table_bytes(url: str) -> dict[str, int]:
    """Bytes on disk by kind of table: raw, packed, 1-minute and hourly rollups (indexes and TOAST included)."""
    out = {"raw": 0, "packed": 0, "rollup_1m": 0, "rollup_1h": 0}
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r'"
            ).fetchall()
    for name, size in rows:
        kind = ("raw" if name.startswith("readings_d") else "packed" if name.startswith("packed_")
                else "rollup_1m" if name.startswith("rollup_1m_d") else "rollup_1h" if name == "rollup_1h" else None)
        if kind:
            out[kind] += int(size)
    return out


def day_rows(day: int, rng: np.random.Generator) -> list[tuple[str, str, int, float, int]]:
    """One reading a minute per series, arriving out of order within the day."""
    t = (day * 86_400 + np.arange(0, 86_400, 60)) * 1000
    rows = [(d, m, int(x), round(float(v), 3), 0) for d, m in SERIES
            for x, v in zip(t, rng.normal(1.0, 0.1, t.size), strict=True)]
    rng.shuffle(rows)  # type: ignore[arg-type]
    return rows


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_weeks_of_readings_with_daily_retention_stay_bounded(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with store_url(kind, tmp_path) as url:
        store = open_store(url)
        assert isinstance(store, Lifecycle)
        sizes: list[dict[str, int]] = []
        try:
            for k in range(DAYS):
                day = DAY0 + k
                rows = day_rows(day, rng)
                for i in range(0, len(rows), 5000):
                    store.write(WriteBatch(rows=rows[i : i + 5000]))
                # late duplicates of yesterday arrive too: they change nothing
                if k:
                    dup = day_rows(day - 1, np.random.default_rng(3 + k))[:500]
                    assert store.write(WriteBatch(rows=dup)).readings_inserted <= 500
                now = (day + 1) * 86_400.0  # the compressed clock: the day is over
                run(store, SETTINGS, now)
                sizes.append(table_bytes(url))

                # queries keep answering: today raw, the retained window in order, rollups since day 0
                d, m = SERIES[k % len(SERIES)]
                assert len(store.range(d, m, day * 86_400, now)) == 1440
                keep = min(k + 1, SETTINGS.default_raw_days + 1)
                got = sum(len(c) for c in store.iter_readings(now - keep * 86_400, now, devices=[d]))
                assert got >= keep * 2 * 1440 - 2 * 1440  # depth and battery; the oldest day may be gone
                hourly = store.range(d, m, DAY0 * 86_400, now, bucket_s=86_400)
                assert [p.n for p in hourly] == [1440] * (k + 1)
            parts = store.partitions()
        finally:
            store.close()
    # steady state: hot days <= compact_after + 1, compacted days per class <= its raw_days + 1
    assert len(parts.raw_days) <= SETTINGS.compact_after_days + 1
    assert len([p for p in parts.packed if p[0] == "default"]) <= SETTINGS.default_raw_days + 1
    assert len([p for p in parts.packed if p[0] == "hydro"]) <= 10 + 1
    assert len(parts.rollup_days) <= SETTINGS.rollup_1m_days + 1
    # raw, compacted and 1-minute rollup bytes plateau once the longest retention is reached;
    # only the hourly rollups grow (by design: kept for years, 1/60 of the 1-minute ones)
    steady = [s["raw"] + s["packed"] + s["rollup_1m"] for s in sizes[16:]]
    assert max(steady) <= 1.3 * min(steady), steady
    assert sizes[-1]["rollup_1h"] > sizes[16]["rollup_1h"]
    assert sizes[-1]["rollup_1h"] < sizes[-1]["rollup_1m"]
