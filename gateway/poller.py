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

Events: a manhole's ``cover_open`` input going 0 → 1 between two polls emits
``Event(kind="cover_open")``. A WIM scale's record counter advancing emits one
``Event(kind="vehicle")`` per new record; after the gateway starts it re-reads the records
still in the ring (the cloud deduplicates by event id), and a counter that goes backwards
(the scale rebooted) restarts from record 1. Vehicle event ids are ``"<record no>-<time ms>"``:
record numbers restart at 1 after a scale reboot, so the number alone would collide.
"""

from __future__ import annotations

import logging
import math
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
from gateway.plan import plan_profile, record_blocks
from gateway.profiles.wim import WimRecord, decode_record
from gateway.registers import Decoded, Profile, RegisterKind, decode_block, encode_value, raw_int

log = logging.getLogger(__name__)


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


def readings_from(profile: Profile, device: str, now: float, decoded: dict[str, Decoded]) -> list[Reading]:
    """Pure: decoded fields → readings with quality (sentinel/range, status fault bits, derived)."""
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
    if profile.derive is not None:
        values = {k: d.value for k, d in decoded.items()}
        q_in = _worst([decoded[k].quality for k in profile.derive_inputs if k in decoded])
        for metric, value in profile.derive(values).items():
            if not math.isfinite(value):
                continue
            q = q_in
            if fault and metric in profile.fault_affects and q is Quality.GOOD:
                q = Quality.SENSOR_FAULT
            out.append(Reading(device, metric, now, value, METRIC_UNITS[metric], q))
    return out


class DevicePoller:
    """Reads one device, turns registers into readings and events, and keeps its health."""

    def __init__(self, device: DeviceConfig, bus: Bus) -> None:
        self.device = device
        self.bus = bus
        self.profile = profiles.get(device.profile)
        self.blocks = plan_profile(self.profile, device.max_block_registers, device.max_gap_registers)
        self.health = DeviceHealth()
        self.info: DeviceInfo = device.to_device_info()
        self._timeout_s = (device.timeout_ms or bus.cfg.timeout_ms) / 1000.0
        self._retries = bus.cfg.retries if device.retries is None else device.retries
        self._cover_open: float | None = None
        self._wim_count: int | None = None

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

    async def poll(self, now: float) -> PollResult:
        self._check_quarantine(now)
        self.health.polls += 1
        try:
            decoded: dict[str, Decoded] = {}
            for block in self.blocks:
                words = await self._read(block.kind, block.start, block.count)
                decoded.update(decode_block(self.profile, block.kind, block.start, words, self.device.word_order))
            readings = readings_from(self.profile, self.device.id, now, decoded)
            events = self._cover_events(decoded, now)
            if self.profile.records is not None:
                events += await self._wim_events(decoded)
        except DeviceError as exc:
            self._failed(now, exc)
            raise
        except BusError as exc:
            self.health.last_error = str(exc)
            raise
        self._succeeded(now)
        return PollResult(readings, events)

    # ------------------------------------------------------------ events

    def _cover_events(self, decoded: dict[str, Decoded], now: float) -> list[Event]:
        d = decoded.get("cover_open")
        if d is None or self.profile.kind != "manhole":
            return []
        prev, self._cover_open = self._cover_open, d.value
        if prev == 0.0 and d.value == 1.0:
            body: dict[str, object] = {}
            for name in ("tilt_x", "tilt_y", "angle", "background_angle"):
                x = decoded.get(name)
                if x is not None and x.quality is Quality.GOOD:
                    body[name] = x.value
            return [Event(self.device.id, "cover_open", f"{round(now * 1000)}", now, body)]
        return []

    async def _wim_events(self, decoded: dict[str, Decoded]) -> list[Event]:
        layout = self.profile.records
        assert layout is not None
        d = decoded.get(layout.counter_field)
        if d is None or d.quality is not Quality.GOOD:
            return []
        count = int(d.value)
        last = self._wim_count
        if last is None:  # first poll since start: re-read what is still in the ring
            first, n = max(1, count - layout.slots + 1), min(count, layout.slots)
        elif count < last:
            log.warning("%s: record counter went back from %d to %d (scale rebooted)", self.device.id, last, count)
            first, n = 1, min(count, layout.slots)
            if count > layout.slots:
                first = count - layout.slots + 1
                self.health.records_lost += count - layout.slots
        elif count > last:
            new = count - last
            if new > layout.slots:
                lost = new - layout.slots
                self.health.records_lost += lost
                log.warning("%s: %d vehicle records overwritten before they could be read", self.device.id, lost)
            first, n = max(last + 1, count - layout.slots + 1), min(new, layout.slots)
        else:
            return []
        records: list[WimRecord] = []
        if n > 0:
            limit = min(self.profile.max_block_registers, self.device.max_block_registers or 125)
            order = self.device.word_order or self.profile.default_word_order
            blocks = record_blocks(layout, first, n, limit)
            slot_words: dict[int, list[int]] = {}
            for b in blocks:
                words = await self._read(b.kind, b.start, b.count)
                for off in range(0, b.count, layout.stride):
                    slot = (b.start + off - layout.base) // layout.stride
                    slot_words[slot] = words[off : off + layout.record_words]
            for rec_no in range(first, first + n):
                rec_words = slot_words.get(layout.slot_of(rec_no))
                if rec_words is None or len(rec_words) < layout.record_words:
                    continue
                rec = decode_record(rec_words, order)
                if rec.record_no != rec_no:
                    # overwritten by a newer vehicle between counter and record read, or garbage
                    self.health.records_lost += 1
                    continue
                records.append(rec)
        self._wim_count = count
        return [Event(self.device.id, "vehicle", f"{r.record_no}-{round(r.ts * 1000)}", r.ts, r.body())
                for r in records]

    # ------------------------------------------------------------ writes

    async def write_field(self, field: str, value: float, now: float) -> float:
        """Write one writable field and return the value read back from the device."""
        f = self.profile.field(field)
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
