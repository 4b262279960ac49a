"""Round trips of every data type and word order; quality rules; profile consistency."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.metrics import METRIC_UNITS
from contracts.reading import Quality
from gateway import profiles
from gateway.errors import DecodeError, EncodeError, ProfileError
from gateway.registers import (
    DataType,
    Field,
    RegisterKind,
    WordOrder,
    decode_block,
    decode_value,
    encode_image,
    encode_value,
    quality_of,
    raw_to_words,
    words_to_raw,
)

HR = RegisterKind.HOLDING_REGISTER
orders = st.sampled_from(list(WordOrder))


@given(st.sampled_from([DataType.U16, DataType.I16, DataType.U32, DataType.I32]), orders, st.data())
def test_integer_raw_round_trip(dtype: DataType, order: WordOrder, data: st.DataObject) -> None:
    lo, hi = dtype.raw_range
    raw = data.draw(st.integers(lo, hi))
    words = raw_to_words(dtype, raw, order)
    assert len(words) == dtype.width
    assert all(0 <= w <= 0xFFFF for w in words)
    assert words_to_raw(dtype, words, order) == raw


@given(st.floats(width=32, allow_nan=False), orders)
def test_float_raw_round_trip(value: float, order: WordOrder) -> None:
    words = raw_to_words(DataType.F32, value, order)
    assert words_to_raw(DataType.F32, words, order) == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), orders)
def test_any_words_decode_and_reencode(words: list[int], order: WordOrder) -> None:
    for dtype in (DataType.U32, DataType.I32):
        raw = words_to_raw(dtype, words, order)
        assert raw_to_words(dtype, raw, order) == words
    f = words_to_raw(DataType.F32, words, order)
    if not math.isnan(f):  # NaN payloads are not preserved bit-exactly; everything else is
        assert raw_to_words(DataType.F32, f, order) == words


def test_word_orders_match_the_named_byte_layouts() -> None:
    b = struct.pack(">f", 123.456)  # A B C D
    a, bb, c, d = b
    assert raw_to_words(DataType.F32, 123.456, WordOrder.ABCD) == [a << 8 | bb, c << 8 | d]
    assert raw_to_words(DataType.F32, 123.456, WordOrder.CDAB) == [c << 8 | d, a << 8 | bb]
    assert raw_to_words(DataType.F32, 123.456, WordOrder.BADC) == [bb << 8 | a, d << 8 | c]
    assert raw_to_words(DataType.F32, 123.456, WordOrder.DCBA) == [d << 8 | c, bb << 8 | a]
    # libmodbus' documented example: 0x4465 0x229A ABCD = 916.540649...
    assert words_to_raw(DataType.F32, [0x4465, 0x229A], WordOrder.ABCD) == pytest.approx(916.540649)
    assert words_to_raw(DataType.F32, [0x229A, 0x4465], WordOrder.CDAB) == pytest.approx(916.540649)


@given(st.integers(-32768, 32767), st.sampled_from([0.1, 0.01, 0.001, 1.0, 10.0]))
def test_scaled_i16_round_trip(raw: int, scale: float) -> None:
    f = Field("x", 0, HR, DataType.I16, scale)
    value = decode_value(f, raw_to_words(DataType.I16, raw))
    assert encode_value(f, value) == raw_to_words(DataType.I16, raw)


@given(st.integers(0, 0xFFFFFFFF), orders)
def test_scaled_u32_round_trip(raw: int, order: WordOrder) -> None:
    f = Field("x", 0, HR, DataType.U32, 0.001)
    words = raw_to_words(DataType.U32, raw, order)
    assert encode_value(f, decode_value(f, words, order), order) == words


def test_bit_round_trip_and_checks() -> None:
    f = Field("b", 3, RegisterKind.COIL, DataType.BIT, writable=True)
    assert encode_value(f, 1) == [1]
    assert encode_value(f, 0) == [0]
    assert decode_value(f, [1]) == 1.0
    with pytest.raises(EncodeError):
        encode_value(f, 0.5)


def test_encode_refuses_out_of_range_and_nan() -> None:
    f = Field("x", 0, HR, DataType.U16, 0.01)
    with pytest.raises(EncodeError):
        encode_value(f, 700.0)  # raw 70000
    with pytest.raises(EncodeError):
        encode_value(f, -0.01)
    with pytest.raises(EncodeError):
        encode_value(f, math.nan)
    with pytest.raises(DecodeError):
        decode_value(f, [1, 2])
    with pytest.raises(DecodeError):
        decode_value(f, [0x10000])


def test_encode_does_not_mutate_inputs() -> None:
    words = [0x229A, 0x4465]
    before = list(words)
    f = Field("x", 0, HR, DataType.F32)
    decode_value(f, words, WordOrder.CDAB)
    assert words == before


def test_quality_rules() -> None:
    f = Field("depth", 0, HR, DataType.U16, 0.001, "m", "depth", valid_min=0, valid_max=3, sentinels=(0xFFFF,))
    assert quality_of(f, [120], 0.12) is Quality.GOOD
    assert quality_of(f, [0xFFFF], 65.535) is Quality.OUT_OF_RANGE
    assert quality_of(f, [4000], 4.0) is Quality.OUT_OF_RANGE
    g = Field("v", 0, HR, DataType.F32, 1.0, "V", "voltage")
    nan_words = [0x7FC0, 0x0000]
    assert quality_of(g, nan_words, decode_value(g, nan_words)) is Quality.OUT_OF_RANGE


def test_field_definition_errors() -> None:
    with pytest.raises(ProfileError):
        Field("x", 0, RegisterKind.COIL, DataType.U16)
    with pytest.raises(ProfileError):
        Field("x", 0, RegisterKind.INPUT_REGISTER, DataType.U16, writable=True)
    with pytest.raises(ProfileError):
        Field("x", 0, HR, DataType.U16, 1.0, "mm", "depth")  # catalogue unit is m
    with pytest.raises(ProfileError):
        Field("x", 0, HR, DataType.U16, 1.0, "", "no_such_metric")
    with pytest.raises(ProfileError):
        Field("x", 0xFFFF, HR, DataType.U32)


def test_registry() -> None:
    names = [p.name for p in profiles.all_profiles()]
    assert {"water_gauge", "water_gauge_i32", "manhole", "lamp", "wim"} <= set(names)
    assert {p.kind for p in profiles.all_profiles()} == set(profiles.KINDS)
    assert profiles.get("lamp").kind == "lamp"
    with pytest.raises(ProfileError):
        profiles.get("nope")


@pytest.mark.parametrize("profile", profiles.all_profiles(), ids=lambda p: p.name)
def test_every_profile_metric_is_catalogued_with_its_unit(profile: profiles.Profile) -> None:
    for f in profile.fields:
        if f.metric is not None:
            assert METRIC_UNITS[f.metric] == f.unit


@pytest.mark.parametrize("profile", profiles.all_profiles(), ids=lambda p: p.name)
@given(data=st.data())
def test_profile_image_round_trip(profile: profiles.Profile, data: st.DataObject) -> None:
    """Encode every field into an image and decode it back through decode_block."""
    override = data.draw(st.none() | orders)
    values: dict[str, float] = {}
    for f in profile.fields:
        if f.dtype is DataType.BIT:
            values[f.name] = data.draw(st.sampled_from([0.0, 1.0]))
        elif f.dtype is DataType.F32:
            values[f.name] = data.draw(st.floats(-1e6, 1e6, width=32))
        else:
            lo, hi = f.dtype.raw_range
            values[f.name] = data.draw(st.integers(lo, hi)) * f.scale
    image = encode_image(profile, values, override)
    for kind, regs in image.items():
        if not regs:
            continue
        start, end = min(regs), max(regs) + 1
        words = [regs.get(a, 0) for a in range(start, end)]
        decoded = decode_block(profile, kind, start, words, override)
        for name, d in decoded.items():
            f32 = profile.field(name).dtype is DataType.F32
            assert d.value == pytest.approx(values[name], rel=1e-6 if f32 else 1e-9, abs=1e-9)
            # and re-encoding the published value gives the same registers
            f = profile.field(name)
            assert encode_value(f, d.value, profile.word_order_of(f, override)) == list(d.words)

