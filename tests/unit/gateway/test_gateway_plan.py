"""Read planning: every field covered, no block over its limits, holes bounded."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import profiles
from gateway.plan import plan_per_field, plan_profile, plan_reads, record_blocks
from gateway.profiles.wim import RECORDS
from gateway.registers import DataType, Field, RegisterKind

HR = RegisterKind.HOLDING_REGISTER


@st.composite
def field_sets(draw: st.DrawFn) -> list[Field]:
    out: list[Field] = []
    for kind in RegisterKind:
        addr = draw(st.integers(0, 200))
        for i in range(draw(st.integers(0, 25))):
            dtype = DataType.BIT if kind.is_bit else draw(st.sampled_from([DataType.U16, DataType.F32]))
            if addr + dtype.width > 0x10000:
                break
            out.append(Field(f"{kind.value}{i}", addr, kind, dtype))
            addr += dtype.width + draw(st.integers(0, 40))
    return out


@given(field_sets(), st.integers(2, 125), st.integers(0, 30), st.integers(1, 2000))
def test_blocks_cover_every_field_within_limits(fields: list[Field], limit: int, gap: int, bit_limit: int) -> None:
    blocks = plan_reads(fields, limit, gap, bit_limit)
    for f in fields:
        covering = [b for b in blocks if b.kind is f.kind and b.start <= f.address and f.end <= b.end]
        assert covering, f"{f.name} not covered"
        assert any(f.name in b.fields for b in covering)
    for b in blocks:
        assert b.count <= (bit_limit if b.kind.is_bit else limit)
        assert b.count >= 1
        mine = sorted((f for f in fields if f.name in b.fields), key=lambda f: f.address)
        assert mine[0].address == b.start and max(f.end for f in mine) == b.end
        # never reads a hole wider than the gap
        for a, c in itertools.pairwise(mine):
            assert c.address - a.end <= gap
    assert sum(len(b.fields) for b in blocks) == len(fields)


@given(field_sets(), st.integers(2, 125), st.integers(0, 30))
def test_planner_never_worse_than_per_field(fields: list[Field], limit: int, gap: int) -> None:
    assert len(plan_reads(fields, limit, gap)) <= len(plan_per_field(fields))


def test_adjacent_registers_merge_and_gaps_split() -> None:
    fs = [Field("a", 0, HR, DataType.U16), Field("b", 1, HR, DataType.U32), Field("c", 10, HR, DataType.U16)]
    # the hole 3..9 is 7 registers
    assert [(b.start, b.count) for b in plan_reads(fs, 125, 6)] == [(0, 3), (10, 1)]
    assert [(b.start, b.count) for b in plan_reads(fs, 125, 7)] == [(0, 11)]
    assert [(b.start, b.count) for b in plan_reads(fs, 125, 0)] == [(0, 3), (10, 1)]
    assert [(b.start, b.count) for b in plan_reads(fs, 2, 100)] == [(0, 1), (1, 2), (10, 1)]


def test_32bit_field_never_split() -> None:
    fs = [Field("a", 0, HR, DataType.U16), Field("b", 1, HR, DataType.F32)]
    assert [(b.start, b.count) for b in plan_reads(fs, 2, 0)] == [(0, 1), (1, 2)]


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        plan_reads([], 126)
    with pytest.raises(ValueError):
        plan_reads([], 10, -1)


def test_profiles_plan_small() -> None:
    assert len(plan_profile(profiles.get("water_gauge"))) == 2
    assert len(plan_profile(profiles.get("manhole"))) == 3
    assert len(plan_profile(profiles.get("lamp"))) == 3
    assert len(plan_profile(profiles.get("wim"))) == 1
    # config-only registers are not polled
    assert all("slave_address" not in b.fields for b in plan_profile(profiles.get("water_gauge")))
    # a device limit only lowers the profile's
    lamp = plan_profile(profiles.get("lamp"), max_block_registers=4)
    assert max(b.count for b in lamp) <= 4


def test_record_blocks() -> None:
    blocks = record_blocks(RECORDS, 1, 5, 125)
    assert [(b.start, b.count) for b in blocks] == [(256, 122), (256 + 4 * 32, 26)]
    # wraps without reading past the ring
    blocks = record_blocks(RECORDS, 16, 2, 125)
    assert [(b.start, b.count) for b in blocks] == [(256 + 15 * 32, 26), (256, 26)]
