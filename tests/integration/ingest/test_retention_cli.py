"""``citywatch retention`` on real SQLite stores: old readings go, those a case refers to stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from citywatch.cli import main
from cloud_ingest.store import WriteBatch, open_store
from cloud_ingest.store.lifecycle import DAY_MS, Lifecycle
from contracts.reading import Quality, Reading
from tests.support.cases import GAUGE, alarm, sqlite_store

pytestmark = pytest.mark.integration


def test_retention_command_holds_case_evidence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cw.db"
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(f"ingest:\n  store_url: {url}\n  retention:\n    default_raw_days: 30\n")
    day = int((time.time() - 40 * 86_400) * 1000) // DAY_MS
    t_alarm = day * 86_400 + 3600.0
    store = open_store(url)
    for d in (day, day + 1):  # two old days of the gauge's depth
        store.write(WriteBatch(readings=[Reading(GAUGE.id, "depth", d * 86_400 + i * 600, 0.1, "m", Quality.GOOD)
                                         for i in range(144)]))
    store.close()
    with sqlite_store(tmp_path) as cases:  # a case from a gauge alarm on the first day
        out = cases.apply_alarm(alarm(GAUGE.id, "road-water-depth", t=t_alarm), GAUGE, now=t_alarm)
        assert out.case_id is not None

    rc = main(["retention", "-c", str(cfg), "--cases", f"sqlite:///{tmp_path}/cases.db", "--evidence-margin-s", "600"])
    assert rc == 0
    store = open_store(url)
    try:
        assert isinstance(store, Lifecycle)
        assert store.partitions().raw_days == frozenset()  # both days compacted
        assert store.partitions().packed == {("default", day)}  # the held day stays, the other is dropped
        assert len(store.range(GAUGE.id, "depth", day * 86_400, (day + 2) * 86_400)) == 144
        assert [p.n for p in store.range(GAUGE.id, "depth", day * 86_400, (day + 2) * 86_400, bucket_s=86_400)] \
            == [144, 144]  # rollups cover both
    finally:
        store.close()
