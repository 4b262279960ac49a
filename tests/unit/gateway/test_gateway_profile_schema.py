"""Profiles as data: every type x word order x byte order round-trips; errors name file, key path, value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError
from gateway import profiles
from gateway.config import parse_field_config
from gateway.plan import plan_groups
from gateway.profile_schema import parse_profile
from gateway.registers import (
    MAX_READ_REGISTERS,
    ByteOrder,
    DataType,
    Field,
    RegisterKind,
    WordOrder,
    decode_text,
    decode_value,
    encode_text,
    encode_value,
    raw_to_words,
    words_to_raw,
)

HR = RegisterKind.HOLDING_REGISTER
NUMERIC = [DataType.U16, DataType.I16, DataType.U32, DataType.I32, DataType.U64, DataType.I64]


@given(st.sampled_from(NUMERIC), st.sampled_from(list(WordOrder)), st.sampled_from(list(ByteOrder)), st.data())
def test_every_integer_type_word_and_byte_order_round_trips(dtype: DataType, order: WordOrder, bo: ByteOrder,
                                                            data: st.DataObject) -> None:
    lo, hi = dtype.raw_range
    raw = data.draw(st.integers(lo, hi))
    words = raw_to_words(dtype, raw, order, bo)
    assert len(words) == dtype.width and all(0 <= w <= 0xFFFF for w in words)
    assert words_to_raw(dtype, words, order, bo) == raw
    if abs(raw) <= 2**40:  # engineering values are floats (15-16 digits): huge 64-bit raws round, like any float
        scale = data.draw(st.sampled_from([1.0, 0.1, 0.001, 10.0]))
        f = Field("x", 0, HR, dtype, scale, word_order=order, byte_order=bo)
        assert encode_value(f, decode_value(f, words, order), order) == words


@given(st.sampled_from([DataType.F32, DataType.F64]), st.sampled_from(list(WordOrder)),
       st.sampled_from(list(ByteOrder)), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_every_float_type_word_and_byte_order_round_trips(dtype: DataType, order: WordOrder, bo: ByteOrder,
                                                          x: float) -> None:
    words = raw_to_words(dtype, x, order, bo)
    assert words_to_raw(dtype, words, order, bo) == x


def test_byte_and_word_orders_are_the_named_layouts() -> None:
    # 64 bits 0x0102030405060708: CDAB reverses registers, BADC swaps bytes, little-endian bytes swap again
    v = 0x0102030405060708
    assert raw_to_words(DataType.U64, v, WordOrder.ABCD) == [0x0102, 0x0304, 0x0506, 0x0708]
    assert raw_to_words(DataType.U64, v, WordOrder.CDAB) == [0x0708, 0x0506, 0x0304, 0x0102]
    assert raw_to_words(DataType.U64, v, WordOrder.BADC) == [0x0201, 0x0403, 0x0605, 0x0807]
    assert raw_to_words(DataType.U64, v, WordOrder.DCBA) == [0x0807, 0x0605, 0x0403, 0x0201]
    assert raw_to_words(DataType.U64, v, WordOrder.BADC, ByteOrder.LITTLE) == [0x0102, 0x0304, 0x0506, 0x0708]
    assert raw_to_words(DataType.U16, 0x1234, WordOrder.CDAB, ByteOrder.LITTLE) == [0x3412]


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
       st.sampled_from(list(ByteOrder)))
def test_strings_round_trip(text: str, bo: ByteOrder) -> None:
    f = Field("serial", 0, HR, DataType.STRING, length=4, byte_order=bo)
    words = encode_text(f, text)
    assert len(words) == 4 and decode_text(f, words) == text
    assert math.isnan(decode_value(f, words))


@given(st.integers(0, 0xFFFF), st.integers(0, 15))
def test_register_bits(word: int, bit: int) -> None:
    f = Field("b", 0, HR, DataType.BIT, bit=bit)
    assert decode_value(f, [word]) == float(word >> bit & 1)


def test_enumeration_marks_unknown_values_bad_and_keeps_them() -> None:
    p = parse_profile(DOC.replace("type: u16, scale: 0.001", "type: u16, enum: {0: idle, 7: busy}"), "t.yaml")
    f = p.field("depth")
    from gateway.registers import quality_of

    assert quality_of(f, [7], 7.0) == 0 and quality_of(f, [3], 3.0) != 0


field_specs = st.builds(
    lambda kind, addr, dtype: (kind, addr, dtype),
    st.sampled_from(["holding", "input", "coil", "discrete_input"]),
    st.integers(0, 400),
    st.sampled_from(["u16", "i32", "f64", "u64"]),
)


@settings(max_examples=60)
@given(st.lists(field_specs, min_size=1, max_size=30, unique_by=lambda x: (x[0], x[1])),
       st.integers(1, MAX_READ_REGISTERS), st.integers(0, 10),
       st.lists(st.sampled_from([None, 30.0, 600.0, "once"]), min_size=30, max_size=30))
def test_planning_covers_every_declared_field_within_limits(specs: list[tuple[str, int, str]], limit: int,
                                                            gap: int, schedule: list[object]) -> None:
    fields = []
    used: dict[str, int] = {}
    for i, (table, addr, dtype) in enumerate(sorted(specs)):
        is_bit = table in ("coil", "discrete_input")
        start = max(addr, used.get(table, 0))
        d = {"name": f"f{i}", "table": table, "address": start, "type": "bit" if is_bit else dtype}
        width = 1 if is_bit or dtype == "u16" else (2 if dtype == "i32" else 4)
        used[table] = start + width
        if schedule[i] == "once":
            d["read"] = "once"
        elif schedule[i] is not None:
            d["poll_interval_s"] = schedule[i]
        fields.append(d)
    doc = yaml.safe_dump({"name": "p", "kind": "generic", "description": "d", "fields": fields,
                          "max_block_registers": max(limit, 4), "max_gap_registers": gap})
    p = parse_profile(doc, "gen.yaml")
    groups = plan_groups(p)
    covered = [n for g in groups for b in g.blocks for n in b.fields]
    assert sorted(covered) == sorted(f.name for f in p.fields)  # every field once, in one schedule
    for g in groups:
        for b in g.blocks:
            assert b.count <= (2000 if b.kind.is_bit else p.max_block_registers)
            for name in b.fields:
                f = p.field(name)
                assert b.start <= f.address and f.end <= b.end and f.kind is b.kind


DOC = """
name: site_gauge
kind: water_gauge
description: test
fields:
  - {name: depth, table: input, address: 0, type: u16, scale: 0.001, unit: m, metric: depth}
  - {name: height, table: holding, address: 0, type: u16, scale: 0.01, unit: m, read: once}
derived:
  - {metric: distance, expr: "height - depth"}
"""


@pytest.mark.parametrize(("change", "path", "value"), [
    (("table: input", "tabel: input"), "fields[0].tabel", "input"),
    (("type: u16, scale: 0.001", "type: u17, scale: 0.001"), "fields[0].type", "u17"),
    (("unit: m, metric: depth", "unit: mm, metric: depth"), "fields[0]", None),
    (("metric: depth", "metric: deepness"), "fields[0].metric", "deepness"),
    (("height - depth", "height - depth * depth"), "derived[0].expr", "height - depth * depth"),
    (("height - depth", "__import__('os').system('x')"), "derived[0].expr", "__import__('os').system('x')"),
    (("height - depth", "heigth - depth"), "derived[0].expr", "heigth - depth"),
    (("kind: water_gauge", "kind: toaster"), "kind", "toaster"),
    (("address: 0, type: u16, scale: 0.01", "address: 70000, type: u16, scale: 0.01"), "fields[1].address", 70000),
])
def test_errors_name_file_key_path_and_value(change: tuple[str, str], path: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(DOC.replace(*change, 1), "site/gauge.yaml")
    err = info.value
    assert err.source == "site/gauge.yaml" and err.key_path == path
    if value is not None:
        assert err.value == value
    assert "site/gauge.yaml" in str(err) and path in str(err)


def test_overlapping_fields_and_bad_counter_are_refused() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        parse_profile(DOC.replace("address: 0, type: u16, scale: 0.01", "address: 0, type: u32, scale: 0.01")
                      .replace("table: holding", "table: input"), "x.yaml")


def test_gateway_config_takes_a_library_name_or_a_path_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "gauge.yaml").write_text(DOC, encoding="utf-8")
    cfg = tmp_path / "gw.yaml"
    text = """
buses: [{id: b, type: tcp, host: 127.0.0.1}]
devices:
  - {id: d-1, profile: profiles/gauge.yaml, bus: b, unit_id: 1}
  - {id: d-2, profile: water_gauge, bus: b, unit_id: 2}
"""
    fc = parse_field_config(text, str(cfg))
    site = profiles.get(fc.devices[0].profile)
    assert site.name == "site_gauge" and fc.devices[0].to_device_info().profile == "site_gauge"
    assert profiles.get(fc.devices[1].profile).name == "water_gauge"
    with pytest.raises(ConfigError) as info:
        parse_field_config(text.replace("profiles/gauge.yaml", "profiles/nope.yaml"), str(cfg))
    assert info.value.key_path == "devices[0].profile" and "nope.yaml" in str(info.value)


def test_a_site_profile_event_the_cloud_would_dead_letter_is_refused_at_load(tmp_path: Path) -> None:
    site = Path(__file__).resolve().parents[3] / "configs" / "sim" / "site-profiles"
    src = (site / "acme_cover.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "cover.yaml"
    bad.write_text(src.replace("event: cover_open", "event: cover_lifted"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        profiles.get(str(bad))
    assert info.value.key_path == "events" and info.value.value == "cover_lifted"
