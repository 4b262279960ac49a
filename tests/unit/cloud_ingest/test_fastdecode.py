"""The ingest fast decoder agrees with the contracts decoder; classify never crashes (hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloud_ingest.fastdecode import decode_telemetry_rows
from cloud_ingest.validate import Accepted, Limits, Rejected, classify
from contracts.errors import PayloadError
from contracts.metrics import METRIC_UNITS
from contracts.payloads import decode_telemetry, encode_telemetry, ts_ms
from contracts.reading import Quality, Reading

NOW = 1_764_057_600.0
ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,12}", fullmatch=True)
junk: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.lists(st.integers(-9, 9), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2),
)
records = st.fixed_dictionaries(
    {},
    optional={
        "bn": st.one_of(ids.map(lambda s: s + "/"), junk, st.just("x\u0000/"), st.just("BAD/")),
        "bt": st.one_of(st.floats(NOW - 100, NOW + 100), junk),
        "bu": st.one_of(st.sampled_from(sorted(set(METRIC_UNITS.values()))), junk),
        "n": st.one_of(st.sampled_from(sorted(METRIC_UNITS)), junk, st.just("dep\u0000th")),
        "u": st.one_of(st.sampled_from(sorted(set(METRIC_UNITS.values()))), junk),
        "v": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1), junk),
        "t": st.one_of(st.floats(-100, 100), junk),
        "q": st.one_of(st.integers(-1, 5), junk),
    },
)
envelopes = st.fixed_dictionaries(
    {
        "v": st.one_of(st.just(1), junk),
        "gw": st.one_of(ids, junk),
        "boot": st.one_of(st.from_regex(r"[A-Za-z0-9-]{1,8}", fullmatch=True), junk),
        "seq": st.one_of(st.integers(0, 2**64 - 1), junk),
        "e": st.one_of(st.lists(st.one_of(records, junk), max_size=6), junk),
    }
)


def outcome_contracts(raw: bytes) -> object:
    try:
        b = decode_telemetry(raw, 1 << 16)
    except PayloadError as exc:
        return exc.reason
    return (b.gw, b.boot, b.seq, [(r.device, r.metric, ts_ms(r.ts), r.value, int(r.quality)) for r in b.readings])


def outcome_fast(raw: bytes) -> object:
    try:
        b = decode_telemetry_rows(raw, 1 << 16)
    except PayloadError as exc:
        return exc.reason
    return (b.gw, b.boot, b.seq, b.rows)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_fast_decoder_matches_contracts(obj: dict[str, Any]) -> None:
    try:
        raw = orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits: orjson cannot write them
        return
    assert outcome_fast(raw) == outcome_contracts(raw)


@given(
    st.lists(
        st.tuples(
            ids,
            st.sampled_from(sorted(METRIC_UNITS)),
            st.floats(NOW - 50, NOW),
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from(list(Quality)),
        ),
        max_size=30,
    )
)
def test_fast_decoder_roundtrip(rows: list[tuple[str, str, float, float, Quality]]) -> None:
    readings = [Reading(d, m, round(t, 3), v, METRIC_UNITS[m], q) for d, m, t, v, q in rows]
    raw = encode_telemetry("gw-1", "b1", 5, readings)
    b = decode_telemetry_rows(raw)
    assert outcome_fast(raw) == outcome_contracts(raw)
    if readings:
        assert b.t_min == min(r.ts for r in readings) or math.isclose(b.t_min, min(r.ts for r in readings))


@settings(max_examples=400)
@given(st.binary(max_size=300) | envelopes.map(orjson.dumps), st.sampled_from(["telemetry", "events", "status"]))
@example(b"[" * 5000, "telemetry")
@example(b'{"v":1,"gw":"gw-1","boot":"b","seq":1,"e":[{"bn":"d/","n":"depth","u":"m","v":1e308}]}', "telemetry")
def test_classify_never_raises(raw: bytes, kind: str) -> None:
    verdict = classify(f"citywatch/v1/gw/gw-1/{kind}", raw, NOW, Limits())
    assert isinstance(verdict, Accepted | Rejected)
    if isinstance(verdict, Rejected):
        assert verdict.reason and verdict.gw == "gw-1"


def test_unhashable_and_odd_fields_rejected_like_contracts() -> None:
    base = {"v": 1, "gw": "gw-1", "boot": "b", "seq": 1}
    cases = [
        {"bn": "d/", "n": "depth", "u": "m", "v": 1.0, "q": [1]},
        {"bn": "d/", "n": "depth", "u": "m", "v": 1.0, "q": {"a": 1}},
        {"bn": "d/", "n": "depth", "u": None, "v": 1.0},
        {"bn": "d/", "n": "depth", "u": ["m"], "v": 1.0},
        {"bn": ["d/"], "n": "depth", "u": "m", "v": 1.0},
        {"bn": "d/", "bu": "m", "n": "depth", "v": 1},
        {"bn": "d/", "bt": True, "n": "depth", "u": "m", "v": 1.0},
        {"bn": "d/", "n": "depth", "u": "m", "v": 1.0, "q": True},
        {"bn": "d/", "n": "depth", "u": "m", "v": 1.0, "q": 1.0},
    ]
    for rec in cases:
        raw = orjson.dumps({**base, "e": [rec]})
        assert outcome_fast(raw) == outcome_contracts(raw), rec
