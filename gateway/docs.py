"""``docs/devices.md`` is generated from the profiles, so the documentation cannot drift.

Regenerate with ``.venv/bin/python -m gateway.docs > docs/devices.md``; a unit test fails
when the committed file differs from :func:`render_devices_md`.
"""

from __future__ import annotations

from gateway.profiles import all_profiles
from gateway.registers import DataType, Field, Profile, RegisterKind

_KIND_TITLE = {
    RegisterKind.COIL: "Coils (FC1 read, FC5/FC15 write)",
    RegisterKind.DISCRETE_INPUT: "Discrete inputs (FC2)",
    RegisterKind.INPUT_REGISTER: "Input registers (FC4)",
    RegisterKind.HOLDING_REGISTER: "Holding registers (FC3 read, FC6/FC16 write)",
}


def _num(x: float) -> str:
    return f"{x:g}"


def _range(f: Field) -> str:
    parts = []
    if f.valid_min is not None or f.valid_max is not None:
        lo = "" if f.valid_min is None else _num(f.valid_min)
        hi = "" if f.valid_max is None else _num(f.valid_max)
        parts.append(f"{lo}…{hi}")
    if f.sentinels:
        parts.append("invalid raw " + ", ".join(f"0x{s:X}" for s in f.sentinels))
    if f.enum:
        parts.append("one of " + ", ".join(f"{raw} ({meaning})" for raw, meaning in f.enum))
    return "; ".join(parts)


def _polled(f: Field) -> str:
    if not f.polled:
        return "no"
    if f.read_once:
        return "once"
    return f"every {_num(f.poll_interval_s)} s" if f.poll_interval_s is not None else "yes"


def _field_rows(fields: tuple[Field, ...], profile: Profile, relative: bool = False) -> list[str]:
    head = "| offset |" if relative else "| address | 4x/3x/1x/0x |"
    rows = [
        f"{head} name | type | scale | unit | metric | rw | valid | polled | description |",
        "|---" * (11 if not relative else 10) + "|",
    ]
    for f in sorted(fields, key=lambda x: (x.address, x.bit or 0)):
        ref = {
            RegisterKind.HOLDING_REGISTER: 40001,
            RegisterKind.INPUT_REGISTER: 30001,
            RegisterKind.DISCRETE_INPUT: 10001,
            RegisterKind.COIL: 1,
        }[f.kind] + f.address
        dtype = f.dtype.value
        if f.dtype.width >= 2:
            dtype += f" ({profile.word_order_of(f).value})"
        elif f.dtype is DataType.STRING:
            dtype += f"[{f.length}]"
        if f.bit is not None:
            dtype += f" {f.bit}"
        if f.byte_order.value != "big":
            dtype += " bytes LE"
        addr = f"| {f.address} |" if relative else f"| {f.address} (0x{f.address:04X}) | {ref} |"
        rows.append(
            f"{addr} `{f.name}` | {dtype} | {_num(f.scale) if f.dtype is not DataType.BIT else ''} | {f.unit} "
            f"| {f.metric or '—'} | {'rw' if f.writable else 'r'} | {_range(f)} | {_polled(f)} "
            f"| {f.description} |"
        )
    return rows


def render_profile(p: Profile) -> list[str]:
    out = [f"## `{p.name}` ({p.kind})", "", p.description, ""]
    out.append(
        f"Default 32-bit word order **{p.default_word_order.value}** (device config `word_order` overrides); "
        f"largest read {p.max_block_registers} registers; planner reads through holes of at most "
        f"{p.max_gap_registers} registers."
    )
    out.append("")
    for kind in RegisterKind:
        fields = p.fields_of(kind)
        if fields:
            out += [f"### {_KIND_TITLE[kind]}", "", *_field_rows(fields, p), ""]
    if p.status_bits:
        affects = ", ".join(f"`{m}`" for m in p.fault_affects) or "—"
        out += [f"### Status bits of `{p.status_field}`", "", f"| bit | meaning | marks SENSOR_FAULT on {affects} |",
                "|---|---|---|"]
        for bit, meaning in p.status_bits:
            out.append(f"| {bit} | {meaning} | {'yes' if p.fault_mask & (1 << bit) else 'no'} |")
        out.append("")
    if p.derived:
        out += ["### Derived metrics", ""]
        out += [f"- `{d.metric}` = `{d.expression}`" for d in p.derived]
        out.append("")
    if p.edges:
        out += ["### Events on a rising bit", ""]
        for e in p.edges:
            which = f" bit {e.bit}" if e.bit is not None else ""
            shown = ", ".join(f"`{b}`" for b in e.body_fields) or "empty"
            out.append(f"- `{e.field}`{which} 0 → 1: event `{e.kind}`, body {shown}")
        out.append("")
    if p.commands:
        out += ["### Commands", ""]
        for c in p.commands:
            how = f"argument `{c.arg}`" if c.arg is not None else f"{_num(c.value or 0.0)}"
            out.append(f"- `{c.name}`: write `{c.field}` = {how}, then read it back")
        out.append("")
    if p.records is not None:
        r = p.records
        where = (f"is in slot (n−{r.start_at}) mod {r.slots} at {r.kind.value} {r.base} + slot × {r.stride}"
                 if r.style == "ring" else f"is the current record at {r.kind.value} {r.base}, read with every poll")
        out += [
            f"### Records (`{r.event_kind}` events)",
            "",
            f"Record *n* (counted by `{r.counter_field}`, from {r.start_at} after boot) {where}; "
            f"{r.record_words} registers per record. Event id: record number and record time (ms).",
            "",
            *_field_rows(r.fields, p, relative=True),
            "",
            "Event body: " + ", ".join(f"`{b.key}` ← " + (f"`{b.field}`" if b.field else
                                       f"{b.fields[0]}…{b.fields[-1]} (count `{b.count_field}`"
                                       + (f" − {b.count_less})" if b.count_less else ")")) for b in r.body),
            "",
        ]
    if p.notes:
        out += [p.notes, ""]
    return out


def render_devices_md() -> str:
    out = [
        "# Device profiles",
        "",
        "<!-- generated by `python -m gateway.docs` from gateway/profiles/*.yaml; do not edit by hand -->",
        "",
        "Addresses are 0-based PDU offsets; the 4x/3x/1x/0x column gives the traditional 1-based "
        "register number. Engineering value = raw × scale + offset. A reading is OUT_OF_RANGE (quality 1) when "
        "its raw value is an invalid marker, the float is NaN/Inf, or the value is outside the valid "
        "range; it is SENSOR_FAULT (quality 2) when a fault bit of the status register is set. "
        "Fields without a metric are read but not published. Each profile is a YAML file in "
        "`gateway/profiles/`; a site profile is written the same way (see docs/field-technician.md).",
        "",
    ]
    for p in all_profiles():
        out += render_profile(p)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_devices_md(), end="")
