"""Event sources, pure: record counters (wrap-around and reboot), record bodies, edges on bits.

A device counts its records (vehicles); the poller remembers the last count it handled and
asks :func:`counter_step` which record numbers are new. The rules, chosen so that no record
is lost silently and none is published twice:

* first poll after the gateway starts: re-read what the device still holds (every slot when
  records carry their number, which tells the slots that hold one; else up to ``count``);
  the event id ``"<record no>-<record time ms>"`` is the same as before the
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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.reading import Event
from gateway.registers import Field, Profile, RecordLayout, WordOrder, decode_fields


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
    if last is None and layout.number_field is not None:
        # at start the counter may have wrapped since boot: try every slot, the numbers tell which hold records
        return CounterStep((newest - layout.slots + 1) % modulus, layout.slots)
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


# ------------------------------------------------------------------ event schema (the cloud's check)


@dataclass(frozen=True, slots=True)
class BodyKey:
    """What one key of an event body may hold: a number (or a list of them) in ``lo..hi``."""

    integral: bool
    lo: float
    hi: float
    max_items: int = 0  # > 0: a list of at most this many numbers
    count_key: str | None = None  # the list's length is this key's value minus ``count_less``
    count_less: int = 0
    text: bool = False  # a string (or list of strings) of at most ``hi`` characters, not a number


#: Keys a record event may carry besides its registers: what a camera next to a WIM scale adds
#: (ANPR plate, image references). They never come from Modbus, so no profile declares them.
CAMERA_KEYS: dict[str, BodyKey] = {
    "plate": BodyKey(False, 1, 16, text=True),
    "images": BodyKey(False, 1, 512, max_items=8, text=True),
}


def _key_of(f: Field, max_items: int = 0, count_key: str | None = None, count_less: int = 0) -> BodyKey:
    if f.dtype.is_float:
        lo, hi = -math.inf, math.inf
    else:
        r0, r1 = f.dtype.raw_range
        lo, hi = sorted((r0 * f.scale + f.offset, r1 * f.scale + f.offset))
    if f.valid_min is not None:
        lo = max(lo, f.valid_min)
    if f.valid_max is not None:
        hi = min(hi, f.valid_max)
    return BodyKey(f.integral, lo, hi, max_items, count_key, count_less)


def event_schemas(profiles: Sequence[Profile]) -> dict[str, dict[str, BodyKey]]:
    """Event kind -> body key -> what it may hold, as the profiles declare their event sources."""
    out: dict[str, dict[str, BodyKey]] = {}
    for p in profiles:
        if p.records is not None:
            r = p.records
            keys = out.setdefault(r.event_kind, {})
            for name, spec in CAMERA_KEYS.items():
                keys.setdefault(name, spec)
            for item in r.body:
                if item.field is not None:
                    keys.setdefault(item.key, _key_of(r.field(item.field)))
                else:
                    count_key = next((b.key for b in r.body if b.field == item.count_field), None)
                    keys.setdefault(item.key, _key_of(r.field(item.fields[0]), len(item.fields), count_key,
                                                      item.count_less))
        for e in p.edges:
            keys = out.setdefault(e.kind, {})
            for name in e.body_fields:
                keys.setdefault(name, _key_of(p.field(name)))
    return out


def check_event(schemas: Mapping[str, Mapping[str, BodyKey]], kind: str, body: Mapping[str, Any]) -> str | None:
    """Why an event breaks its declared schema (``"unknown_event_kind: ..."``), or None if it fits.

    Keys are optional (a reading marked bad is left out of a body), but every key given must be
    declared, of the declared type and range, and a list must be as long as its count says.
    """
    keys = schemas.get(kind)
    if keys is None:
        return f"unknown_event_kind: {kind[:40]!r}; declared: {', '.join(sorted(schemas))}"
    for name, value in body.items():
        spec = keys.get(name)
        if spec is None:
            return f"bad_event_body: body.{name[:40]} is not declared for {kind}"
        items = value if spec.max_items else [value]
        what = "strings" if spec.text else "numbers"
        if spec.max_items and (not isinstance(value, list) or len(value) > spec.max_items):
            return f"bad_event_body: body.{name} must be a list of at most {spec.max_items} {what}"
        if spec.text:
            bad = next((x for x in items if not isinstance(x, str) or not spec.lo <= len(x) <= spec.hi), None)
            if bad is not None:
                size = f"{spec.lo:g}..{spec.hi:g}"
                return f"bad_event_body: body.{name}={str(bad)[:40]!r} is not a string of {size} chars"
            continue
        for x in items:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                return f"bad_event_body: body.{name}={str(x)[:40]} is not a number"
            if spec.integral and x != int(x):
                return f"bad_event_body: body.{name}={x} is not a whole number"
            if not spec.lo <= x <= spec.hi:
                return f"bad_event_body: body.{name}={x} outside {spec.lo:g}..{spec.hi:g}"
        if spec.count_key is not None and spec.count_key in body:
            want = int(body[spec.count_key]) - spec.count_less
            if len(value) != max(want, 0):
                return (f"bad_event_body: body.{name} has {len(value)} values but "
                        f"{spec.count_key}={body[spec.count_key]} asks for {max(want, 0)}")
    return None
