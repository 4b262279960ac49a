"""Read planning: coalesce a device's fields into as few Modbus reads as the limits allow.

Why: every transaction on an RS-485 bus costs two frames, a turnaround and 3.5 character
times of silence; one read of 12 adjacent registers costs about the same as one read of a
single register. Gateways that read one request per field (ThingsBoard's default) spend
most of the bus on overhead. Holes between fields are read through when they are at most
``max_gap`` registers (devices that answer exception 02 for unmapped registers set 0).

Pure: fields in, blocks out. Fields are atomic (a 32-bit value is never split).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.registers import MAX_READ_BITS, MAX_READ_REGISTERS, Field, Profile, RecordLayout, RegisterKind


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``kind`` from ``start``."""

    kind: RegisterKind
    start: int
    count: int
    fields: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def function_code(self) -> int:
        return self.kind.read_fc


def plan_reads(
    fields: Iterable[Field],
    max_block_registers: int = MAX_READ_REGISTERS,
    max_gap: int = 8,
    max_block_bits: int = MAX_READ_BITS,
) -> tuple[Block, ...]:
    """Blocks covering every field, one function code per block, none over its limit.

    Greedy over fields sorted by address: extend the current block while the next field
    starts within ``max_gap`` of its end and the block stays within the limit. Greedy is
    optimal here: with atomic fields and a gap bound, merging earlier never forces an
    extra block later.
    """
    if max_block_registers < 1 or max_block_registers > MAX_READ_REGISTERS:
        raise ValueError(f"max_block_registers must be 1..{MAX_READ_REGISTERS}, got {max_block_registers}")
    if max_block_bits < 1 or max_block_bits > MAX_READ_BITS:
        raise ValueError(f"max_block_bits must be 1..{MAX_READ_BITS}, got {max_block_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    by_kind: dict[RegisterKind, list[Field]] = {}
    for f in fields:
        by_kind.setdefault(f.kind, []).append(f)
    blocks: list[Block] = []
    for kind in RegisterKind:  # stable order: coils, DI, IR, HR
        group = sorted(by_kind.get(kind, ()), key=lambda f: (f.address, f.end))
        if not group:
            continue
        limit = max_block_bits if kind.is_bit else max_block_registers
        start, end, names = group[0].address, group[0].end, [group[0].name]
        if end - start > limit:
            raise ValueError(f"field {group[0].name} is wider than the block limit {limit}")
        for f in group[1:]:
            new_end = max(end, f.end)
            if f.address - end <= max_gap and new_end - start <= limit:
                end = new_end
                names.append(f.name)
                continue
            blocks.append(Block(kind, start, end - start, tuple(names)))
            start, end, names = f.address, f.end, [f.name]
        blocks.append(Block(kind, start, end - start, tuple(names)))
    return tuple(blocks)


def plan_profile(
    profile: Profile,
    max_block_registers: int | None = None,
    max_gap: int | None = None,
) -> tuple[Block, ...]:
    """Blocks for one poll of a device: its polled fields, within the profile's and device's limits.

    A device override can only lower the profile's limit (firmware that refuses long reads
    will not accept them because a config says so).
    """
    limit = profile.max_block_registers
    if max_block_registers is not None:
        limit = min(limit, max_block_registers)
    gap = profile.max_gap_registers if max_gap is None else max_gap
    return plan_reads(profile.polled_fields, limit, gap)


@dataclass(frozen=True, slots=True)
class ReadGroup:
    """Blocks read together: on every poll (``interval_s`` None), every ``interval_s``, or once
    (``once``: at start and after the device reboots)."""

    blocks: tuple[Block, ...]
    interval_s: float | None = None
    once: bool = False


def plan_groups(
    profile: Profile,
    max_block_registers: int | None = None,
    max_gap: int | None = None,
) -> tuple[ReadGroup, ...]:
    """The device's reads by schedule: every poll first, then each slower interval, then read-once fields."""
    limit = profile.max_block_registers
    if max_block_registers is not None:
        limit = min(limit, max_block_registers)
    gap = profile.max_gap_registers if max_gap is None else max_gap
    groups = [ReadGroup(plan_profile(profile, max_block_registers, max_gap))]
    slow = sorted({f.poll_interval_s for f in profile.fields if f.polled and f.poll_interval_s is not None})
    for interval in slow:
        fields = [f for f in profile.fields if f.polled and f.poll_interval_s == interval]
        groups.append(ReadGroup(plan_reads(fields, limit, gap), interval_s=interval))
    once = [f for f in profile.fields if f.polled and f.read_once]
    if once:
        groups.append(ReadGroup(plan_reads(once, limit, gap), once=True))
    return tuple(g for g in groups if g.blocks or g.interval_s is None)


def plan_per_field(fields: Iterable[Field]) -> tuple[Block, ...]:
    """The baseline: one request per field (what ThingsBoard IoT Gateway does by default)."""
    return tuple(Block(f.kind, f.address, f.width, (f.name,)) for f in fields)


def record_blocks(layout: RecordLayout, first_record: int, n_records: int,
                  max_block_registers: int = MAX_READ_REGISTERS) -> tuple[Block, ...]:
    """Reads covering records ``first_record .. first_record + n_records - 1`` of a ring.

    Consecutive slots share a read while ``(k - 1) * stride + record_words`` fits the limit;
    a read never wraps around the end of the ring.
    """
    per_read = (max_block_registers - layout.record_words) // layout.stride + 1
    if per_read < 1:
        raise ValueError(f"a record of {layout.record_words} registers exceeds the block limit {max_block_registers}")
    out: list[Block] = []
    slot, left = layout.slot_of(first_record), min(n_records, layout.slots)
    while left > 0:
        k = min(per_read, left, layout.slots - slot)
        out.append(Block(layout.kind, layout.base + slot * layout.stride, (k - 1) * layout.stride + layout.record_words,
                         ()))
        left -= k
        slot = (slot + k) % layout.slots
    return tuple(out)
