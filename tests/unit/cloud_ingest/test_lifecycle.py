"""Pure parts of the storage lifecycle: the compact codec, the retention plan, rollup resolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud_ingest.compact import CodecError, decode, encode
from cloud_ingest.config import IngestSettings
from cloud_ingest.retention import Hold, RetentionSettings, compactions, drops, held_days, rollup_expiry
from cloud_ingest.rollup import aggregate, auto_bucket_s, rollup_for
from cloud_ingest.store.lifecycle import DAY_MS, Partitions, encode_rows, parse_partitions

DAY_S = 86_400
T0_MS = 1_764_057_600_000


@st.composite
def blocks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 200))
    steps = draw(st.lists(st.integers(1, 3_600_000), min_size=n - 1, max_size=n - 1))
    ts = np.cumsum([draw(st.integers(0, 2**42)), *steps]).astype(np.int64)
    decimals = draw(st.booleans())
    if decimals:  # what sensors send: fixed decimals
        k = draw(st.integers(0, 4))
        vals = [round(draw(st.floats(-1e6, 1e6)), k) for _ in range(n)]
    else:  # anything, NaN, infinities and -0.0 included
        vals = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n))
    q = draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n))
    return ts, np.array(vals, dtype=np.float64), np.array(q, dtype=np.int8)


@given(blocks())
def test_compaction_round_trips_exactly(block: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ts, vals, q = block
    t2, v2, q2 = decode(encode(ts, vals, q))
    assert t2.tolist() == ts.tolist()
    assert v2.view(np.uint64).tolist() == vals.view(np.uint64).tolist()  # bit for bit: -0.0, NaN payloads
    assert q2.tolist() == q.tolist()


def test_codec_refuses_bad_input() -> None:
    with pytest.raises(CodecError):
        encode(np.array([2, 1], np.int64), np.zeros(2), np.zeros(2, np.int8))
    with pytest.raises(CodecError):
        decode(b"not a block")


def test_steady_decimal_series_is_small() -> None:
    ts = T0_MS + np.arange(60, dtype=np.int64) * 60_000
    vals = np.round(np.linspace(0.1, 0.4, 60) + np.sin(np.arange(60)) / 100, 3)
    blob = encode(ts, vals, np.zeros(60, np.int8))
    assert len(blob) / 60 < 4  # bytes per reading, before the row's own overhead


def test_encode_rows_splits_by_series_and_hour() -> None:
    rows = [("a", "m", T0_MS + i * 600_000, float(i), 0) for i in range(12)] + [("b", "m", T0_MS, 1.0, 0)]
    out = encode_rows(rows)
    assert [(d, m, h - T0_MS, n) for d, m, h, n, _ in out] == [("a", "m", 0, 6), ("a", "m", 3_600_000, 6),
                                                              ("b", "m", 0, 1)]


def test_parse_partitions() -> None:
    p = parse_partitions(["readings_d5", "readings", "packed", "packed_hydro", "packed_hydro_d4", "latest",
                          "rollup_1m", "rollup_1m_d3", "rollup_1h"])
    assert p == Partitions(frozenset({5}), frozenset({("hydro", 4)}), frozenset({3}))


@st.composite
def lifecycle_cases(draw: st.DrawFn) -> tuple[Partitions, dict[tuple[str, int], tuple[int, int]], list[Hold], int]:
    today = 20_000
    classes = ["default", "hydro"]
    packed = draw(st.sets(st.tuples(st.sampled_from(classes), st.integers(today - 200, today)), max_size=30))
    raw = draw(st.sets(st.integers(today - 200, today), max_size=10))
    rollup = draw(st.sets(st.integers(today - 600, today), max_size=30))
    counts = {p: (draw(st.integers(0, 3)), draw(st.integers(0, 3))) for p in packed}
    holds = [Hold("wl-1", d * DAY_S + draw(st.integers(0, DAY_S - 1)), d * DAY_S + draw(st.integers(DAY_S, 3 * DAY_S)))
             for d in draw(st.lists(st.integers(today - 200, today), max_size=5))]
    return Partitions(frozenset(raw), frozenset(packed), frozenset(rollup)), counts, holds, today


@given(lifecycle_cases())
def test_retention_never_drops_unrolled_held_or_young_data(
    case: tuple[Partitions, dict[tuple[str, int], tuple[int, int]], list[Hold], int],
) -> None:
    parts, counts, holds, today = case
    settings = RetentionSettings(compact_after_days=15, default_raw_days=30,
                                 classes={"hydro": {"metrics": ["depth"], "raw_days": 90}})
    now = today * DAY_S + 3600.0
    actions = drops(parts, now, settings, lambda c, d: counts[(c, d)], holds)
    held = held_days(holds)
    for a in actions:
        assert a.cls is not None and (a.cls, a.day) in parts.packed
        if a.kind == "drop":
            assert counts[(a.cls, a.day)][0] == counts[(a.cls, a.day)][1], "unrolled data dropped"
            assert a.day not in held, "evidence dropped"
            assert a.day not in parts.raw_days
            assert a.day < today - settings.raw_days()[a.cls]
    # and everything old, rolled up, unheld and compacted is dropped
    for cls, day in parts.packed:
        if (day < today - settings.raw_days()[cls] and day not in held and day not in parts.raw_days
                and counts[(cls, day)][0] == counts[(cls, day)][1]):
            assert any(a.kind == "drop" and (a.cls, a.day) == (cls, day) for a in actions)
    assert [a.day for a in compactions(parts, now, settings)] == sorted(d for d in parts.raw_days if d < today - 15)
    stored = parts.raw_days | {d for _, d in parts.packed}
    assert [a.day for a in rollup_expiry(parts, now, settings)] == sorted(
        d for d in parts.rollup_days if d < today - settings.rollup_1m_days and d not in stored)


def test_held_days_cover_the_hold() -> None:
    assert held_days([Hold("x", 2 * DAY_S - 1, 3 * DAY_S + 1)]) == {1, 2, 3}
    assert held_days([Hold("x", 2 * DAY_S, 3 * DAY_S)]) == {2}


def test_retention_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="unknown metrics"):
        RetentionSettings(classes={"hydro": {"metrics": ["nope"], "raw_days": 30}})
    with pytest.raises(ValidationError, match="in classes"):
        RetentionSettings(classes={"a": {"metrics": ["depth"], "raw_days": 30},
                                   "b": {"metrics": ["depth"], "raw_days": 30}})
    with pytest.raises(ValidationError, match="class name"):
        RetentionSettings(classes={"bad_name": {"metrics": ["depth"], "raw_days": 30}})
    with pytest.raises(ValidationError, match="below compact_after_days"):
        RetentionSettings(compact_after_days=20, default_raw_days=10)
    with pytest.raises(ValidationError, match="rollup_1m_days"):
        RetentionSettings(default_raw_days=500, rollup_1m_days=400)
    with pytest.raises(ValidationError, match="extra"):
        RetentionSettings.model_validate({"raw_day": 3})
    with pytest.raises(ValidationError, match="late_limit_s"):
        IngestSettings(late_limit_s=20 * DAY_S, retention=RetentionSettings(compact_after_days=15))


def test_rollup_resolution_and_chart_buckets() -> None:
    assert [rollup_for(b) for b in (None, 10, 60, 90, 120, 3600, 7200, 5400)] == [None, None, 60, None, 60, 3600,
                                                                                    3600, 60]
    assert auto_bucket_s(3600, 1000) == 4  # short windows stay raw
    assert auto_bucket_s(86_400, 1000) == 120  # a day: 2-minute buckets from the 1-minute rollup
    assert auto_bucket_s(365 * 86_400, 1000) == 32_400  # a year: 9-hour buckets from the hourly rollup
    assert rollup_for(auto_bucket_s(30 * 86_400, 1000)) == 60  # 44-minute buckets
    assert rollup_for(auto_bucket_s(365 * 86_400, 1000)) == 3600


def test_aggregate_last_is_by_time_not_arrival() -> None:
    got = aggregate([("d", "m", 5_000, 2.0), ("d", "m", 1_000, 9.0), ("d", "m", 61_000, 1.0)], 60)
    a = got[("d", "m", 0)]
    assert (a.n, a.total, a.min, a.max, a.last_ts_ms, a.last, a.mean) == (2, 11.0, 2.0, 9.0, 5_000, 2.0, 5.5)
    assert got[("d", "m", 60_000)].n == 1
    assert DAY_MS == 86_400_000


def test_bucket_points_and_rechunk() -> None:
    from cloud_ingest.store.lifecycle import bucket_points, rechunk

    ts = np.array([0, 1_000, 9_999, 10_000, 25_000], dtype=np.int64)
    pts = bucket_points(ts, np.array([1.0, 3.0, 5.0, 7.0, 9.0]), 10_000)
    assert [(p.ts, p.value, p.min, p.max, p.n) for p in pts] == [(0.0, 3.0, 1.0, 5.0, 3), (10.0, 7.0, 7.0, 7.0, 1),
                                                                 (20.0, 9.0, 9.0, 9.0, 1)]
    parts = [[("d", "m", float(i), 0.0, 0) for i in range(k)] for k in (3, 0, 5, 1)]
    assert [len(c) for c in rechunk(parts, 4)] == [4, 4, 1]
