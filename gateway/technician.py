"""The technician's path from an unknown device to a profile, pure parts.

``citywatch probe --dump holding:0-99`` reads raw registers; :func:`decodings` shows every
plausible reading of them (u16/i16, 32-bit integers and f32 in all four word orders) so the
fields can be found by eye; :func:`draft_profile` turns a saved dump into a profile the
technician edits; :func:`plan_report` is what ``citywatch profile check`` prints: the reads
per poll and the bus time they take at a given line speed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.budget import transaction_s
from gateway.config import BusConfig
from gateway.plan import plan_groups, plan_reads
from gateway.profile_schema import TABLES, dump_field
from gateway.registers import MAX_READ_REGISTERS, DataType, Field, Profile, RegisterKind, WordOrder, words_to_raw

#: a dump: table name (holding, input, coil, discrete_input) -> {address: word or bit}
Dump = dict[str, dict[int, int]]

_RANGE = re.compile(r"^(coil|discrete_input|holding|input):(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, slots=True)
class Span:
    table: str
    start: int
    count: int

    @property
    def kind(self) -> RegisterKind:
        return TABLES[self.table]


def parse_spans(text: str) -> list[Span]:
    """``holding:0-99,input:0-49`` -> spans (ValueError naming the bad part)."""
    out: list[Span] = []
    for part in text.split(","):
        m = _RANGE.match(part.strip())
        if m is None:
            raise ValueError(f"{part.strip()!r}: expected TABLE:FIRST-LAST with TABLE one of {', '.join(TABLES)}")
        first = int(m.group(2))
        last = int(m.group(3)) if m.group(3) is not None else first
        if not first <= last <= 0xFFFF:
            raise ValueError(f"{part.strip()!r}: addresses must rise and stay within 0..65535")
        out.append(Span(m.group(1), first, last - first + 1))
    return out


def chunks(span: Span) -> list[Span]:
    """The span cut into reads the protocol allows."""
    limit = 2000 if span.kind.is_bit else MAX_READ_REGISTERS
    return [Span(span.table, a, min(limit, span.start + span.count - a))
            for a in range(span.start, span.start + span.count, limit)]


def _fmt(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.6g}"


def plausible_float(x: float) -> bool:
    return math.isfinite(x) and (x == 0.0 or 1e-4 <= abs(x) <= 1e7)


def decodings(words: Mapping[int, int], address: int) -> str:
    """One dump line: the register, and the 32-bit readings it starts (when the next one was read)."""
    w = words[address]
    line = f"{address:5d}  {w:04X}  u16 {w:<5d} i16 {w - 0x10000 if w & 0x8000 else w:<6d}"
    nxt = words.get(address + 1)
    if nxt is None:
        return line
    parts = []
    for order in WordOrder:
        u = int(words_to_raw(DataType.U32, [w, nxt], order))
        i = int(words_to_raw(DataType.I32, [w, nxt], order))
        f = float(words_to_raw(DataType.F32, [w, nxt], order))
        mark = "" if plausible_float(f) else "?"
        parts.append(f"{order.value}: u32 {u} i32 {i} f32 {_fmt(f)}{mark}")
    return line + " | " + " | ".join(parts)


def draft_profile(dump: Dump, name: str, kind: str = "generic") -> dict[str, Any]:
    """A profile document guessing one field per non-zero register (a pair when it reads as a sane f32).

    Every field is ``internal`` with a name saying where it is; the technician renames them,
    sets scales, units and metrics, and checks the file with ``citywatch profile check``.
    """
    fields: list[dict[str, Any]] = []
    for table, regs in dump.items():
        kind_of = TABLES[table]
        addresses = sorted(a for a, v in regs.items() if v)
        taken: set[int] = set()
        for a in addresses:
            if a in taken:
                continue
            prefix = {"holding": "hr", "input": "ir", "coil": "co", "discrete_input": "di"}[table]
            order = _float_order(regs[a], regs[a + 1]) if regs.get(a + 1) and not kind_of.is_bit else None
            if kind_of.is_bit:
                f = Field(f"{prefix}_{a}", a, kind_of, DataType.BIT, description="guessed: a bit that was set")
            elif order is not None:
                f = Field(f"{prefix}_{a}", a, kind_of, DataType.F32, word_order=order,
                          description=f"guessed: f32 {order} reads "
                                      f"{_fmt(float(words_to_raw(DataType.F32, [regs[a], regs[a + 1]], order)))}")
                taken.add(a + 1)
            else:
                f = Field(f"{prefix}_{a}", a, kind_of, DataType.U16, description=f"guessed: u16 reads {regs[a]}")
            taken.add(a)
            fields.append(dump_field(f))
    return {"name": name, "kind": kind, "description": f"draft from a register dump ({name}); edit before use",
            "fields": fields}


def _float_order(w0: int, w1: int) -> WordOrder | None:
    """The word order in which two registers read as an everyday float (1e-4..1e7, not a tiny integer)."""
    for order in (WordOrder.ABCD, WordOrder.CDAB, WordOrder.BADC, WordOrder.DCBA):
        x = float(words_to_raw(DataType.F32, [w0, w1], order))
        if plausible_float(x) and x != 0.0 and abs(x) >= 0.01:
            return order
    return None


def plan_report(profile: Profile, bus: BusConfig) -> str:
    """Planned reads per schedule and their bus time at the bus's line speed."""
    lines = [f"profile {profile.name} ({profile.kind}): {len(profile.fields)} fields, "
             f"{len(profile.derived)} derived, source {profile.source or '?'}"]
    every_s = 0.0
    for g in plan_groups(profile):
        when = "read once (start, reboot)" if g.once else (
            f"every {g.interval_s:g} s" if g.interval_s is not None else "every poll")
        bus_s = sum(transaction_s(b, bus) for b in g.blocks)
        if g.interval_s is None and not g.once:
            every_s = bus_s
        lines.append(f"  {when}: {len(g.blocks)} read(s), {bus_s * 1000:.1f} ms of bus time")
        for b in g.blocks:
            lines.append(f"    FC{b.function_code} {b.kind.value} {b.start}..{b.end - 1} ({b.count}): "
                         + ", ".join(b.fields))
    if profile.records is not None:
        r = profile.records
        if r.style == "ring":
            per = plan_reads(r.fields, profile.max_block_registers)
            lines.append(f"  records: ring of {r.slots} at {r.kind.value} {r.base}, {r.record_words} registers each; "
                         f"new records cost extra reads ({len(per)} per record at most)")
        else:
            lines.append(f"  records: current-record block at {r.kind.value} {r.base}, read with every poll")
    lines.append(f"  bus time per poll: {every_s * 1000:.1f} ms (baud {bus.baud}, parity {bus.parity})"
                 if bus.type == "rtu" else f"  bus time per poll: {every_s * 1000:.1f} ms (TCP)")
    return "\n".join(lines) + "\n"
