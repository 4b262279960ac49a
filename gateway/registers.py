"""Register maps as data, and the pure codecs between engineering values and Modbus words.

One :class:`Profile` drives decoding (the poller), encoding (writes and the simulator) and
documentation (``docs/devices.md``), so the three never disagree.

Conventions:

* ``Field.address`` is the 0-based PDU offset (register "40001" is holding register 0).
* A register field's engineering value is ``raw * scale + offset``; a bit field is 0.0 or 1.0.
* Word order applies to multi-register types (32 and 64 bits). For ``ABCD`` the value's
  big-endian bytes A B C D go out as words ``[AB, CD]``; ``CDAB`` = ``[CD, AB]`` (word swap),
  ``BADC`` = ``[BA, DC]`` (byte swap), ``DCBA`` = ``[DC, BA]`` (little endian); 64-bit values
  follow the same two rules over four registers. A field's ``byte_order: little`` swaps the
  bytes of every register on top (for 16-bit fields and strings the only order that applies).
* Quality: a raw value listed in ``sentinels`` (e.g. 0xFFFF "no echo"), a non-finite float
  or a value outside ``[valid_min, valid_max]`` is :data:`Quality.OUT_OF_RANGE`.

Nothing here mutates its inputs or does I/O.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum

from contracts.metrics import METRIC_UNITS
from contracts.reading import Quality
from gateway.errors import DecodeError, EncodeError, ProfileError

MAX_READ_REGISTERS = 125  # FC3/FC4 limit (spec: 0x7D)
MAX_READ_BITS = 2000  # FC1/FC2 limit (spec: 0x7D0)
MAX_WRITE_REGISTERS = 123  # FC16 limit
MAX_WRITE_BITS = 1968  # FC15 limit


class DataType(StrEnum):
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"  # fixed length, two characters per register (``Field.length`` registers)
    BIT = "bit"  # a coil or discrete input, or one bit of a register (``Field.bit``)

    @property
    def width(self) -> int:
        """Registers (or bits, for BIT) this type occupies; 0 for STRING (its field's ``length``)."""
        return _WIDTH[self]

    @property
    def raw_range(self) -> tuple[int, int]:
        return _RAW_RANGE[self]

    @property
    def is_float(self) -> bool:
        return self in _FLOATS


_WIDTH: dict[DataType, int] = {
    DataType.U16: 1, DataType.I16: 1, DataType.BIT: 1, DataType.STRING: 0,
    DataType.U32: 2, DataType.I32: 2, DataType.F32: 2,
    DataType.U64: 4, DataType.I64: 4, DataType.F64: 4,
}

_RAW_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFFFFFF),
    DataType.I32: (-0x80000000, 0x7FFFFFFF),
    DataType.U64: (0, 0xFFFFFFFFFFFFFFFF),
    DataType.I64: (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF),
    DataType.F32: (0, 0),  # not an integer type
    DataType.F64: (0, 0),
    DataType.STRING: (0, 0),
    DataType.BIT: (0, 1),
}

_FLOATS = frozenset({DataType.F32, DataType.F64})
_STRUCT = {DataType.U32: "I", DataType.I32: "i", DataType.U64: "Q", DataType.I64: "q",
           DataType.F32: "f", DataType.F64: "d"}


class WordOrder(StrEnum):
    """Order of the bytes of a multi-register value, named for 32 bits (64 bits: same rule per word pair).

    ``CDAB`` reverses the registers, ``BADC`` swaps the bytes inside each register, ``DCBA`` does both.
    """

    ABCD = "ABCD"  # big endian, high word first (the "Modbus" default)
    CDAB = "CDAB"  # word swap: low word first
    BADC = "BADC"  # byte swap inside each word
    DCBA = "DCBA"  # little endian


_WORD_SWAPPED = frozenset({WordOrder.CDAB, WordOrder.DCBA})
_BYTE_SWAPPED = frozenset({WordOrder.BADC, WordOrder.DCBA})


class ByteOrder(StrEnum):
    """Byte order inside each register: ``big`` as the protocol defines, ``little`` for firmware that swaps."""

    BIG = "big"
    LITTLE = "little"


class RegisterKind(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.DISCRETE_INPUT)

    @property
    def read_fc(self) -> int:
        return _READ_FC[self]

    @property
    def write_single_fc(self) -> int | None:
        return {RegisterKind.COIL: 5, RegisterKind.HOLDING_REGISTER: 6}.get(self)

    @property
    def write_multiple_fc(self) -> int | None:
        return {RegisterKind.COIL: 15, RegisterKind.HOLDING_REGISTER: 16}.get(self)

    @property
    def max_read(self) -> int:
        return MAX_READ_BITS if self.is_bit else MAX_READ_REGISTERS


_READ_FC = {
    RegisterKind.COIL: 1,
    RegisterKind.DISCRETE_INPUT: 2,
    RegisterKind.HOLDING_REGISTER: 3,
    RegisterKind.INPUT_REGISTER: 4,
}


@dataclass(frozen=True, slots=True)
class Flag:
    """One bit of a status register: what it means and whether it marks readings SENSOR_FAULT."""

    bit: int
    meaning: str
    fault: bool = False


@dataclass(frozen=True, slots=True)
class Deadband:
    """Report by exception: publish when the value moves more than ``abs``/``pct`` or ``heartbeat_s`` passed."""

    abs: float | None = None
    pct: float | None = None
    heartbeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class Field:
    """One named value in a device's register map."""

    name: str
    address: int  # 0-based PDU offset
    kind: RegisterKind
    dtype: DataType
    scale: float = 1.0
    unit: str = ""  # SenML unit of the engineering value (must match the metric's catalogue unit)
    metric: str | None = None  # contracts metric name, or None for raw/internal fields
    word_order: WordOrder | None = None  # None: the profile's default (multi-register types only)
    writable: bool = False
    valid_min: float | None = None  # engineering units; outside -> OUT_OF_RANGE
    valid_max: float | None = None
    sentinels: tuple[int, ...] = ()  # raw values meaning "no valid reading" (0xFFFF, 0x7FFF...)
    offset: float = 0.0
    polled: bool = True  # False: configuration registers read only by ``citywatch probe``
    description: str = ""
    byte_order: ByteOrder = ByteOrder.BIG
    length: int = 0  # registers of a STRING field
    bit: int | None = None  # BIT of a register: which bit (0 = least significant)
    enum: tuple[tuple[int, str], ...] = ()  # allowed raw values and their meaning; others -> OUT_OF_RANGE
    flags: tuple[Flag, ...] = ()  # bit-field map of a status register
    read_once: bool = False  # read at start and after a device reboot (serial number, install height)
    poll_interval_s: float | None = None  # None: every poll of the device
    # derived once here, read on every decode: registers (or bits) taken, one past the last, decimals
    width: int = dc_field(init=False, repr=False, compare=False)
    end: int = dc_field(init=False, repr=False, compare=False)
    decimals: int = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        width = self.length if self.dtype is DataType.STRING else self.dtype.width
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "end", self.address + width)
        object.__setattr__(self, "decimals", _decimals(self.scale) if self.scale > 0 and math.isfinite(self.scale)
                           else 0)
        if not 0 <= self.address <= 0xFFFF or self.address + self.width - 1 > 0xFFFF:
            raise ProfileError(f"{self.name}: address {self.address} outside 0..65535")
        if self.dtype is DataType.BIT:
            if self.kind.is_bit == (self.bit is not None):
                raise ProfileError(f"{self.name}: a bit of a {self.kind} needs "
                                   f"{'no' if self.kind.is_bit else 'a'} bit number")
            if self.bit is not None and not 0 <= self.bit <= 15:
                raise ProfileError(f"{self.name}: bit {self.bit} outside 0..15")
            if self.bit is not None and self.writable:
                raise ProfileError(f"{self.name}: one bit of a register cannot be written on its own")
        elif self.kind.is_bit:
            raise ProfileError(f"{self.name}: {self.dtype} cannot live in a {self.kind}")
        if (self.dtype is DataType.STRING) != (self.length > 0):
            raise ProfileError(f"{self.name}: a string needs a length in registers, other types none")
        if self.dtype is DataType.STRING and (self.metric is not None or self.writable):
            raise ProfileError(f"{self.name}: a string is read-only and internal (no metric)")
        if self.writable and self.kind not in (RegisterKind.COIL, RegisterKind.HOLDING_REGISTER):
            raise ProfileError(f"{self.name}: a {self.kind} is read-only")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ProfileError(f"{self.name}: scale must be finite and non-zero")
        if self.metric is not None:
            want = METRIC_UNITS.get(self.metric)
            if want is None:
                raise ProfileError(f"{self.name}: metric {self.metric!r} is not in contracts.metrics")
            if want != self.unit:
                raise ProfileError(f"{self.name}: unit {self.unit!r} but metric {self.metric} is in {want!r}")

    @property
    def integral(self) -> bool:
        """Its engineering values are whole numbers (JSON ints in event bodies)."""
        return not self.dtype.is_float and self.scale == 1.0 and self.offset == 0.0


@dataclass(frozen=True, slots=True)
class BodyItem:
    """One key of an event body: a field's value, or a list of fields cut to a count field (axle loads)."""

    key: str
    field: str | None = None
    fields: tuple[str, ...] = ()
    count_field: str | None = None
    count_less: int = 0  # list length = value of count_field - count_less (spacings: axles - 1)


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """Records behind a counter: a ring of slots (``style="ring"``) or one current-record block.

    Record ``n`` (as counted by ``counter_field``, from ``start_at`` after boot) lives in slot
    ``(n - start_at) % slots`` at ``base + slot * stride``; ``fields`` have addresses relative to
    the slot start. A current-record block is a ring of one slot that is read on every poll.
    """

    counter_field: str
    kind: RegisterKind
    base: int
    stride: int
    slots: int
    fields: tuple[Field, ...]
    style: str = "ring"  # ring | current
    event_kind: str = "vehicle"
    number_field: str | None = None  # the record's own copy of its number (detects overwrites)
    time_field: str | None = None  # Unix seconds of the record (event time and id)
    time_ms_field: str | None = None  # milliseconds part
    body: tuple[BodyItem, ...] = ()
    start_at: int = 1  # the first record number after a boot

    def __post_init__(self) -> None:
        size = max(f.end for f in self.fields)
        if size > self.stride:
            raise ProfileError(f"record fields span {size} registers > stride {self.stride}")
        if self.base + self.stride * self.slots > 0x10000:
            raise ProfileError("record ring runs past register 65535")
        names = {f.name for f in self.fields}
        for ref in (self.number_field, self.time_field, self.time_ms_field):
            if ref is not None and ref not in names:
                raise ProfileError(f"record source names {ref!r}, which is not a record field")
        for item in self.body:
            for ref in (item.field, *item.fields, item.count_field):
                if ref is not None and ref not in names:
                    raise ProfileError(f"event body key {item.key!r} names {ref!r}, which is not a record field")

    @property
    def record_words(self) -> int:
        """Registers holding data in each slot (the rest of the stride is reserved)."""
        return max(f.end for f in self.fields)

    def slot_of(self, record_no: int) -> int:
        return (record_no - self.start_at) % self.slots

    def address_of(self, record_no: int) -> int:
        return self.base + self.slot_of(record_no) * self.stride

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ProfileError(f"record has no field {name!r}")


@dataclass(frozen=True, slots=True)
class EdgeEvent:
    """An event when a bit goes 0 -> 1 between two polls (a cover lifted, a door opened)."""

    field: str
    kind: str
    bit: int | None = None  # a bit of the field's value (a status flag); None: the field is a bit
    body_fields: tuple[str, ...] = ()  # fields whose GOOD values go into the body


@dataclass(frozen=True, slots=True)
class Derivation:
    """A metric computed from other fields of the same poll (safe expression, units checked at load)."""

    metric: str
    expression: str
    evaluate: Callable[[Mapping[str, float]], float] = dc_field(compare=False, repr=False)
    inputs: tuple[str, ...] = ()
    deadband: Deadband | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A cloud command the device supports: write ``field`` with ``value`` or the command's argument ``arg``."""

    name: str
    field: str
    value: float | None = None
    arg: str | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A device type's register map and reading conventions."""

    name: str
    kind: str  # water_gauge | manhole | lamp | wim | generic (contracts DeviceInfo.kind)
    description: str
    fields: tuple[Field, ...]
    default_word_order: WordOrder = WordOrder.ABCD
    max_block_registers: int = MAX_READ_REGISTERS  # some firmwares refuse long reads
    max_gap_registers: int = 8  # holes the planner may read through (0: the device rejects holes)
    status_field: str | None = None  # a status register whose fault bits mark readings SENSOR_FAULT
    fault_affects: tuple[str, ...] = ()  # metrics marked SENSOR_FAULT when a fault bit is set
    derived: tuple[Derivation, ...] = ()
    records: RecordLayout | None = None
    edges: tuple[EdgeEvent, ...] = ()
    commands: tuple[Command, ...] = ()
    deadbands: tuple[tuple[str, Deadband], ...] = ()  # (metric, deadband)
    uptime_field: str | None = None  # a value that only grows while the device runs: a drop means a reboot
    notes: str = ""
    source: str = dc_field(default="", compare=False)  # the file it was read from

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ProfileError(f"{self.name}: duplicate field names")
        for kind in RegisterKind:
            spans = sorted((f.address, f.end, f.name, f.bit is not None) for f in self.fields if f.kind is kind)
            for (_a0, e0, n0, b0), (a1, _e1, n1, b1) in itertools.pairwise(spans):
                if a1 < e0 and not (b0 or b1):
                    raise ProfileError(f"{self.name}: fields {n0} and {n1} overlap in {kind}")
        known = set(names)
        for ref in (self.status_field, self.uptime_field):
            if ref is not None and ref not in known:
                raise ProfileError(f"{self.name}: field {ref} missing")
        if not 1 <= self.max_block_registers <= MAX_READ_REGISTERS:
            raise ProfileError(f"{self.name}: max_block_registers must be 1..{MAX_READ_REGISTERS}")
        for metric in self.fault_affects:
            if metric not in METRIC_UNITS:
                raise ProfileError(f"{self.name}: fault_affects names unknown metric {metric!r}")
        for d in self.derived:
            if d.metric not in METRIC_UNITS:
                raise ProfileError(f"{self.name}: derived metric {d.metric!r} is not in contracts.metrics")
        if self.records is not None and self.records.counter_field not in known:
            raise ProfileError(f"{self.name}: record counter {self.records.counter_field} is not a field")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ProfileError(f"profile {self.name} has no field {name!r}")

    def fields_of(self, kind: RegisterKind) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind is kind)

    @property
    def polled_fields(self) -> tuple[Field, ...]:
        """Fields read on every poll (configuration, read-once and slower fields are not)."""
        return tuple(f for f in self.fields if f.polled and not f.read_once and f.poll_interval_s is None)

    @property
    def status_flags(self) -> tuple[Flag, ...]:
        return () if self.status_field is None else self.field(self.status_field).flags

    @property
    def fault_mask(self) -> int:
        return sum(1 << fl.bit for fl in self.status_flags if fl.fault)

    @property
    def status_bits(self) -> tuple[tuple[int, str], ...]:
        return tuple((fl.bit, fl.meaning) for fl in self.status_flags)

    def word_order_of(self, f: Field, override: WordOrder | None = None) -> WordOrder:
        """Device override wins, then the field's own order, then the profile default."""
        if override is not None:
            return override
        return f.word_order if f.word_order is not None else self.default_word_order

    def command(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)

    def deadband(self, metric: str) -> Deadband | None:
        return next((d for m, d in self.deadbands if m == metric), None)


# ------------------------------------------------------------------ codecs (pure)


def _swaps(width: int, order: WordOrder, byte_order: ByteOrder) -> tuple[bool, bool]:
    """(reverse the registers, swap bytes in each register) for a value ``width`` registers wide."""
    little = byte_order == ByteOrder.LITTLE
    if width == 1:
        return False, little
    return order in _WORD_SWAPPED, (order in _BYTE_SWAPPED) != little


#: (registers, swap bytes) -> the struct that packs registers into the value's bytes (built once, used per read)
_WORDS: dict[tuple[int, bool], struct.Struct] = {
    (n, swap): struct.Struct(f"{'<' if swap else '>'}{n}H") for n in range(1, MAX_READ_REGISTERS + 1)
    for swap in (False, True)
}
_NUMBER = {dtype: struct.Struct(">" + code) for dtype, code in _STRUCT.items()}


def _words_to_bytes(words: Sequence[int], order: WordOrder, byte_order: ByteOrder = ByteOrder.BIG) -> bytes:
    """The value's big-endian bytes from its registers."""
    word_swap, byte_swap = _swaps(len(words), order, byte_order)
    return _WORDS[len(words), byte_swap].pack(*(words[::-1] if word_swap else words))


def _bytes_to_words(b: bytes, order: WordOrder, byte_order: ByteOrder = ByteOrder.BIG) -> list[int]:
    n = len(b) // 2
    word_swap, byte_swap = _swaps(n, order, byte_order)
    words = list(_WORDS[n, byte_swap].unpack(b))
    return words[::-1] if word_swap else words


def raw_to_words(dtype: DataType, raw: int | float, order: WordOrder = WordOrder.ABCD,
                 byte_order: ByteOrder = ByteOrder.BIG) -> list[int]:
    """Encode a raw (unscaled) number of ``dtype`` as register words (or one bit)."""
    if dtype is DataType.BIT:
        return [1 if raw else 0]
    if dtype is DataType.STRING:
        raise EncodeError("a string is encoded with encode_text")
    if dtype.is_float:
        return _bytes_to_words(_NUMBER[dtype].pack(float(raw)), order, byte_order)
    lo, hi = dtype.raw_range
    iraw = int(raw)
    if not lo <= iraw <= hi:
        raise EncodeError(f"raw value {iraw} outside {dtype} range {lo}..{hi}")
    if dtype.width == 1:
        return _bytes_to_words(struct.pack(">H", iraw & 0xFFFF), order, byte_order)
    return _bytes_to_words(_NUMBER[dtype].pack(iraw), order, byte_order)


def words_to_raw(dtype: DataType, words: Sequence[int], order: WordOrder = WordOrder.ABCD,
                 byte_order: ByteOrder = ByteOrder.BIG) -> int | float:
    """Decode register words (or one bit) into the raw number of ``dtype``."""
    if dtype is DataType.STRING:
        raise DecodeError("a string is decoded with decode_text")
    if len(words) != dtype.width:
        raise DecodeError(f"{dtype} needs {dtype.width} word(s), got {len(words)}")
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise DecodeError(f"register value {w} is not a 16-bit word")
    if dtype is DataType.BIT:
        return 1 if words[0] else 0
    if dtype.width == 1:
        w = words[0] if byte_order is ByteOrder.BIG else ((words[0] & 0xFF) << 8) | (words[0] >> 8)
        if dtype is DataType.I16 and w & 0x8000:
            return w - 0x10000
        return w
    value = _NUMBER[dtype].unpack(_words_to_bytes(words, order, byte_order))[0]
    return float(value) if dtype in _FLOATS else int(value)


def raw_int(dtype: DataType, words: Sequence[int], order: WordOrder = WordOrder.ABCD,
            byte_order: ByteOrder = ByteOrder.BIG) -> int:
    """The registers as one unsigned integer in the given order (for sentinels and garbage display)."""
    if len(words) == 1 and byte_order is ByteOrder.BIG:
        return words[0]
    return int.from_bytes(_words_to_bytes(words, order, byte_order), "big")


def encode_text(f: Field, text: str) -> list[int]:
    """A STRING field's registers: ASCII, NUL padded to ``f.length`` registers."""
    data = text.encode("ascii", "replace")
    if len(data) > 2 * f.length:
        raise EncodeError(f"{f.name}: {text!r} is longer than {2 * f.length} characters")
    data = data.ljust(2 * f.length, b"\0")
    little = f.byte_order is ByteOrder.LITTLE
    return list(struct.unpack(f"{'<' if little else '>'}{f.length}H", data))


def decode_text(f: Field, words: Sequence[int]) -> str:
    """A STRING field's text (up to the first NUL; non-ASCII bytes shown as U+FFFD)."""
    if len(words) != f.length or not all(0 <= w <= 0xFFFF for w in words):
        raise DecodeError(f"{f.name}: a string of {f.length} registers, got {list(words)[:8]}")
    little = f.byte_order is ByteOrder.LITTLE
    data = struct.pack(f"{'<' if little else '>'}{f.length}H", *words)
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


def encode_value(f: Field, value: float, word_order: WordOrder = WordOrder.ABCD) -> list[int]:
    """Engineering value -> the words (or bit) to put in ``f``'s registers.

    ``word_order`` is the effective order (see :meth:`Profile.word_order_of`); ignored for
    16-bit and bit fields. Raises :class:`EncodeError` if the value cannot be represented.
    """
    if not math.isfinite(value) and not f.dtype.is_float:
        raise EncodeError(f"{f.name}: {value} cannot be encoded as {f.dtype}")
    if f.dtype is DataType.STRING:
        raise EncodeError(f"{f.name}: a string takes text (encode_text), not a number")
    if f.dtype is DataType.BIT:
        if value not in (0, 1):
            raise EncodeError(f"{f.name}: a bit takes 0 or 1, got {value}")
        return [int(value) << (f.bit or 0)]
    if f.dtype.is_float:
        return raw_to_words(f.dtype, (value - f.offset) / f.scale, word_order, f.byte_order)
    raw = round((value - f.offset) / f.scale)
    lo, hi = f.dtype.raw_range
    if not lo <= raw <= hi:
        raise EncodeError(f"{f.name}: {value} {f.unit} is raw {raw}, outside {f.dtype} range {lo}..{hi}")
    return raw_to_words(f.dtype, raw, word_order, f.byte_order)


def decode_value(f: Field, words: Sequence[int], word_order: WordOrder = WordOrder.ABCD) -> float:
    """The field's registers (or bit) -> engineering value (may be NaN/inf for a garbage float).

    A STRING field decodes to NaN here; its text comes from :func:`decode_text`.
    """
    if f.dtype is DataType.BIT:
        if f.bit is not None:
            if len(words) != 1:
                raise DecodeError(f"{f.name}: a register bit needs 1 word, got {len(words)}")
            return float(words[0] >> f.bit & 1)
        return float(words_to_raw(f.dtype, words, word_order))
    if f.dtype is DataType.STRING:
        decode_text(f, words)
        return math.nan
    raw = words_to_raw(f.dtype, words, word_order, f.byte_order)
    if f.dtype.is_float:
        if f.scale == 1.0 and f.offset == 0.0:
            return shortest_f32(float(raw)) if f.dtype is DataType.F32 else float(raw)
        return float(raw) * f.scale + f.offset
    value = float(raw) * f.scale + f.offset
    # 1234 * 0.001 is 1.2340000000000002 in binary; publish the decimal the device meant
    return round(value, f.decimals)


def shortest_f32(x: float) -> float:
    """The shortest decimal that is the same float32 (224.73, not 224.72999572753906)."""
    if not math.isfinite(x):
        return x
    packed = struct.pack(">f", x)
    for digits in range(6, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack(">f", y) == packed:
            return y
    return x


def _decimals(scale: float) -> int:
    return max(0, math.ceil(-math.log10(scale) - 1e-9) + 1) if scale < 1 else 0


def quality_of(f: Field, words: Sequence[int], value: float, word_order: WordOrder = WordOrder.ABCD) -> Quality:
    """GOOD, or OUT_OF_RANGE for a sentinel, a value outside the enumeration, a non-finite value
    or a value outside the valid range (the reading is kept and marked, never dropped)."""
    if f.dtype is DataType.STRING:
        return Quality.GOOD
    if f.sentinels and raw_int(f.dtype, words, word_order, f.byte_order) in f.sentinels:
        return Quality.OUT_OF_RANGE
    if not math.isfinite(value):
        return Quality.OUT_OF_RANGE
    if f.enum and not any(raw == value for raw, _m in f.enum):
        return Quality.OUT_OF_RANGE
    if f.valid_min is not None and value < f.valid_min:
        return Quality.OUT_OF_RANGE
    if f.valid_max is not None and value > f.valid_max:
        return Quality.OUT_OF_RANGE
    return Quality.GOOD


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded field: engineering value, quality, and the raw words it came from."""

    value: float
    quality: Quality
    words: tuple[int, ...]
    text: str | None = None  # a STRING field's text


def decode_fields(
    fields: Sequence[Field],
    start: int,
    words: Sequence[int],
    order_of: Callable[[Field], WordOrder],
) -> dict[str, Decoded]:
    """Decode every field of ``fields`` that lies entirely inside ``words`` read from ``start``."""
    out: dict[str, Decoded] = {}
    end = start + len(words)
    for f in fields:
        if f.address >= start and f.end <= end:
            chunk = tuple(words[f.address - start : f.end - start])
            order = order_of(f)
            value = decode_value(f, chunk, order)
            text = decode_text(f, chunk) if f.dtype is DataType.STRING else None
            out[f.name] = Decoded(value, quality_of(f, chunk, value, order), chunk, text)
    return out


def decode_block(
    profile: Profile,
    kind: RegisterKind,
    start: int,
    words: Sequence[int],
    word_order_override: WordOrder | None = None,
) -> dict[str, Decoded]:
    """Decode every field of ``kind`` covered by a block read from ``start`` (bits: 0/1 per item)."""
    return decode_fields(
        profile.fields_of(kind),
        start,
        words,
        lambda f: profile.word_order_of(f, word_order_override),
    )


def put_words(bank: dict[int, int], f: Field, words: Sequence[int]) -> None:
    """Store ``f``'s encoded words in a register bank; a register bit is merged into its register."""
    if f.bit is not None:
        mask = 1 << f.bit
        bank[f.address] = (bank.get(f.address, 0) & ~mask) | (words[0] & mask)
        return
    for i, w in enumerate(words):
        bank[f.address + i] = w


def encode_image(
    profile: Profile,
    values: Mapping[str, float],
    word_order_override: WordOrder | None = None,
) -> dict[RegisterKind, dict[int, int]]:
    """Register image {kind: {address: word or bit}} holding ``values`` (by field name).

    What a simulator serves; fields not in ``values`` are left out. Whole registers are placed
    before register bits, so a status word and the flags declared inside it agree.
    """
    image: dict[RegisterKind, dict[int, int]] = {k: {} for k in RegisterKind}
    fields = sorted((profile.field(name) for name in values), key=lambda f: f.bit is not None)
    for f in fields:
        put_words(image[f.kind], f, encode_value(f, values[f.name], profile.word_order_of(f, word_order_override)))
    return image


def encode_record_values(layout: RecordLayout, values: Mapping[str, float],
                         order_of: Callable[[Field], WordOrder]) -> list[int]:
    """The ``layout.record_words`` registers of one record slot; fields not in ``values`` are 0."""
    bank: dict[int, int] = {}
    for f in sorted(layout.fields, key=lambda x: x.bit is not None):
        put_words(bank, f, encode_value(f, values.get(f.name, 0.0), order_of(f)))
    return [bank.get(i, 0) for i in range(layout.record_words)]
