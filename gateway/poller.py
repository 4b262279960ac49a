"""Per-device polling: the API the edge agent calls.

Shape (stable; the edge agent builds on it)::

    class DevicePoller:                       # one per configured device; keeps per-device state
        def __init__(self, device: DeviceConfig, bus: Bus) -> None
        async def poll(self, now: float) -> PollResult
            # PollResult(readings: list[Reading], events: list[Event]); every reading has ts=now
            # raises a GatewayError subclass on failure:
            #   Quarantined      the device is in backoff; nothing was sent (cheap; call again later)
            #   ConfigFault      exception 01/02/03: profile/config wrong; quarantined for quarantine_max_s
            #   SlaveBusy        exception 04/05/06/0A/0B: quarantined with exponential backoff
            #   NoResponse / BadFrame   after the bus's retries; quarantined after quarantine_after in a row
            #   BusError         the bus is down (port gone, TCP refused); not counted against the device
        async def write_field(self, field: str, value: float, now: float) -> float
            # encode (device word order), write (FC5/6/16), read back; returns the read-back value;
            # raises EncodeError (not writable / out of range), WriteMismatch, or the errors above
        health: DeviceHealth    # last_good_ts, consecutive_failures, quarantined_until, last_error
        info: DeviceInfo        # for the birth message

    class Bus:                                # gateway.bus; one per configured bus; async context manager
    def build_pollers(cfg: FieldConfig) -> tuple[list[Bus], dict[str, DevicePoller]]

Scheduling (when to call ``poll``, storm intervals) is the agent's; ``now`` is the sample time
it passes in, fixed at read time and never re-stamped. Quarantine time is measured on the
same ``now`` clock.

Reads follow the profile's schedule (:func:`gateway.plan.plan_groups`): every poll, slower
groups when their interval has passed, read-once fields at start and again after the device
rebooted (uptime or record counter went back) or came back after failures.

Events come from the profile's declared sources: a bit going 0 → 1 between two polls (a
manhole's ``cover_open``), and records behind a counter (a WIM scale's vehicles; ring or
current-record block). Counter wrap-around and resets are handled in :mod:`gateway.events`;
record event ids are ``"<record no>-<record time ms>"``: record numbers restart after a
reboot, so the number alone would collide.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.metrics import METRIC_UNITS
from contracts.reading import DeviceInfo, Event, Quality, Reading
from gateway import profiles
from gateway.bus import Bus
from gateway.config import DeviceConfig, FieldConfig
from gateway.errors import (
    BusError,
    ConfigFault,
    DeviceError,
    EncodeError,
    GatewayError,
    Quarantined,
    SlaveBusy,
    WriteMismatch,
)
from gateway.events import counter_step, record_event, record_values
from gateway.plan import Block, plan_groups, record_blocks
from gateway.registers import Decoded, Field, Profile, RecordLayout, RegisterKind, decode_block, encode_value, raw_int

log = logging.getLogger(__name__)

#: derived values are rounded here: 3.0 - 2.579 is 0.4209999999999998 in binary, the device meant 0.421
DERIVED_DECIMALS = 6


@dataclass
class DeviceHealth:
    """What the agent reports per device in its status message."""

    last_good_ts: float | None = None
    consecutive_failures: int = 0
    quarantined_until: float | None = None
    last_error: str | None = None
    polls: int = 0
    failures: int = 0
    records_lost: int = 0  # WIM records overwritten in the ring before we could read them

    def to_json(self) -> dict[str, object]:
        return {
            "last_good_ts": self.last_good_ts,
            "consecutive_failures": self.consecutive_failures,
            "quarantined_until": self.quarantined_until,
            "last_error": self.last_error,
            "polls": self.polls,
            "failures": self.failures,
            "records_lost": self.records_lost,
        }


@dataclass(frozen=True, slots=True)
class PollResult:
    readings: list[Reading]
    events: list[Event] = field(default_factory=list)


def _worst(qs: list[Quality]) -> Quality:
    return max(qs, default=Quality.GOOD)


def readings_from(profile: Profile, device: str, now: float, decoded: Mapping[str, Decoded],
                  context: Mapping[str, Decoded] | None = None) -> list[Reading]:
    """Pure: decoded fields → readings with quality (sentinel/range, status fault bits, derived).

    ``decoded`` is what this poll read (published); ``context`` adds values read earlier
    (read-once and slower fields) that derivations may use but that are not published again.
    """
    fault = False
    if profile.status_field is not None and profile.status_field in decoded:
        fault = bool(int(decoded[profile.status_field].value) & profile.fault_mask)
    out: list[Reading] = []
    for f in profile.fields:
        d = decoded.get(f.name)
        if d is None or f.metric is None:
            continue
        value, quality = d.value, d.quality
        if not math.isfinite(value):
            value = float(raw_int(f.dtype, d.words))  # the raw bits, so the garbage is visible
        if fault and f.metric in profile.fault_affects and quality is Quality.GOOD:
            quality = Quality.SENSOR_FAULT
        out.append(Reading(device, f.metric, now, value, f.unit, quality))
    if profile.derived:
        inputs = decoded if not context else {**context, **decoded}
        values = {k: d.value for k, d in inputs.items()}
        for dv in profile.derived:
            if not all(k in inputs for k in dv.inputs) or not any(k in decoded for k in dv.inputs):
                continue
            value = round(dv.evaluate(values), DERIVED_DECIMALS)
            if not math.isfinite(value):
                continue
            q = _worst([inputs[k].quality for k in dv.inputs])
            if fault and dv.metric in profile.fault_affects and q is Quality.GOOD:
                q = Quality.SENSOR_FAULT
            out.append(Reading(device, dv.metric, now, value, METRIC_UNITS[dv.metric], q))
    return out


def derived_values(profile: Profile, values: Mapping[str, float]) -> dict[str, float]:
    """Pure: the profile's derived metrics over plain field values (those whose inputs are all present)."""
    out: dict[str, float] = {}
    for dv in profile.derived:
        if all(k in values for k in dv.inputs):
            value = round(dv.evaluate(values), DERIVED_DECIMALS)
            if math.isfinite(value):
                out[dv.metric] = value
    return out


def edge_events(profile: Profile, device: str, now: float, decoded: Mapping[str, Decoded],
                previous: dict[str, float]) -> list[Event]:
    """Events for bits that went 0 -> 1 since the last poll; updates ``previous`` (bit state by edge)."""
    out: list[Event] = []
    for e in profile.edges:
        d = decoded.get(e.field)
        if d is None or d.quality is not Quality.GOOD:
            continue
        value = d.value if e.bit is None else float(int(d.value) >> e.bit & 1)
        key = f"{e.field}.{e.bit}" if e.bit is not None else e.field
        prev, previous[key] = previous.get(key), value
        if prev == 0.0 and value == 1.0:
            body: dict[str, object] = {}
            for name in e.body_fields:
                x = decoded.get(name)
                if x is not None and x.quality is Quality.GOOD:
                    body[name] = x.value
            out.append(Event(device, e.kind, f"{round(now * 1000)}", now, body))
    return out


class DevicePoller:
    """Reads one device, turns registers into readings and events, and keeps its health."""

    def __init__(self, device: DeviceConfig, bus: Bus, profile: Profile | None = None) -> None:
        """``profile``: the device's profile already loaded (default: ``device.profile`` from the library/file)."""
        self.device = device
        self.bus = bus
        self.profile = profile if profile is not None else profiles.get(device.profile)
        self.groups = plan_groups(self.profile, device.max_block_registers, device.max_gap_registers)
        self.blocks = self.groups[0].blocks  # read on every poll
        self._every = frozenset(n for b in self.blocks for n in b.fields)
        self.health = DeviceHealth()
        self.info: DeviceInfo = device.to_device_info()
        self._timeout_s = (device.timeout_ms or bus.cfg.timeout_ms) / 1000.0
        self._retries = bus.cfg.retries if device.retries is None else device.retries
        self._edges: dict[str, float] = {}
        self._record_count: int | None = None
        self._last_read: dict[int, float] = {}  # group index -> time it was last read
        self._context: dict[str, Decoded] = {}  # read-once and slower fields, for derivations
        self._uptime: float | None = None
        self.texts: dict[str, str] = {}  # string fields (serial number, firmware) as last read

    @property
    def id(self) -> str:
        return self.device.id

    async def _read(self, kind: RegisterKind, start: int, count: int) -> list[int]:
        return await self.bus.read(self.device.unit_id, kind, start, count,
                                   timeout_s=self._timeout_s, retries=self._retries)

    def _check_quarantine(self, now: float) -> None:
        h = self.health
        if h.quarantined_until is not None and now < h.quarantined_until:
            raise Quarantined(self.device.id, h.quarantined_until, h.last_error or "")

    async def _read_blocks(self, blocks: tuple[Block, ...], into: dict[str, Decoded]) -> None:
        for block in blocks:
            words = await self._read(block.kind, block.start, block.count)
            got = decode_block(self.profile, block.kind, block.start, words, self.device.word_order)
            if len(self.groups) > 1:  # a read through a hole must not publish another schedule's field
                got = {k: v for k, v in got.items() if k in block.fields}
            into.update(got)

    async def poll(self, now: float) -> PollResult:
        self._check_quarantine(now)
        self.health.polls += 1
        try:
            decoded: dict[str, Decoded] = {}
            rebooted = False
            for i, group in enumerate(self.groups):
                last = self._last_read.get(i)
                due = (last is None if group.once else
                       group.interval_s is None or last is None or now - last >= group.interval_s - 1e-6)
                if due:
                    await self._read_blocks(group.blocks, decoded)
                    self._last_read[i] = now
                if i == 0:  # a reboot seen on the every-poll fields makes read-once fields due now
                    rebooted = self._rebooted(decoded)
            readings = readings_from(self.profile, self.device.id, now, decoded, self._context)
            events = edge_events(self.profile, self.device.id, now, decoded, self._edges)
            if self.profile.records is not None:
                events += await self._record_events(decoded, rebooted)
        except DeviceError as exc:
            self._failed(now, exc)
            raise
        except BusError as exc:
            self.health.last_error = str(exc)
            raise
        self._remember(decoded)
        self._succeeded(now)
        return PollResult(readings, events)

    def _remember(self, decoded: dict[str, Decoded]) -> None:
        for name, d in decoded.items():
            if name not in self._every:
                self._context[name] = d
            if d.text is not None and self.texts.get(name) != d.text:
                log.info("%s: %s is %r", self.device.id, name, d.text)
                self.texts[name] = d.text

    def _rebooted(self, decoded: Mapping[str, Decoded]) -> bool:
        """The uptime field went back: the device rebooted; read-once fields are read again."""
        name = self.profile.uptime_field
        d = decoded.get(name) if name is not None else None
        if d is None or d.quality is not Quality.GOOD:
            return False
        prev, self._uptime = self._uptime, d.value
        if prev is not None and d.value < prev:
            log.warning("%s: uptime went back from %g to %g (device rebooted)", self.device.id, prev, d.value)
            self._forget_once()
            return True
        return False

    def _forget_once(self) -> None:
        for i, g in enumerate(self.groups):
            if g.once:
                self._last_read.pop(i, None)

    # ------------------------------------------------------------ events

    async def _record_events(self, decoded: dict[str, Decoded], rebooted: bool) -> list[Event]:
        layout = self.profile.records
        assert layout is not None
        d = decoded.get(layout.counter_field)
        if d is None or d.quality is not Quality.GOOD:
            return []
        counter = self.profile.field(layout.counter_field)
        modulus = 1 << (16 * counter.width)
        count = int(d.value)
        if count == self._record_count and not rebooted:
            return []
        step = counter_step(self._record_count, count, layout, modulus, rebooted)
        if step.reset:
            log.warning("%s: record counter went back from %s to %d (device rebooted)", self.device.id,
                        self._record_count, count)
            self._forget_once()
        if step.lost:
            self.health.records_lost += step.lost
            log.warning("%s: %d record(s) overwritten before they could be read", self.device.id, step.lost)
        numbers = step.numbers(modulus)
        if layout.style == "current":
            slots = {0: {f.name: decoded[f.name].value for f in layout.fields if f.name in decoded}}
        else:
            slots = await self._read_slots(layout, numbers)
        events: list[Event] = []
        for rec_no in numbers:
            values = slots.get(layout.slot_of(rec_no))
            if values is None or len(values) < len(layout.fields):
                continue
            if layout.number_field is not None and int(values[layout.number_field]) % modulus != rec_no:
                # at start: a slot never written since boot; later: overwritten by a newer record between
                # the counter and the record read
                if self._record_count is not None:
                    self.health.records_lost += 1
                continue
            if self._record_count is None and layout.time_field is not None and values[layout.time_field] == 0:
                continue  # at start: an empty slot (all zeros) that happens to carry the expected number 0
            events.append(record_event(layout, self.device.id, rec_no, values))
        self._record_count = count
        return events

    async def _read_slots(self, layout: RecordLayout, numbers: list[int]) -> dict[int, dict[str, float]]:
        if not numbers:
            return {}
        limit = min(self.profile.max_block_registers, self.device.max_block_registers or 125)
        override = self.device.word_order
        out: dict[int, dict[str, float]] = {}
        for b in record_blocks(layout, numbers[0], len(numbers), limit):
            words = await self._read(b.kind, b.start, b.count)
            for off in range(0, b.count, layout.stride):
                slot = (b.start + off - layout.base) // layout.stride
                chunk = words[off : off + layout.record_words]
                if len(chunk) == layout.record_words:
                    out[slot] = record_values(layout, chunk, lambda f: self.profile.word_order_of(f, override))
        return out

    # ------------------------------------------------------------ writes

    def _writable(self, name: str) -> Field:
        """A field by name, or the field that feeds the metric ``name`` (a site profile names its own fields)."""
        for f in self.profile.fields:
            if f.name == name:
                return f
        for f in self.profile.fields:
            if f.metric == name and f.writable:
                return f
        raise EncodeError(f"{self.device.id}: profile {self.profile.name} has no field {name!r}")

    async def command(self, name: str, args: Mapping[str, object], now: float) -> float:
        """Carry out a command the profile declares (a write with read-back); returns the read-back value."""
        cmd = self.profile.command(name)
        if cmd is None:
            raise EncodeError(f"{self.device.id}: profile {self.profile.name} does not support {name!r}")
        value = cmd.value
        if cmd.arg is not None:
            arg = args.get(cmd.arg)
            if isinstance(arg, bool) or not isinstance(arg, int | float):
                raise EncodeError(f"{self.device.id}: {name} needs a number {cmd.arg}")
            value = float(arg)
        assert value is not None
        return await self.write_field(cmd.field, value, now)

    async def write_field(self, field: str, value: float, now: float) -> float:
        """Write one writable field and return the value read back from the device."""
        f = self._writable(field)
        field = f.name
        if not f.writable:
            raise EncodeError(f"{self.device.id}: field {field} is read-only")
        if (f.valid_min is not None and value < f.valid_min) or (f.valid_max is not None and value > f.valid_max):
            raise EncodeError(f"{self.device.id}: {field}={value} outside {f.valid_min}..{f.valid_max}")
        self._check_quarantine(now)
        order = self.profile.word_order_of(f, self.device.word_order)
        words = encode_value(f, value, order)
        try:
            await self.bus.write(self.device.unit_id, f.kind, f.address, words,
                                 timeout_s=self._timeout_s, retries=self._retries)
            back_words = await self._read(f.kind, f.address, f.width)
        except DeviceError as exc:
            self._failed(now, exc)
            raise
        block = decode_block(self.profile, f.kind, f.address, back_words, self.device.word_order)
        got = block[field].value
        tolerance = abs(f.scale) / 2 if f.dtype.value != "f32" else max(abs(value) * 1e-6, 1e-6)
        if not abs(got - value) <= tolerance:
            raise WriteMismatch(field, value, got)
        self._succeeded(now)
        return got

    # ------------------------------------------------------------ health

    def _succeeded(self, now: float) -> None:
        h = self.health
        if h.consecutive_failures or h.quarantined_until is not None:
            log.info("%s: answering again after %d failed poll(s)", self.device.id, h.consecutive_failures)
        if h.consecutive_failures:
            self._forget_once()  # it may have been power-cycled while it was silent
        h.last_good_ts = now
        h.consecutive_failures = 0
        h.quarantined_until = None

    def _failed(self, now: float, exc: GatewayError) -> None:
        h = self.health
        h.failures += 1
        h.consecutive_failures += 1
        h.last_error = str(exc)
        dev = self.device
        if isinstance(exc, ConfigFault):
            backoff: float | None = dev.quarantine_max_s
        elif isinstance(exc, SlaveBusy):
            backoff = min(dev.quarantine_max_s, dev.poll_interval_s * 2 ** (h.consecutive_failures - 1))
        elif h.consecutive_failures >= dev.quarantine_after:
            k = h.consecutive_failures - dev.quarantine_after
            backoff = min(dev.quarantine_max_s, dev.poll_interval_s * 2 ** min(k, 30))
        else:
            backoff = None
        if h.consecutive_failures == 1:
            log.warning("%s: %s", dev.id, exc)
        if backoff is not None:
            if h.quarantined_until is None:
                log.warning("%s: quarantined for %.1f s after %d failure(s): %s", dev.id, backoff,
                            h.consecutive_failures, exc)
            h.quarantined_until = now + backoff


def build_pollers(cfg: FieldConfig) -> tuple[list[Bus], dict[str, DevicePoller]]:
    """One :class:`Bus` per configured bus and one :class:`DevicePoller` per device (buses not opened yet)."""
    buses = {b.id: Bus(b) for b in cfg.buses}
    pollers = {d.id: DevicePoller(d, buses[d.bus]) for d in cfg.devices}
    return list(buses.values()), pollers
