"""WIM record layout: encode/decode round trip, ring addressing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import EncodeError
from gateway.profiles.wim import MAX_AXLES, RECORDS, WimRecord, decode_record, encode_record
from gateway.registers import WordOrder


@st.composite
def records(draw: st.DrawFn) -> WimRecord:
    n = draw(st.integers(2, MAX_AXLES))
    return WimRecord(
        record_no=draw(st.integers(1, 2**32 - 1)),
        ts=draw(st.integers(1_600_000_000, 2_000_000_000)) + draw(st.integers(0, 999)) / 1000,
        lane=draw(st.integers(1, 4)),
        speed_kmh=draw(st.integers(0, 2000)) / 10,
        gross_kg=float(draw(st.integers(0, 200_000))),
        axle_kg=tuple(float(draw(st.integers(0, 6000)) * 10) for _ in range(n)),
        spacing_m=tuple(draw(st.integers(50, 2000)) / 100 for _ in range(n - 1)),
        vehicle_class=draw(st.integers(0, 20)),
    )


@given(records(), st.sampled_from(list(WordOrder)))
def test_record_round_trip(rec: WimRecord, order: WordOrder) -> None:
    words = encode_record(rec, order)
    assert len(words) == RECORDS.record_words
    back = decode_record(words, order)
    assert back.record_no == rec.record_no
    assert back.ts == pytest.approx(rec.ts, abs=1e-3)
    assert back.lane == rec.lane
    assert back.speed_kmh == pytest.approx(rec.speed_kmh)
    assert back.axle_kg == pytest.approx(rec.axle_kg)
    assert back.spacing_m == pytest.approx(rec.spacing_m)
    assert back.body()["axles"] == len(rec.axle_kg)


def test_ring_addresses() -> None:
    assert RECORDS.address_of(1) == RECORDS.base
    assert RECORDS.address_of(2) == RECORDS.base + RECORDS.stride
    assert RECORDS.address_of(RECORDS.slots + 1) == RECORDS.base


def test_bad_record_refused() -> None:
    with pytest.raises(EncodeError):
        encode_record(WimRecord(1, 0.0, 1, 0.0, 0.0, (1.0, 2.0), ()))
