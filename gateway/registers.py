"""Register maps as data, and the pure codecs between engineering values and Modbus words.

One :class:`Profile` drives decoding (the poller), encoding (writes and the simulator) and
documentation (``docs/devices.md``), so the three never disagree.

Conventions:

* ``Field.address`` is the 0-based PDU offset (register "40001" is holding register 0).
* A register field's engineering value is ``raw * scale + offset``; a bit field is 0.0 or 1.0.
* Word order applies to 32-bit types only. For ``ABCD`` the value's big-endian bytes
  A B C D go out as words ``[AB, CD]``; ``CDAB`` = ``[CD, AB]`` (word swap), ``BADC`` =
  ``[BA, DC]`` (byte swap), ``DCBA`` = ``[DC, BA]`` (little endian). 16-bit fields are
  always big-endian, as the protocol defines.
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
    F32 = "f32"
    BIT = "bit"  # a coil or discrete input

    @property
    def width(self) -> int:
        """Registers (or bits, for BIT) this type occupies."""
        return 2 if self in (DataType.U32, DataType.I32, DataType.F32) else 1

    @property
    def raw_range(self) -> tuple[int, int]:
        return _RAW_RANGE[self]


_RAW_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFFFFFF),
    DataType.I32: (-0x80000000, 0x7FFFFFFF),
    DataType.F32: (0, 0),  # not an integer type
    DataType.BIT: (0, 1),
}


class WordOrder(StrEnum):
    ABCD = "ABCD"  # big endian, high word first (the "Modbus" default)
    CDAB = "CDAB"  # word swap: low word first
    BADC = "BADC"  # byte swap inside each word
    DCBA = "DCBA"  # little endian


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
class Field:
    """One named value in a device's register map."""

    name: str
    address: int  # 0-based PDU offset
    kind: RegisterKind
    dtype: DataType
    scale: float = 1.0
    unit: str = ""  # SenML unit of the engineering value (must match the metric's catalogue unit)
    metric: str | None = None  # contracts metric name, or None for raw/internal fields
    word_order: WordOrder | None = None  # None: the profile's default (32-bit types only)
    writable: bool = False
    valid_min: float | None = None  # engineering units; outside -> OUT_OF_RANGE
    valid_max: float | None = None
    sentinels: tuple[int, ...] = ()  # raw values meaning "no valid reading" (0xFFFF, 0x7FFF...)
    offset: float = 0.0
    polled: bool = True  # False: configuration registers read only by ``citywatch probe``
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF or self.address + self.width - 1 > 0xFFFF:
            raise ProfileError(f"{self.name}: address {self.address} outside 0..65535")
        if self.kind.is_bit != (self.dtype is DataType.BIT):
            raise ProfileError(f"{self.name}: {self.dtype} cannot live in a {self.kind}")
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
    def width(self) -> int:
        return self.dtype.width

    @property
    def end(self) -> int:
        """One past the last register (or bit) of this field."""
        return self.address + self.dtype.width


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """A ring of fixed-size records (WIM vehicles) behind a record counter.

    Record ``n`` (1-based, as counted by ``counter_field``) lives in slot ``(n - 1) % slots``
    at ``base + slot * stride``; ``fields`` have addresses relative to the slot start.
    """

    counter_field: str
    kind: RegisterKind
    base: int
    stride: int
    slots: int
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        size = max(f.end for f in self.fields)
        if size > self.stride:
            raise ProfileError(f"record fields span {size} registers > stride {self.stride}")
        if self.base + self.stride * self.slots > 0x10000:
            raise ProfileError("record ring runs past register 65535")

    @property
    def record_words(self) -> int:
        """Registers holding data in each slot (the rest of the stride is reserved)."""
        return max(f.end for f in self.fields)

    def slot_of(self, record_no: int) -> int:
        return (record_no - 1) % self.slots

    def address_of(self, record_no: int) -> int:
        return self.base + self.slot_of(record_no) * self.stride


#: A profile's derived metrics: (decoded field values by name) -> {metric: value}
Derive = Callable[[Mapping[str, float]], dict[str, float]]


@dataclass(frozen=True, slots=True)
class Profile:
    """A device type's register map and reading conventions."""

    name: str
    kind: str  # water_gauge | manhole | lamp | wim (contracts DeviceInfo.kind)
    description: str
    fields: tuple[Field, ...]
    default_word_order: WordOrder = WordOrder.ABCD
    max_block_registers: int = MAX_READ_REGISTERS  # some firmwares refuse long reads
    max_gap_registers: int = 8  # holes the planner may read through (0: the device rejects holes)
    status_field: str | None = None  # a status register whose fault bits mark readings SENSOR_FAULT
    fault_mask: int = 0
    fault_affects: tuple[str, ...] = ()  # metrics marked SENSOR_FAULT when a fault bit is set
    status_bits: tuple[tuple[int, str], ...] = ()  # (bit, meaning), for documentation and probe
    derived: tuple[tuple[str, str], ...] = ()  # (metric, how it is computed), for documentation
    derive: Derive | None = dc_field(default=None, compare=False, repr=False)
    derive_inputs: tuple[str, ...] = ()  # fields ``derive`` reads; their worst quality is the result's
    records: RecordLayout | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ProfileError(f"{self.name}: duplicate field names")
        for kind in RegisterKind:
            spans = sorted((f.address, f.end, f.name) for f in self.fields if f.kind is kind)
            for (_a0, e0, n0), (a1, _e1, n1) in itertools.pairwise(spans):
                if a1 < e0:
                    raise ProfileError(f"{self.name}: fields {n0} and {n1} overlap in {kind}")
        if self.status_field is not None and self.status_field not in names:
            raise ProfileError(f"{self.name}: status field {self.status_field} missing")
        if not 1 <= self.max_block_registers <= MAX_READ_REGISTERS:
            raise ProfileError(f"{self.name}: max_block_registers must be 1..{MAX_READ_REGISTERS}")
        for metric in self.fault_affects:
            if metric not in METRIC_UNITS:
                raise ProfileError(f"{self.name}: fault_affects names unknown metric {metric!r}")
        for metric, _how in self.derived:
            if metric not in METRIC_UNITS:
                raise ProfileError(f"{self.name}: derived metric {metric!r} is not in contracts.metrics")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ProfileError(f"profile {self.name} has no field {name!r}")

    def fields_of(self, kind: RegisterKind) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind is kind)

    @property
    def polled_fields(self) -> tuple[Field, ...]:
        """Fields read on every poll (configuration registers are left to ``probe``)."""
        return tuple(f for f in self.fields if f.polled)

    def word_order_of(self, f: Field, override: WordOrder | None = None) -> WordOrder:
        """Device override wins, then the field's own order, then the profile default."""
        if override is not None:
            return override
        return f.word_order if f.word_order is not None else self.default_word_order


# ------------------------------------------------------------------ codecs (pure)


def _bytes_to_words(b: bytes, order: WordOrder) -> list[int]:
    a, bb, c, d = b
    if order == WordOrder.ABCD:
        seq = (a, bb, c, d)
    elif order == WordOrder.CDAB:
        seq = (c, d, a, bb)
    elif order == WordOrder.BADC:
        seq = (bb, a, d, c)
    else:
        seq = (d, c, bb, a)
    return [(seq[0] << 8) | seq[1], (seq[2] << 8) | seq[3]]


def _words_to_bytes(words: Sequence[int], order: WordOrder) -> bytes:
    w0, w1 = words[0], words[1]
    x = (w0 >> 8, w0 & 0xFF, w1 >> 8, w1 & 0xFF)
    if order == WordOrder.ABCD:
        seq = x
    elif order == WordOrder.CDAB:
        seq = (x[2], x[3], x[0], x[1])
    elif order == WordOrder.BADC:
        seq = (x[1], x[0], x[3], x[2])
    else:
        seq = (x[3], x[2], x[1], x[0])
    return bytes(seq)


def raw_to_words(dtype: DataType, raw: int | float, order: WordOrder = WordOrder.ABCD) -> list[int]:
    """Encode a raw (unscaled) value of ``dtype`` as register words (or one bit)."""
    if dtype is DataType.BIT:
        return [1 if raw else 0]
    if dtype is DataType.F32:
        return _bytes_to_words(struct.pack(">f", float(raw)), order)
    lo, hi = dtype.raw_range
    iraw = int(raw)
    if not lo <= iraw <= hi:
        raise EncodeError(f"raw value {iraw} outside {dtype} range {lo}..{hi}")
    if dtype is DataType.U16:
        return [iraw]
    if dtype is DataType.I16:
        return [iraw & 0xFFFF]
    fmt = ">I" if dtype is DataType.U32 else ">i"
    return _bytes_to_words(struct.pack(fmt, iraw), order)


def words_to_raw(dtype: DataType, words: Sequence[int], order: WordOrder = WordOrder.ABCD) -> int | float:
    """Decode register words (or one bit) into the raw value of ``dtype``."""
    if len(words) != dtype.width:
        raise DecodeError(f"{dtype} needs {dtype.width} word(s), got {len(words)}")
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise DecodeError(f"register value {w} is not a 16-bit word")
    if dtype is DataType.BIT:
        return 1 if words[0] else 0
    if dtype is DataType.U16:
        return words[0]
    if dtype is DataType.I16:
        w = words[0]
        return w - 0x10000 if w & 0x8000 else w
    b = _words_to_bytes(words, order)
    if dtype is DataType.F32:
        return float(struct.unpack(">f", b)[0])
    return int(struct.unpack(">I" if dtype is DataType.U32 else ">i", b)[0])


def raw_int(dtype: DataType, words: Sequence[int], order: WordOrder = WordOrder.ABCD) -> int:
    """The registers as one unsigned integer in the given order (for sentinels and garbage display)."""
    if dtype.width == 1:
        return words[0]
    return int.from_bytes(_words_to_bytes(words, order), "big")


def encode_value(f: Field, value: float, word_order: WordOrder = WordOrder.ABCD) -> list[int]:
    """Engineering value -> the words (or bit) to put in ``f``'s registers.

    ``word_order`` is the effective order (see :meth:`Profile.word_order_of`); ignored for
    16-bit and bit fields. Raises :class:`EncodeError` if the value cannot be represented.
    """
    if not math.isfinite(value) and f.dtype is not DataType.F32:
        raise EncodeError(f"{f.name}: {value} cannot be encoded as {f.dtype}")
    if f.dtype is DataType.BIT:
        if value not in (0, 1):
            raise EncodeError(f"{f.name}: a bit takes 0 or 1, got {value}")
        return [int(value)]
    if f.dtype is DataType.F32:
        return raw_to_words(f.dtype, (value - f.offset) / f.scale, word_order)
    raw = round((value - f.offset) / f.scale)
    lo, hi = f.dtype.raw_range
    if not lo <= raw <= hi:
        raise EncodeError(f"{f.name}: {value} {f.unit} is raw {raw}, outside {f.dtype} range {lo}..{hi}")
    return raw_to_words(f.dtype, raw, word_order)


def decode_value(f: Field, words: Sequence[int], word_order: WordOrder = WordOrder.ABCD) -> float:
    """The field's registers (or bit) -> engineering value (may be NaN/inf for a garbage float)."""
    raw = words_to_raw(f.dtype, words, word_order)
    if f.dtype is DataType.BIT:
        return float(raw)
    if f.dtype is DataType.F32:
        if f.scale == 1.0 and f.offset == 0.0:
            return shortest_f32(float(raw))
        return float(raw) * f.scale + f.offset
    value = float(raw) * f.scale + f.offset
    # 1234 * 0.001 is 1.2340000000000002 in binary; publish the decimal the device meant
    return round(value, _decimals(f.scale))


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
    """GOOD, or OUT_OF_RANGE for a sentinel, a non-finite value or a value outside the valid range."""
    if f.sentinels and raw_int(f.dtype, words, word_order) in f.sentinels:
        return Quality.OUT_OF_RANGE
    if not math.isfinite(value):
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
            out[f.name] = Decoded(value, quality_of(f, chunk, value, order), chunk)
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


def encode_image(
    profile: Profile,
    values: Mapping[str, float],
    word_order_override: WordOrder | None = None,
) -> dict[RegisterKind, dict[int, int]]:
    """Register image {kind: {address: word or bit}} holding ``values`` (by field name).

    What a simulator serves; fields not in ``values`` are left out.
    """
    image: dict[RegisterKind, dict[int, int]] = {k: {} for k in RegisterKind}
    for name, value in values.items():
        f = profile.field(name)
        words = encode_value(f, value, profile.word_order_of(f, word_order_override))
        for i, w in enumerate(words):
            image[f.kind][f.address + i] = w
    return image
