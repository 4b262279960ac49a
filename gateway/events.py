"""Event sources, pure: record counters (wrap-around and reboot), record bodies, edges on bits.

A device counts its records (vehicles); the poller remembers the last count it handled and
asks :func:`counter_step` which record numbers are new. The rules, chosen so that no record
is lost silently and none is published twice:

* first poll after the gateway starts: re-read what the device still holds (up to ``slots``
  records); the event id ``"<record no>-<record time ms>"`` is the same as before the
  restart, so the cloud drops the duplicates;
* the counter advanced: the records in between are new (more than ``slots``: the oldest were
  overwritten before we could read them, and are counted as lost);
* the counter (records written since boot, mod 2^16 or 2^32) went back: a wrap-around when
  it was in the top quarter of its range and is now in the bottom quarter (and no reboot was
  seen on the profile's uptime field), else a reboot (counter reset): the records since the
  boot are new. Record numbers repeat after a reset; the record time
  in the id keeps the events apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.reading import Event
from gateway.registers import Field, RecordLayout, WordOrder, decode_fields


@dataclass(frozen=True, slots=True)
class CounterStep:
    """Which records to read: ``n`` records ending with the newest; ``first`` is the oldest one's number."""

    first: int
    n: int
    lost: int = 0
    reset: bool = False
    wrapped: bool = False

    def numbers(self, modulus: int) -> list[int]:
        return [(self.first + i) % modulus for i in range(self.n)]


def counter_step(last: int | None, count: int, layout: RecordLayout, modulus: int,
                 rebooted: bool = False) -> CounterStep:
    """New records between the last handled count and ``count``; see the module doc.

    The counter counts records written since boot (mod ``modulus``); the k-th record since boot
    is numbered ``k - 1 + layout.start_at``, so the newest is ``count - 1 + start_at``.
    """
    newest = count - 1 + layout.start_at
    if last is None or rebooted or (count < last and not _wrapped(last, count, modulus)):
        n = max(0, min(count, layout.slots))
        lost = max(0, count - n) if last is not None else 0
        return CounterStep((newest - n + 1) % modulus, n, lost, reset=last is not None)
    new = (count - last) % modulus
    n = min(new, layout.slots)
    return CounterStep((newest - n + 1) % modulus, n, new - n, wrapped=count < last)


def _wrapped(last: int, count: int, modulus: int) -> bool:
    quarter = modulus // 4
    return last >= modulus - quarter and count < quarter


def record_values(layout: RecordLayout, words: Sequence[int],
                  order_of: Callable[[Field], WordOrder]) -> dict[str, float]:
    """Engineering values of one record slot's fields."""
    return {k: d.value for k, d in decode_fields(layout.fields, 0, words[: layout.record_words], order_of).items()}


def _json_number(layout: RecordLayout, name: str, value: float) -> float | int:
    return int(value) if layout.field(name).integral else value


def body_of(layout: RecordLayout, values: Mapping[str, float]) -> dict[str, Any]:
    """The event body the profile declares, from one record's values (lists cut to their count)."""
    body: dict[str, Any] = {}
    for item in layout.body:
        if item.field is not None:
            body[item.key] = _json_number(layout, item.field, values[item.field])
        else:
            assert item.count_field is not None
            n = max(0, min(len(item.fields), int(values[item.count_field]) - item.count_less))
            body[item.key] = [_json_number(layout, f, values[f]) for f in item.fields[:n]]
    return body


def record_time(layout: RecordLayout, values: Mapping[str, float]) -> float:
    assert layout.time_field is not None
    ts = values[layout.time_field]
    if layout.time_ms_field is not None:
        ts += values[layout.time_ms_field] / 1000.0
    return round(ts, 3)


def record_event(layout: RecordLayout, device: str, number: int, values: Mapping[str, float]) -> Event:
    ts = record_time(layout, values)
    return Event(device, layout.event_kind, f"{number}-{round(ts * 1000)}", ts, body_of(layout, values))


def body_to_values(layout: RecordLayout, number: int, ts: float, body: Mapping[str, Any]) -> dict[str, float]:
    """The inverse of :func:`body_of`: record field values holding ``body`` (what a simulator stores)."""
    values: dict[str, float] = {}
    for item in layout.body:
        got = body.get(item.key)
        if item.field is not None:
            if got is not None:
                values[item.field] = float(got)
        elif isinstance(got, list):
            for name, x in zip(item.fields, got, strict=False):
                values[name] = float(x)
            assert item.count_field is not None
            values.setdefault(item.count_field, float(len(got) + item.count_less))
    if layout.number_field is not None:
        values[layout.number_field] = float(number)
    if layout.time_field is not None:
        secs = int(ts)
        if layout.time_ms_field is not None:
            values[layout.time_field] = float(secs)
            values[layout.time_ms_field] = float(round((ts - secs) * 1000) % 1000)
        else:
            values[layout.time_field] = float(round(ts))
    return values
