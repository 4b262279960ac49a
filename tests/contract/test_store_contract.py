"""One contract for every store backend: SQLite always, PostgreSQL when reachable, InfluxDB 1.x
against a private ``influxd`` (Debian's ``influxdb``), InfluxDB 2 when ``CITYWATCH_INFLUX_URL`` is
set (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_ingest.store import (
    DeadLetterIn,
    Gap,
    SeqMark,
    StatusUpdate,
    Store,
    WriteBatch,
    open_store,
)
from contracts.payloads import Status
from contracts.reading import DeviceInfo, Event, Quality, Reading

T0 = 1_764_057_600.0  # 2025-11-25T08:00Z, a day boundary is near but not crossed by small offsets
BACKENDS = ["sqlite", "postgres", "influx1", "influx"]


def _clean_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE readings, latest, events, dead_letters, batches, gaps, gateways, devices, "
            "rollup_1m, rollup_1h, packed RESTART IDENTITY"
        )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    if kind == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/cw.db")
    elif kind == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        s = open_store(dsn)
        _clean_pg(dsn)
    elif kind == "influx1":
        base = request.getfixturevalue("influx1_http")
        s = open_store(base.replace("http://", "influxdb1://") + "/citywatch")
        getattr(s, "clear")()  # noqa: B009 - test-only helper of the Influx backends
    else:
        url = os.environ.get("CITYWATCH_INFLUX_URL")
        if not url:
            pytest.skip("InfluxDB contract tests need CITYWATCH_INFLUX_URL=influxdb://token@host:8086/org/bucket")
        s = open_store(url)
        getattr(s, "clear")()  # noqa: B009 - test-only helper of the Influx backend
    try:
        yield s
    finally:
        s.close()


def r(device: str, metric: str, dt: float, value: float, q: Quality = Quality.GOOD) -> Reading:
    from contracts.metrics import METRIC_UNITS

    return Reading(device, metric, T0 + dt, value, METRIC_UNITS[metric], q)


def test_write_is_idempotent(store: Store) -> None:
    batch = WriteBatch(readings=[r("wl-1", "depth", i, i / 10) for i in range(100)])
    first = store.write(batch)
    assert (first.readings_inserted, first.readings_duplicate) == (100, 0)
    again = store.write(batch)
    assert (again.readings_inserted, again.readings_duplicate) == (0, 100)
    pts = store.range("wl-1", "depth", T0, T0 + 1000)
    assert len(pts) == 100
    assert pts[5].value == pytest.approx(0.5)


def test_duplicate_inside_one_batch_and_first_wins(store: Store) -> None:
    store.write(WriteBatch(readings=[r("wl-1", "depth", 0, 1.0), r("wl-1", "depth", 0, 2.0)]))
    store.write(WriteBatch(readings=[r("wl-1", "depth", 0, 3.0)]))
    pts = store.range("wl-1", "depth", T0 - 1, T0 + 1)
    assert [p.value for p in pts] == [1.0]


def test_identity_is_millisecond(store: Store) -> None:
    store.write(WriteBatch(readings=[r("wl-1", "depth", 0.0001, 1.0)]))
    res = store.write(WriteBatch(readings=[r("wl-1", "depth", 0.0, 2.0)]))
    assert res.readings_inserted == 0
    res = store.write(WriteBatch(readings=[r("wl-1", "depth", 0.001, 2.0)]))
    assert res.readings_inserted == 1


def test_latest_per_device_metric(store: Store) -> None:
    store.write(
        WriteBatch(
            readings=[
                r("wl-1", "depth", 10, 1.0),
                r("wl-1", "depth", 20, 2.0),
                r("wl-1", "battery", 5, 3.6),
                r("mh-1", "tilt", 7, 4.0, Quality.SENSOR_FAULT),
            ]
        )
    )
    store.write(WriteBatch(readings=[r("wl-1", "depth", 15, 9.0)]))  # late, older: latest unchanged
    latest = {(x.device, x.metric): x for x in store.latest()}
    assert latest[("wl-1", "depth")].value == 2.0
    assert latest[("wl-1", "depth")].ts == pytest.approx(T0 + 20)
    assert latest[("wl-1", "depth")].unit == "m"
    assert latest[("mh-1", "tilt")].quality is Quality.SENSOR_FAULT
    only = store.latest("wl-1")
    assert {x.metric for x in only} == {"depth", "battery"}


def test_range_bucketed(store: Store) -> None:
    store.write(WriteBatch(readings=[r("wl-1", "depth", i, float(i)) for i in range(120)]))
    pts = store.range("wl-1", "depth", T0, T0 + 120, bucket_s=60)
    assert [p.ts for p in pts] == [pytest.approx(T0), pytest.approx(T0 + 60)]
    assert pts[0].min == 0 and pts[0].max == 59 and pts[0].n == 60
    assert pts[0].value == pytest.approx(29.5)
    assert pts[1].value == pytest.approx(89.5)
    # end is exclusive
    assert len(store.range("wl-1", "depth", T0, T0 + 10)) == 10


def test_iter_readings_chunks_in_time_order(store: Store) -> None:
    rows = [r(f"wl-{d}", "depth", i, d * 1000 + i) for d in range(3) for i in range(50)]
    random.Random(1).shuffle(rows)
    store.write(WriteBatch(readings=rows))
    chunks = list(store.iter_readings(T0, T0 + 1000, chunk=40))
    assert [len(c) for c in chunks] == [40, 40, 40, 30]
    ts = [t for c in chunks for t in c.ts]
    assert ts == sorted(ts)
    first = chunks[0]
    assert (first.device[0], first.metric[0], first.value[0]) == ("wl-0", "depth", 0.0)
    only = list(store.iter_readings(T0, T0 + 10, devices=["wl-2"]))
    assert sum(len(c) for c in only) == 10
    assert {str(d) for c in only for d in c.device} == {"wl-2"}
    rd = next(chunks[0].readings())
    assert rd.unit == "m"


def test_events_dedup(store: Store) -> None:
    ev = Event("wim-1", "vehicle", "18452", T0, {"gross_kg": 52300, "axle_kg": [7100, 9800]})
    assert store.write(WriteBatch(events=[("gw-1", ev)])).events_inserted == 1
    res = store.write(WriteBatch(events=[("gw-1", ev)]))
    assert (res.events_inserted, res.events_duplicate) == (0, 1)
    cover = Event("mh-1", "cover_open", "7", T0 + 5, {"tilt_deg": 91.5, "note": "浙"})
    store.write(WriteBatch(events=[("gw-2", cover)]))
    assert store.events(T0, T0 + 10) == [ev, cover]
    assert store.events(T0, T0 + 10, device="mh-1") == [cover]
    assert store.events(T0, T0 + 10, kind="vehicle") == [ev]
    assert store.events(T0 + 1, T0 + 5) == []  # end exclusive


def test_dead_letters_kept_with_raw_bytes(store: Store) -> None:
    raw = b'{"v":1,"gw":"gw-1"\x00\xff'
    dl = DeadLetterIn(T0, "citywatch/v1/gw/gw-1/telemetry", "gw-1", "not_json", "unexpected end", raw)
    assert store.write(WriteBatch(dead_letters=[dl])).dead_lettered == 1
    assert store.write(WriteBatch(dead_letters=[dl])).dead_lettered == 0  # redelivery: stored once
    assert store.dead_letter_count() == 1
    [got] = store.dead_letters()
    assert (got.reason, got.raw, got.topic, got.gw) == ("not_json", raw, dl.topic, "gw-1")


def test_committed_seqs_and_gaps(store: Store) -> None:
    seqs = [SeqMark("gw-1", "b1", s, "telemetry", 5) for s in (1, 2, 3, 5, 6)]
    store.write(WriteBatch(seqs=seqs))
    store.write(WriteBatch(seqs=seqs[:2]))
    assert store.committed_seqs("gw-1", "b1", 2) == [3, 5, 6]
    assert store.committed_seqs("gw-1", "b2", 0) == []
    store.record_gap(Gap("gw-1", "b1", 4, 4, T0))
    assert [g.first_seq for g in store.gaps(open_only=True)] == [4]
    # a gap seen again only ever widens
    store.record_gap(Gap("gw-1", "b1", 4, 3, T0 + 1))
    assert [g.last_seq for g in store.gaps("gw-1")] == [4]
    store.record_gap(Gap("gw-1", "b1", 4, 5, T0 + 1))
    assert [g.last_seq for g in store.gaps("gw-1")] == [5]
    store.record_gap(Gap("gw-1", "b1", 4, 4, T0 + 2))
    assert [g.last_seq for g in store.gaps("gw-1")] == [5]
    store.close_gaps("gw-1", "b1", 6, T0 + 5)
    assert store.gaps(open_only=True) == []
    [g] = store.gaps("gw-1")
    assert g.filled_at == pytest.approx(T0 + 5)


def test_device_registry_from_status(store: Store) -> None:
    devs = [
        DeviceInfo("wl-1", "radar-gauge", "water_gauge", lat=30.25, lon=120.16, grid="330106001", interval_s=60),
        DeviceInfo("mh-1", "tilt-v2", "manhole", owner="water-co", tags=("a", "b")),
    ]
    online = Status("online", "b1", "0.1.0", devs, {"uptime_s": 5})
    store.write(WriteBatch(statuses=[StatusUpdate("gw-1", online, T0)]))
    store.write(WriteBatch(readings=[r("wl-1", "depth", 30, 0.2)]))
    got = {d.info.id: d for d in store.devices()}
    assert got["wl-1"].info == devs[0] and got["mh-1"].info == devs[1]
    assert got["wl-1"].online and got["wl-1"].gateway == "gw-1"
    assert got["wl-1"].last_seen == pytest.approx(T0 + 30)
    assert got["mh-1"].last_seen is None
    [gw] = store.gateways()
    assert (gw.gw, gw.online, gw.boot, gw.agent, gw.devices, gw.health) == (
        "gw-1",
        True,
        "b1",
        "0.1.0",
        2,
        {"uptime_s": 5},
    )
    # a stale last will of an older boot does not take the new boot offline
    store.write(WriteBatch(statuses=[StatusUpdate("gw-1", Status("offline", "b0"), T0 + 1)]))
    assert store.gateways()[0].online
    store.write(WriteBatch(statuses=[StatusUpdate("gw-1", Status("offline", "b1"), T0 + 2)]))
    assert not store.gateways()[0].online
    assert not any(d.online for d in store.devices())
    # a new birth replaces the device list
    store.write(WriteBatch(statuses=[StatusUpdate("gw-1", Status("online", "b2", "0.1.1", devs[:1]), T0 + 3)]))
    assert [d.info.id for d in store.devices()] == ["wl-1"]
    assert store.devices()[0].online


def test_a_birth_of_a_thousand_devices_is_stored_whole_and_a_repeated_id_keeps_its_last_entry(store: Store) -> None:
    devs = [DeviceInfo(f"wl-{i:04d}", "radar-gauge", "water_gauge", interval_s=60) for i in range(1000)]
    devs.append(DeviceInfo("wl-0007", "radar-gauge", "water_gauge", grid="330106001", interval_s=30))
    store.write(WriteBatch(statuses=[StatusUpdate("gw-big", Status("online", "b1", "0.1.0", devs), T0)]))
    got = {d.info.id: d.info for d in store.devices()}
    assert len(got) == 1000
    assert got["wl-0007"] == devs[-1] and got["wl-0999"] == devs[999]


def test_everything_in_one_batch_commits_together(store: Store) -> None:
    batch = WriteBatch(
        readings=[r("wl-1", "depth", 1, 1.0)],
        events=[("gw-1", Event("mh-1", "cover_open", "1", T0, {}))],
        dead_letters=[DeadLetterIn(T0, "citywatch/v1/gw/gw-1/telemetry", None, "not_json", "", b"x")],
        seqs=[SeqMark("gw-1", "b1", 1, "telemetry", 1)],
        statuses=[StatusUpdate("gw-1", Status("online", "b1", "x", []), T0)],
    )
    res = store.write(batch)
    assert (res.readings_inserted, res.events_inserted, res.dead_lettered) == (1, 1, 1)
    assert store.committed_seqs("gw-1", "b1", 0) == [1]
