"""One simulated slave: its register bank at the current simulated time, writes, and faults.

The register bank is recomputed from the scenario on every request and encoded with the
device's gateway profile (``gateway.registers.encode_value``), so the simulator and the
gateway cannot drift apart. :meth:`SimDevice.handle` is pure given the clock reading and the
device's random stream: it turns a decoded request into a :class:`Reply` plan (a PDU, or
silence, plus how the transport should mangle it); the asyncio transports only carry it out.
"""

from __future__ import annotations

import bisect
import logging
import random
from dataclasses import dataclass
from typing import Any

from firmware_sim.clock import SimClock
from firmware_sim.config import DeviceSpec, FaultSpec, FaultWindow
from firmware_sim.frames import (
    ExceptionCode,
    Request,
    exception_response,
    read_bits_response,
    read_registers_response,
    write_response,
)
from firmware_sim.scenarios import History, Scenario, physics_name
from gateway import profiles
from gateway.errors import EncodeError
from gateway.events import body_to_values
from gateway.registers import (
    DataType,
    Field,
    Profile,
    RegisterKind,
    decode_value,
    encode_record_values,
    encode_text,
    encode_value,
    put_words,
    raw_to_words,
)

log = logging.getLogger(__name__)

_KIND_OF_FC = {
    1: RegisterKind.COIL,
    2: RegisterKind.DISCRETE_INPUT,
    3: RegisterKind.HOLDING_REGISTER,
    4: RegisterKind.INPUT_REGISTER,
    5: RegisterKind.COIL,
    15: RegisterKind.COIL,
    6: RegisterKind.HOLDING_REGISTER,
    16: RegisterKind.HOLDING_REGISTER,
}

#: The field a noise spike hits when the fault does not name one.
_MAIN_FIELD = {"water_gauge": "depth", "manhole": "angle", "lamp": "current", "wim": "record_count"}

_BOOL_FAULTS = ("absent", "no_answer", "crc_corrupt", "garbage_prefix", "stuck", "raw_garbage")


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: ``pdu`` None means stay silent; the rest tells the transport how to mangle it."""

    pdu: bytes | None
    crc_corrupt: bool = False
    split_gap_s: float | None = None
    split_pieces: int = 2
    garbage_prefix: bool = False
    delay_s: float = 0.0


def merge_faults(specs: list[FaultSpec]) -> FaultSpec:
    """Several active fault sets at once: flags OR together, the first given value of the rest wins."""
    if not specs:
        return FaultSpec()
    if len(specs) == 1:
        return specs[0]
    merged: dict[str, Any] = {}
    for name in FaultSpec.model_fields:
        values = [getattr(s, name) for s in specs]
        default = FaultSpec.model_fields[name].default
        if name in _BOOL_FAULTS:
            merged[name] = any(values)
        elif name == "rate":
            merged[name] = max(values)
        else:
            chosen = [v for v in values if v != default]
            merged[name] = chosen[0] if chosen else default
    return FaultSpec(**merged)


class Faults:
    """The run-time fault switches of one device (``sim.device(id).faults.set(no_answer=True)``)."""

    def __init__(self, spec: FaultSpec, windows: list[FaultWindow]) -> None:
        self._manual = spec
        self.windows: list[FaultWindow] = list(windows)  # from the config
        self.runtime_windows: list[FaultWindow] = []  # added while running (disappear, reboot)

    @property
    def manual(self) -> FaultSpec:
        return self._manual

    def set(self, **changes: Any) -> FaultSpec:
        """Change some fault switches; validated like the config (unknown names are errors)."""
        data = self._manual.model_dump()
        unknown = set(changes) - set(data)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(data)}")
        data.update(changes)
        self._manual = FaultSpec.model_validate(data)
        return self._manual

    def clear(self) -> None:
        """Remove every manual fault and every run-time window (config windows stay)."""
        self._manual = FaultSpec()
        self.runtime_windows = []

    def add_window(self, window: FaultWindow) -> None:
        self.runtime_windows.append(window)

    def active(self, t: float) -> FaultSpec:
        specs = [self._manual]
        for w in (*self.windows, *self.runtime_windows):
            if w.start_s <= t and (w.end_s is None or t < w.end_s):
                specs.append(w)
        return merge_faults(specs)


class SimDevice:
    """A simulated slave bound to a scenario and a clock."""

    def __init__(self, spec: DeviceSpec, scenario: Scenario, clock: SimClock) -> None:
        self.spec = spec
        self.id = spec.id
        self.unit = spec.unit
        self.profile: Profile = profiles.get(spec.profile)
        self.scenario = scenario
        self.clock = clock
        self.history = History()
        for w in spec.fault_windows:
            if w.reboot_at_end and w.end_s is not None:
                bisect.insort(self.history.boots, w.end_s)
        self.faults = Faults(spec.faults, spec.fault_windows)
        seed = spec.seed if spec.seed is not None else scenario.config.seed
        self._rng = random.Random(f"{seed}|{spec.id}|faults")
        self._stuck_image: dict[RegisterKind, dict[int, int]] | None = None
        self.requests = 0
        self.answered = 0
        self._silent_logged = False

    # ------------------------------------------------------------ state and control

    def now(self) -> float:
        return self.clock.now()

    def values(self, t: float | None = None) -> dict[str, float]:
        """Engineering values of every profile field now (before faults)."""
        return self.scenario.values(self.id, self.now() if t is None else t, self.history)

    def metrics(self, t: float | None = None) -> dict[str, float]:
        return self.scenario.metrics(self.id, self.now() if t is None else t, self.history)

    def reboot(self, down_s: float = 0.0) -> None:
        """Restart the device: counters since boot (WIM records, run hours) start again, commands are lost.

        With ``down_s`` > 0 the slave is silent that long first (simulated seconds).
        """
        now = self.now()
        if down_s > 0:
            self._runtime_window(now, now + down_s)
        bisect.insort(self.history.boots, now + down_s)

    def disappear(self, for_s: float | None = None, reboot: bool = True) -> None:
        """The slave drops off the bus (no answer) for ``for_s`` simulated seconds (None: until
        :meth:`reappear`); it comes back rebooted unless ``reboot`` is False."""
        now = self.now()
        end = None if for_s is None else now + for_s
        self._runtime_window(now, end, reboot_at_end=reboot)
        if reboot and end is not None:
            bisect.insort(self.history.boots, end)

    def reappear(self, reboot: bool = True) -> None:
        """End a :meth:`disappear` early (its scheduled comeback reboot is cancelled)."""
        now = self.now()
        ending = [w for w in self.faults.runtime_windows if w.absent and (w.end_s is None or w.end_s > now)]
        for w in ending:
            if w.reboot_at_end and w.end_s is not None and w.end_s in self.history.boots:
                self.history.boots.remove(w.end_s)
        self.faults.runtime_windows = [w for w in self.faults.runtime_windows if w not in ending]
        if reboot:
            bisect.insort(self.history.boots, now)

    def _runtime_window(self, start: float, end: float | None, reboot_at_end: bool = False) -> None:
        self.faults.add_window(FaultWindow(start_s=start, end_s=end, absent=True, reboot_at_end=reboot_at_end))

    def write(self, name: str, value: float) -> None:
        """Set a writable field as if a master wrote it (the in-process API)."""
        f = self.profile.field(name)
        if not f.writable:
            raise ValueError(f"{self.id}: field {name} is read-only")
        self._record_write(self.now(), f, float(value))

    def _record_write(self, t: float, f: Field, value: float) -> None:
        """Remember a write under the field's name and, for a site profile, the physics model's name."""
        self.history.writes.append((t, f.name, value))
        alias = physics_name(self.profile, f)
        if alias != f.name:
            self.history.writes.append((t, alias, value))

    # ------------------------------------------------------------ register bank

    def image(self, t: float, spikes: FaultSpec | None = None) -> dict[RegisterKind, dict[int, int]]:
        """The whole register bank at t: {kind: {address: word or bit}}."""
        values = self.scenario.values(self.id, t, self.history)
        for f in self.profile.fields:  # a field the scenario does not know yet still answers
            if f.name not in values:
                fill = 0.0 if f.valid_min is None else max(0.0, f.valid_min)
                values[f.name] = fill if f.valid_max is None else min(fill, f.valid_max)
        if spikes is not None and spikes.spike_rate > 0 and self._rng.random() < spikes.spike_rate:
            name = spikes.spike_field or self._main_field()
            if name in values:
                is_bit = self.profile.field(name).dtype is DataType.BIT
                values[name] = (1.0 - values[name]) if is_bit else values[name] + spikes.spike_magnitude
        image: dict[RegisterKind, dict[int, int]] = {k: {} for k in RegisterKind}
        layout = self.profile.records
        for f in sorted((self.profile.field(n) for n in values), key=lambda x: x.bit is not None):
            value = values[f.name]
            if layout is not None and f.name in (layout.counter_field, layout.number_field):
                value %= 1 << (16 * f.width)  # a 16/32-bit counter wraps around
            put_words(image[f.kind], f, self._encode(f, value))
        if layout is not None:
            bank = image[layout.kind]
            if layout.style == "ring":
                for slot in range(layout.slots):
                    for i in range(layout.stride):
                        bank[layout.base + slot * layout.stride + i] = 0
            override = self.spec.word_order
            for rec in self.scenario.wim_records(self.id, t, self.history):
                # the k-th record since boot is numbered k - 1 + start_at, modulo the counter's range
                modulus = 1 << (16 * self.profile.field(layout.counter_field).width)
                number = (rec.record_no - 1 + layout.start_at) % modulus
                rec_values = body_to_values(layout, number, rec.ts, rec.body())
                if "vehicle_class" in {f.name for f in layout.fields}:
                    rec_values.setdefault("vehicle_class", float(rec.vehicle_class))
                words = encode_record_values(layout, rec_values, lambda f: self.profile.word_order_of(f, override))
                start = layout.address_of(number)
                for i, w in enumerate(words):
                    bank[start + i] = w
        return image

    def _main_field(self) -> str:
        """The field a noise spike hits when the fault does not name one."""
        main = _MAIN_FIELD.get(self.spec.kind)
        if main is not None and main in {f.name for f in self.profile.fields}:
            return main
        return next((f.name for f in self.profile.fields if f.metric is not None), "")

    def _encode(self, f: Field, value: float) -> list[int]:
        if f.dtype is DataType.STRING:
            return encode_text(f, self.spec.texts.get(f.name, self.id)[: 2 * f.length])
        order = self.profile.word_order_of(f, self.spec.word_order)
        try:
            return encode_value(f, value, order)
        except EncodeError:
            # a firmware saturates an out-of-range number rather than wrapping it
            if f.dtype in (DataType.BIT, DataType.F32):
                raise
            lo, hi = f.dtype.raw_range
            raw = min(hi, max(lo, round((value - f.offset) / f.scale)))
            return raw_to_words(f.dtype, raw, order)

    # ------------------------------------------------------------ requests

    def handle(self, request: Request) -> Reply:
        """Answer one request addressed to this unit (faults applied)."""
        self.requests += 1
        t = self.now()
        faults = self.faults.active(t)
        if faults.absent:
            self._note_silent(True)
            return Reply(None)
        hit = faults.rate >= 1.0 or self._rng.random() < faults.rate
        if hit and faults.no_answer:
            self._note_silent(True)
            return Reply(None)
        self._note_silent(False)
        if hit and faults.exception is not None:
            pdu = exception_response(request.function, faults.exception)
        else:
            pdu = self._execute(request, t, faults)
        self.answered += 1
        if not hit:
            return Reply(pdu)
        return Reply(
            pdu,
            crc_corrupt=faults.crc_corrupt,
            split_gap_s=None if faults.split_gap_ms is None else faults.split_gap_ms / 1000.0,
            split_pieces=faults.split_pieces,
            garbage_prefix=faults.garbage_prefix,
            delay_s=faults.delay_ms / 1000.0,
        )

    def _note_silent(self, silent: bool) -> None:
        if silent != self._silent_logged:
            log.info("%s: %s", self.id, "silent (fault)" if silent else "answering again")
            self._silent_logged = silent

    def _current_image(self, t: float, faults: FaultSpec) -> dict[RegisterKind, dict[int, int]]:
        if faults.stuck:
            if self._stuck_image is None:
                self._stuck_image = self.image(t)
            return self._stuck_image
        self._stuck_image = None
        return self.image(t, faults)

    def _execute(self, request: Request, t: float, faults: FaultSpec) -> bytes:
        kind = _KIND_OF_FC[request.function]
        if request.is_write:
            return self._write(request, kind, t)
        bank = self._current_image(t, faults)[kind]
        addresses = range(request.address, request.address + request.count)
        if not kind.is_bit and request.count > self.profile.max_block_registers:
            return exception_response(request.function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        mapped = [a in bank for a in addresses]
        if not any(mapped) or (self.profile.max_gap_registers == 0 and not all(mapped)):
            return exception_response(request.function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        if faults.raw_garbage and not kind.is_bit:
            return read_registers_response(request.function, [0xFFFF] * request.count)
        words = [bank.get(a, 0) for a in addresses]
        if kind.is_bit:
            return read_bits_response(request.function, words)
        return read_registers_response(request.function, words)

    def _write(self, request: Request, kind: RegisterKind, t: float) -> bytes:
        fields = {f.address: f for f in self.profile.fields_of(kind) if f.bit is None}
        pos = 0
        staged: list[tuple[str, float]] = []
        values = request.values
        while pos < len(values):
            f = fields.get(request.address + pos)
            if f is None or not f.writable or pos + f.width > len(values):
                return exception_response(request.function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
            chunk = values[pos : pos + f.width]
            value = decode_value(f, chunk, self.profile.word_order_of(f, self.spec.word_order))
            if (f.valid_min is not None and value < f.valid_min) or (f.valid_max is not None and value > f.valid_max):
                return exception_response(request.function, ExceptionCode.ILLEGAL_DATA_VALUE)
            staged.append((f.name, value))
            pos += f.width
        for name, value in staged:
            self._record_write(t, self.profile.field(name), value)
        return write_response(request)
