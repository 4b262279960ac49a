"""Bridge weigh-in-motion scale: a record counter and a ring of vehicle records.

Shaped after the FHWA TMG per-vehicle weight record (lane, speed, gross weight, axle
count, alternating axle weights and spacings). The scale counts records from 1 after
every boot; record ``n`` lives in ring slot ``(n - 1) % 16`` at ``256 + slot * 32``.
The gateway polls the counter and reads only new slots; a counter that goes backwards
means the scale rebooted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.registers import (
    DataType,
    Field,
    Profile,
    RecordLayout,
    RegisterKind,
    WordOrder,
    decode_fields,
    encode_value,
)

IR = RegisterKind.INPUT_REGISTER
MAX_AXLES = 8

RECORD_FIELDS: tuple[Field, ...] = (
    Field("record_no", 0, IR, DataType.U32, description="record number (1-based since boot)"),
    Field("time_s", 2, IR, DataType.U32, 1.0, "s", description="passage time, Unix seconds"),
    Field("time_ms", 4, IR, DataType.U16, 1.0, "ms", description="passage time, milliseconds part"),
    Field("lane", 5, IR, DataType.U16, description="lane number (1-based)"),
    Field("speed", 6, IR, DataType.U16, 0.1, "km/h", description="speed, 0.1 km/h"),
    Field("axles", 7, IR, DataType.U16, valid_min=2, valid_max=MAX_AXLES, description="axle count"),
    Field("gross", 8, IR, DataType.U32, 1.0, "kg", description="gross vehicle weight, kg"),
    *(Field(f"axle_{i + 1}", 10 + i, IR, DataType.U16, 10.0, "kg", description=f"axle {i + 1} load, 10 kg")
      for i in range(MAX_AXLES)),
    *(Field(f"spacing_{i + 1}", 18 + i, IR, DataType.U16, 0.01, "m",
            description=f"spacing axle {i + 1}→{i + 2}, cm") for i in range(MAX_AXLES - 1)),
    Field("vehicle_class", 25, IR, DataType.U16, description="vehicle class code (device specific)"),
)

RECORDS = RecordLayout(counter_field="record_count", kind=IR, base=256, stride=32, slots=16, fields=RECORD_FIELDS)

WIM = Profile(
    name="wim",
    kind="wim",
    description="Bridge WIM scale: record counter, status, and a 16-slot ring of vehicle records.",
    fields=(
        Field("record_count", 0, IR, DataType.U32, 1.0, "", "record_count",
              description="records since boot; advances by one per vehicle"),
        Field("status", 2, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)"),
        Field("device_time", 3, IR, DataType.U32, 1.0, "s", None, description="scale clock, Unix s (internal)"),
    ),
    default_word_order=WordOrder.ABCD,
    status_field="status",
    status_bits=(
        (0, "lane 1 sensor fault"),
        (1, "lane 2 sensor fault"),
        (2, "calibration due"),
        (3, "clock not set"),
    ),
    records=RECORDS,
    notes="Vehicle records are events (kind `vehicle`), not time series; see the record layout below.",
)


@dataclass(frozen=True, slots=True)
class WimRecord:
    """One vehicle as the scale stores it (engineering units)."""

    record_no: int
    ts: float  # Unix seconds
    lane: int
    speed_kmh: float
    gross_kg: float
    axle_kg: tuple[float, ...]
    spacing_m: tuple[float, ...]  # len(axle_kg) - 1
    vehicle_class: int = 0

    def body(self) -> dict[str, Any]:
        """The event body of the MQTT contract."""
        return {
            "lane": self.lane,
            "speed_kmh": self.speed_kmh,
            "axles": len(self.axle_kg),
            "gross_kg": self.gross_kg,
            "axle_kg": list(self.axle_kg),
            "spacing_m": list(self.spacing_m),
        }


def encode_record(rec: WimRecord, word_order: WordOrder = WordOrder.ABCD) -> list[int]:
    """The ``RECORDS.record_words`` registers of one slot (what a simulated scale stores)."""
    n = len(rec.axle_kg)
    if not 1 <= n <= MAX_AXLES or len(rec.spacing_m) != max(n - 1, 0):
        from gateway.errors import EncodeError

        raise EncodeError(f"record {rec.record_no}: {n} axles with {len(rec.spacing_m)} spacings")
    secs = int(rec.ts)
    values: dict[str, float] = {
        "record_no": rec.record_no,
        "time_s": secs,
        "time_ms": round((rec.ts - secs) * 1000) % 1000,
        "lane": rec.lane,
        "speed": rec.speed_kmh,
        "axles": n,
        "gross": rec.gross_kg,
        "vehicle_class": rec.vehicle_class,
    }
    for i in range(MAX_AXLES):
        values[f"axle_{i + 1}"] = rec.axle_kg[i] if i < n else 0.0
    for i in range(MAX_AXLES - 1):
        values[f"spacing_{i + 1}"] = rec.spacing_m[i] if i < n - 1 else 0.0
    words = [0] * RECORDS.record_words
    for f in RECORD_FIELDS:
        words[f.address : f.end] = encode_value(f, values[f.name], word_order)
    return words


def decode_record(words: Sequence[int], word_order: WordOrder = WordOrder.ABCD) -> WimRecord:
    """Decode one slot's registers (at least ``RECORDS.record_words`` of them)."""
    d = decode_fields(RECORD_FIELDS, 0, words[: RECORDS.record_words], lambda _f: word_order)
    v: Mapping[str, float] = {k: x.value for k, x in d.items()}
    n = max(0, min(MAX_AXLES, int(v["axles"])))
    return WimRecord(
        record_no=int(v["record_no"]),
        ts=v["time_s"] + v["time_ms"] / 1000.0,
        lane=int(v["lane"]),
        speed_kmh=round(v["speed"], 1),
        gross_kg=v["gross"],
        axle_kg=tuple(v[f"axle_{i + 1}"] for i in range(n)),
        spacing_m=tuple(round(v[f"spacing_{i + 1}"], 2) for i in range(max(n - 1, 0))),
        vehicle_class=int(v["vehicle_class"]),
    )
