"""Device profiles as YAML: the schema a site writes, validated once and compiled to :class:`Profile`.

The shipped library (``gateway/profiles/*.yaml``) and a site's own files go through this one
loader, so a city's gauge from another vendor is a file, not a code change. Unknown keys are
errors and every error names the file, the key path and the value (``ConfigError``). The
result is the same frozen :class:`gateway.registers.Profile` the planner and decoder always used,
so a YAML profile costs nothing per poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field as PydField
from pydantic import field_validator, model_validator

from contracts.config import StrictModel, parse_yaml, validate_config
from contracts.errors import ConfigError
from contracts.metrics import METRIC_UNITS
from gateway.errors import ProfileError
from gateway.expr import check_unit, compile_expression
from gateway.registers import (
    MAX_READ_REGISTERS,
    BodyItem,
    ByteOrder,
    Command,
    DataType,
    Deadband,
    Derivation,
    EdgeEvent,
    Field,
    Flag,
    Profile,
    RecordLayout,
    RegisterKind,
    WordOrder,
)

#: device kinds the cloud knows, plus ``generic`` (readings only, no kind-specific rules)
KINDS = ("water_gauge", "manhole", "lamp", "wim", "generic")
#: the cloud's command names (edge_agent.commands); a profile maps them to writes
COMMAND_NAMES = ("lamp_on", "lamp_off", "dim")
INTERNAL = "internal"

TABLES: dict[str, RegisterKind] = {
    "coil": RegisterKind.COIL,
    "discrete_input": RegisterKind.DISCRETE_INPUT,
    "input": RegisterKind.INPUT_REGISTER,
    "holding": RegisterKind.HOLDING_REGISTER,
}
TABLE_NAMES = {v: k for k, v in TABLES.items()}

Name = Annotated[str, PydField(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class DeadbandSpec(StrictModel):
    """Publish when the value moves beyond ``abs`` (unit of the field) or ``pct`` %, or ``heartbeat_s`` passed."""

    abs: float | None = PydField(None, gt=0.0)
    pct: float | None = PydField(None, gt=0.0, le=100.0)
    heartbeat_s: float = PydField(gt=0.0, le=86400.0)  # required: a silent value looks like a dead device

    @model_validator(mode="after")
    def _some_band(self) -> DeadbandSpec:
        if self.abs is None and self.pct is None:
            raise ValueError("give abs and/or pct")
        return self

    def build(self) -> Deadband:
        return Deadband(self.abs, self.pct, self.heartbeat_s)


class FlagSpec(StrictModel):
    bit: int = PydField(ge=0, le=15)
    meaning: str
    fault: bool = False  # marks the profile's fault_affects metrics SENSOR_FAULT
    event: Name | None = None  # emit an event of this kind when the bit goes 0 -> 1


class FieldSpec(StrictModel):
    """One value in the register map (addresses are 0-based PDU offsets)."""

    name: Name
    table: Literal["coil", "discrete_input", "input", "holding"]
    address: int = PydField(ge=0, le=0xFFFF)
    type: DataType
    length: int = PydField(0, ge=0, le=MAX_READ_REGISTERS)  # registers of a string
    bit: int | None = PydField(None, ge=0, le=15)  # a bool that is one bit of a register
    word_order: WordOrder | None = None
    byte_order: ByteOrder = ByteOrder.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    metric: str = INTERNAL  # a catalogue metric, or "internal": read and used in derivations, not published
    valid_min: float | None = None
    valid_max: float | None = None
    sentinels: tuple[int, ...] = ()
    enum: dict[int, str] = PydField(default_factory=dict)
    flags: tuple[FlagSpec, ...] = ()
    writable: bool = False
    read: Literal["poll", "once", "config"] = "poll"  # once: at start and after a reboot; config: probe only
    poll_interval_s: float | None = PydField(None, gt=0.0, le=86400.0)
    deadband: DeadbandSpec | None = None
    description: str = ""

    @field_validator("metric")
    @classmethod
    def _metric_known(cls, v: str) -> str:
        if v != INTERNAL and v not in METRIC_UNITS:
            raise ValueError(f"not a catalogue metric (contracts.metrics) nor 'internal'; known: "
                             f"{', '.join(sorted(METRIC_UNITS))}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.metric != INTERNAL and METRIC_UNITS[self.metric] != self.unit:
            raise ValueError(f"unit {self.unit!r} but metric {self.metric} is in {METRIC_UNITS[self.metric]!r}")
        if self.valid_min is not None and self.valid_max is not None and self.valid_min > self.valid_max:
            raise ValueError(f"valid_min {self.valid_min} > valid_max {self.valid_max}")
        if self.read != "poll" and self.poll_interval_s is not None:
            raise ValueError("poll_interval_s is for polled fields (read: poll)")
        if self.deadband is not None and self.metric == INTERNAL:
            raise ValueError("a deadband is for published fields (give a metric)")
        return self

    def build(self, offset_base: int = 0) -> Field:
        return Field(
            name=self.name, address=self.address + offset_base, kind=TABLES[self.table], dtype=self.type,
            scale=self.scale, unit=self.unit, metric=None if self.metric == INTERNAL else self.metric,
            word_order=self.word_order, writable=self.writable, valid_min=self.valid_min, valid_max=self.valid_max,
            sentinels=self.sentinels, offset=self.offset, polled=self.read != "config",
            description=self.description, byte_order=self.byte_order, length=self.length, bit=self.bit,
            enum=tuple(sorted(self.enum.items())),
            flags=tuple(Flag(f.bit, f.meaning, f.fault) for f in self.flags),
            read_once=self.read == "once", poll_interval_s=self.poll_interval_s,
        )


class DerivedSpec(StrictModel):
    metric: str
    expr: str = PydField(min_length=1, max_length=400)
    description: str = ""
    deadband: DeadbandSpec | None = None

    @field_validator("metric")
    @classmethod
    def _metric_known(cls, v: str) -> str:
        if v not in METRIC_UNITS:
            raise ValueError("not a catalogue metric (contracts.metrics)")
        return v


class ListItem(StrictModel):
    """A list in an event body: the values of ``fields``, cut to (value of ``count``) − ``less``."""

    fields: tuple[Name, ...] = PydField(min_length=1)
    count: Name
    less: int = PydField(0, ge=0, le=8)


class RecordSpec(StrictModel):
    """An event source with a counter: a ring of records, or one current-record block."""

    style: Literal["ring", "current"]
    counter: Name  # a profile field (a 16- or 32-bit counter; the top-level fields or a record field)
    table: Literal["input", "holding"]
    base: int = PydField(ge=0, le=0xFFFF)
    stride: int | None = PydField(None, ge=1, le=MAX_READ_REGISTERS)  # ring: registers per slot
    slots: int = PydField(1, ge=1, le=4096)
    start_at: Literal[0, 1] = 1  # first record number after a boot
    event: Name  # event kind, e.g. vehicle
    number: Name | None = None  # record field holding its own number (overwrite check)
    time: Name  # record field: Unix seconds (event time and, with the number, the event id)
    time_ms: Name | None = None
    fields: tuple[FieldSpec, ...] = PydField(min_length=1)
    body: dict[str, Name | ListItem] = PydField(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> RecordSpec:
        if self.style == "current" and self.slots != 1:
            raise ValueError("a current-record block has one slot")
        if self.style == "ring" and self.stride is None:
            raise ValueError("a ring needs stride (registers per slot)")
        return self


class EdgeSpec(StrictModel):
    """An event when a bit field goes 0 -> 1 between two polls."""

    field: Name
    kind: Name
    body: tuple[Name, ...] = ()


class CommandSpec(StrictModel):
    field: Name
    value: float | None = None  # a fixed value (lamp_on: 1) ...
    arg: Name | None = None  # ... or the command's numeric argument (dim: level_pct)

    @model_validator(mode="after")
    def _one(self) -> CommandSpec:
        if (self.value is None) == (self.arg is None):
            raise ValueError("give either value or arg")
        return self


class ProfileSpec(StrictModel):
    """A device profile file."""

    name: Name
    kind: Literal["water_gauge", "manhole", "lamp", "wim", "generic"]
    description: str
    default_word_order: WordOrder = WordOrder.ABCD
    max_block_registers: int = PydField(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_gap_registers: int = PydField(8, ge=0, le=MAX_READ_REGISTERS)
    fields: tuple[FieldSpec, ...] = PydField(min_length=1)
    fault_affects: tuple[str, ...] = ()
    derived: tuple[DerivedSpec, ...] = ()
    records: RecordSpec | None = None
    events: tuple[EdgeSpec, ...] = ()
    commands: dict[Literal["lamp_on", "lamp_off", "dim"], CommandSpec] = PydField(default_factory=dict)
    uptime_field: Name | None = None
    notes: str = ""


def _build(spec: ProfileSpec, source: str, data: Any) -> Profile:
    """Cross-field checks (each error with its key path) and the compiled profile."""

    def fail(path: str, value: object, problem: str) -> ConfigError:
        return ConfigError(source, path, value, problem)

    fields: list[Field] = []
    for i, fs in enumerate(spec.fields):
        try:
            fields.append(fs.build())
        except ProfileError as exc:
            raise fail(f"fields[{i}]", fs.name, str(exc)) from exc
    by_name = {f.name: f for f in fields}
    flagged = [f.name for f in fields if f.flags]
    if len(flagged) > 1:
        raise fail("fields", flagged, "only one status field may declare flags")
    status_field = flagged[0] if flagged else None
    edges = [EdgeEvent(fs.name, fl.event, fl.bit) for fs in spec.fields for fl in fs.flags if fl.event is not None]
    deadbands = [(fs.metric, fs.deadband.build()) for fs in spec.fields if fs.deadband is not None]
    records: RecordLayout | None = None
    if spec.records is not None:
        records, extra = _records(spec.records, source, by_name)
        fields += extra
        by_name.update({f.name: f for f in extra})
    for i, e in enumerate(spec.events):
        on = by_name.get(e.field)
        if on is None or on.dtype is not DataType.BIT:
            raise fail(f"events[{i}].field", e.field, "must name a bit field (coil, discrete input or register bit)")
        for j, b in enumerate(e.body):
            if b not in by_name:
                raise fail(f"events[{i}].body[{j}]", b, "not a field of this profile")
        edges.append(EdgeEvent(e.field, e.kind, None, e.body))
    units = {f.name: f.unit for f in fields}
    derived: list[Derivation] = []
    for i, d in enumerate(spec.derived):
        try:
            compiled = compile_expression(d.expr, units)
            check_unit(compiled, METRIC_UNITS[d.metric])
        except ProfileError as exc:
            raise fail(f"derived[{i}].expr", d.expr, str(exc)) from exc
        db = d.deadband.build() if d.deadband is not None else None
        derived.append(Derivation(d.metric, d.expr, compiled.evaluate, compiled.names, db))
        if db is not None:
            deadbands.append((d.metric, db))
    metrics = {f.metric for f in fields if f.metric} | {d.metric for d in derived}
    for i, m in enumerate(spec.fault_affects):
        if m not in metrics:
            raise fail(f"fault_affects[{i}]", m, "not a metric this profile publishes")
    commands: list[Command] = []
    for name, c in spec.commands.items():
        target = by_name.get(c.field)
        if target is None or not target.writable:
            raise fail(f"commands.{name}.field", c.field, "must name a writable field")
        commands.append(Command(name, c.field, c.value, c.arg))
    if spec.uptime_field is not None and spec.uptime_field not in by_name:
        raise fail("uptime_field", spec.uptime_field, "not a field of this profile")
    try:
        return Profile(
            name=spec.name, kind=spec.kind, description=spec.description, fields=tuple(fields),
            default_word_order=spec.default_word_order, max_block_registers=spec.max_block_registers,
            max_gap_registers=spec.max_gap_registers, status_field=status_field,
            fault_affects=spec.fault_affects, derived=tuple(derived), records=records, edges=tuple(edges),
            commands=tuple(commands), deadbands=tuple(deadbands), uptime_field=spec.uptime_field,
            notes=spec.notes, source=source,
        )
    except ProfileError as exc:
        raise fail("fields", [f.name for f in fields], str(exc)) from exc


def _records(rs: RecordSpec, source: str, by_name: Mapping[str, Field]) -> tuple[RecordLayout, list[Field]]:
    """The record layout, and (current style) its fields at absolute addresses, read with every poll."""
    rel: list[Field] = []
    for i, fs in enumerate(rs.fields):
        try:
            rel.append(fs.build())
        except ProfileError as exc:
            raise ConfigError(source, f"records.fields[{i}]", fs.name, str(exc)) from exc
        if fs.table != rs.table:
            raise ConfigError(source, f"records.fields[{i}].table", fs.table, f"record fields live in {rs.table}")
        if fs.name in by_name:
            raise ConfigError(source, f"records.fields[{i}].name", fs.name, "also a top-level field")
    extra = [fs.build(rs.base) for fs in rs.fields] if rs.style == "current" else []
    names = {f.name for f in rel}
    counter = by_name.get(rs.counter) or next((f for f in extra if f.name == rs.counter), None)
    if counter is None or counter.dtype not in (DataType.U16, DataType.U32):
        raise ConfigError(source, "records.counter", rs.counter, "must name a u16 or u32 field")
    body: list[BodyItem] = []
    for key, item in rs.body.items():
        refs = (item,) if isinstance(item, str) else (*item.fields, item.count)
        for ref in refs:
            if ref not in names:
                raise ConfigError(source, f"records.body.{key}", ref, "not a record field")
        if isinstance(item, str):
            body.append(BodyItem(key, field=item))
        else:
            body.append(BodyItem(key, fields=item.fields, count_field=item.count, count_less=item.less))
    size = max(f.end for f in rel)
    try:
        layout = RecordLayout(
            counter_field=rs.counter, kind=TABLES[rs.table], base=rs.base, stride=rs.stride or size,
            slots=rs.slots, fields=tuple(rel), style=rs.style, event_kind=rs.event, number_field=rs.number,
            time_field=rs.time, time_ms_field=rs.time_ms, body=tuple(body), start_at=rs.start_at,
        )
    except ProfileError as exc:
        raise ConfigError(source, "records", rs.event, str(exc)) from exc
    return layout, extra


def parse_profile(text: str, source: str) -> Profile:
    """Validate a profile document's text; ``source`` names it in errors."""
    data = parse_yaml(text, source)
    spec = validate_config(data, ProfileSpec, source)
    return _build(spec, source, data)


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", str(p), f"cannot read profile: {exc.strerror or exc}") from exc
    return parse_profile(text, str(p))


def dump_profile(profile: Profile) -> dict[str, Any]:
    """A profile as the YAML document that loads back to it (``citywatch profile new``)."""
    out: dict[str, Any] = {"name": profile.name, "kind": profile.kind, "description": profile.description,
                           "default_word_order": profile.default_word_order.value,
                           "max_block_registers": profile.max_block_registers,
                           "max_gap_registers": profile.max_gap_registers,
                           "fields": [dump_field(f) for f in profile.fields]}
    return out


def dump_field(f: Field) -> dict[str, Any]:
    d: dict[str, Any] = {"name": f.name, "table": TABLE_NAMES[f.kind], "address": f.address, "type": f.dtype.value}
    if f.length:
        d["length"] = f.length
    if f.bit is not None:
        d["bit"] = f.bit
    if f.word_order is not None:
        d["word_order"] = f.word_order.value
    if f.byte_order is not ByteOrder.BIG:
        d["byte_order"] = f.byte_order.value
    if f.scale != 1.0:
        d["scale"] = f.scale
    if f.unit:
        d["unit"] = f.unit
    d["metric"] = f.metric or INTERNAL
    if f.description:
        d["description"] = f.description
    return d
