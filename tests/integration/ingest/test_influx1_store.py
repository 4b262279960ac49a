"""The InfluxDB 1.x store against a real ``influxd`` (Debian's 1.6): retention policies and
continuous queries as the rollup mechanism. The shared contract is in tests/contract."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request

import orjson
import pytest

from cloud_ingest.errors import StoreError
from cloud_ingest.rollup import aggregate
from cloud_ingest.store import WriteBatch, open_store
from cloud_ingest.store.influx1 import Influx1Store
from contracts.payloads import ts_ms
from contracts.reading import Quality, Reading

pytestmark = pytest.mark.integration


def test_continuous_queries_roll_up_and_old_windows_read_rollups(influx1_http: str) -> None:
    # another database's continuous queries (same names) must not stop this one getting its own
    open_store(influx1_http.replace("http://", "influxdb1://") + "/cq_other").close()
    url = influx1_http.replace("http://", "influxdb1://") + "/cq?raw_days=1&resample_every_s=1&resample_for_s=3600"
    store = open_store(url)
    assert isinstance(store, Influx1Store)
    store.clear()
    now = time.time()
    t0 = (int(now) // 60 - 10) * 60.0  # ten whole minutes ago
    rows = [("wl-1", "depth", ts_ms(t0 + i * 7), round((i * 37 % 100) / 10, 1)) for i in range(80)]
    res = store.write(WriteBatch(readings=[Reading(d, m, t / 1000, v, "m", Quality.GOOD) for d, m, t, v in rows]))
    assert res.readings_inserted == 80
    want = aggregate(rows, 60)
    deadline = time.monotonic() + 30
    while True:
        got = store.rollups("wl-1", "depth", t0 - 60, now + 60, 60)
        by_bucket = {ts_ms(t): agg for t, agg in got}
        if by_bucket.keys() == {k[2] for k in want} and all(by_bucket[k[2]].n == a.n for k, a in want.items()):
            break
        assert time.monotonic() < deadline, f"continuous query did not roll up: {got}"
        time.sleep(0.5)
    for (_d, _m, b), a in want.items():
        g = by_bucket[b]
        assert (g.n, g.min, g.max, g.last) == (a.n, a.min, a.max, a.last)
        assert g.total == pytest.approx(a.total)
    # a window reaching past raw retention is answered from the rollups
    pts = store.range("wl-1", "depth", now - 2 * 86_400, now + 60, bucket_s=60)
    assert [(p.ts, p.n) for p in pts] == [(b / 1000, a.n) for (_d, _m, b), a in sorted(want.items())]
    assert pts[0].value == pytest.approx(want[("wl-1", "depth", ts_ms(t0))].mean)
    # the same window, recent only, is computed from raw points: the same figures
    raw = store.range("wl-1", "depth", now - 3600, now + 60, bucket_s=60)
    assert [(p.ts, p.n, p.min, p.max) for p in raw] == [(p.ts, p.n, p.min, p.max) for p in pts]
    q = urllib.parse.urlencode({"q": 'SHOW RETENTION POLICIES ON "cq"'})
    with urllib.request.urlopen(f"{influx1_http}/query?{q}") as resp:
        series = orjson.loads(resp.read())["results"][0]["series"][0]
    policies = {v[0]: v[1] for v in series["values"]}
    assert policies["raw"] == "24h0m0s" and policies["rollups"] == policies["meta"] == "0s"
    # InfluxDB enforces the raw retention itself: a point older than it is refused, not silently kept
    with pytest.raises(StoreError, match="beyond retention"):
        store.write(WriteBatch(readings=[Reading("wl-1", "depth", now - 3 * 86_400, 1.0, "m", Quality.GOOD)]))
    store.close()


def test_bad_urls_are_refused() -> None:
    for bad in ("influxdb1://h:8086/", "influxdb1://h:8086/a/b", "influxdb1://h/db?raw_day=3",
                "influxdb1://h/db?raw_days=x"):
        with pytest.raises(StoreError):
            Influx1Store(bad)
