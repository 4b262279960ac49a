"""The shipped WIM scale's vehicle record as a value object (simulator and tests).

The record layout itself is data (``wim.yaml``); this module only converts between a
:class:`WimRecord` and that layout's registers, through the same generic record codec the
poller uses (:func:`gateway.events.record_values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway import profiles
from gateway.errors import EncodeError
from gateway.events import body_to_values, record_values
from gateway.registers import RecordLayout, WordOrder, encode_record_values

_WIM = profiles.get("wim")
assert _WIM.records is not None
RECORDS: RecordLayout = _WIM.records
MAX_AXLES = len(next(item.fields for item in RECORDS.body if item.key == "axle_kg"))


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
        raise EncodeError(f"record {rec.record_no}: {n} axles with {len(rec.spacing_m)} spacings")
    values = body_to_values(RECORDS, rec.record_no, rec.ts, rec.body())
    values["vehicle_class"] = rec.vehicle_class
    return encode_record_values(RECORDS, values, lambda f: f.word_order or word_order)


def decode_record(words: Sequence[int], word_order: WordOrder = WordOrder.ABCD) -> WimRecord:
    """Decode one slot's registers (at least ``RECORDS.record_words`` of them)."""
    v = record_values(RECORDS, words, lambda f: f.word_order or word_order)
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
