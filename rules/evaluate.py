"""Pure rule evaluation: ``evaluate(ruleset, state, inputs, now) -> (state, transitions)``.

No clock and no I/O: sample times come with the readings and ``now`` is a parameter (used
only for staleness and for event alarms that clear themselves). The state is plain data
(:meth:`EngineState.to_json` / :meth:`EngineState.from_json`) so the runner can persist it
and a restart continues exactly where it stopped. ``evaluate`` updates the state it is given
in place and returns it (copying 10 000 devices' state per message would cost more than the
evaluation); callers that need the old state keep a JSON snapshot.

Inputs are processed in the order given. A reading whose sample time is not after the last
one processed for its (device, metric) is a duplicate or late and is ignored, so replaying a
batch after a crash, or splitting a stream into different batches, gives the same result.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.payloads import AlarmAck, OpenCases
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules import wim
from rules.lifecycle import (
    Alarm,
    FlapPolicy,
    LatchState,
    acknowledge,
    alarm_id_for,
    latched_severity,
    step_alarm,
)
from rules.robust import theil_sen_slope
from rules.specs import (
    BatteryLowRule,
    CoverOpenRule,
    LampDarkRule,
    LampDayBurningRule,
    LampFailureRule,
    RateRule,
    Rule,
    SensorFaultRule,
    StalenessRule,
    SupplyVoltageRule,
    ThresholdRule,
    TiltRule,
    WimOverloadRule,
)
from rules.sun import sun_is_up

TICK_S = 1.0  # staleness and self-clearing alarms are checked at most once per second of `now`
#: the state log is compacted once it holds this many entries per known device: a restart reads at most
#: that much log, and a compaction (one row per device logged since the last) is amortised over as many
#: readings
LOG_ENTRIES_PER_DEVICE = 8
#: whole parts a sliced compaction logs per step (take_checkpoint_sliced): ~60 ms of device_json, not a stall
COMPACT_SLICE_DEVICES = 2000


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """A gateway's retained birth (``online`` with its devices) or last will (``offline``), received at ``t``."""

    gw: str
    state: str
    t: float
    devices: tuple[DeviceInfo, ...] = ()


Input = Reading | Event | GatewayStatus | AlarmAck | OpenCases


@dataclass(frozen=True, slots=True)
class LevelSpec:
    severity: Severity
    raise_at: float
    clear_at: float
    raise_after_s: float
    clear_after_s: float


@dataclass(frozen=True, slots=True)
class Compiled:
    """One rule bound to one device, overrides applied."""

    rule: Rule
    name: str
    key: str  # "rule|device"
    kind: str
    levels: tuple[LevelSpec, ...] = ()
    severities: tuple[Severity, ...] = ()
    above: bool = True
    offset: float = 0.0
    flap: FlapPolicy | None = None


def _flap(rule: Rule) -> FlapPolicy | None:
    f = rule.flapping
    return None if f is None else FlapPolicy(f.max_raises, f.window_s, f.hold_s)


def _levels(levels: Sequence[Any], above: bool) -> tuple[LevelSpec, ...]:
    out = []
    for lv in levels:
        clear = lv.raise_at - lv.hysteresis if above else lv.raise_at + lv.hysteresis
        out.append(LevelSpec(lv.severity, lv.raise_at, clear, lv.raise_after_s, lv.clear_after_s))
    return tuple(out)


def compile_rule(rule: Rule, info: DeviceInfo) -> Compiled | None:
    """Bind ``rule`` to a device (None if its per-device override disables it)."""
    key = f"{rule.name}|{info.id}"
    flap = _flap(rule)
    if isinstance(rule, ThresholdRule):  # includes BatteryLowRule
        ov = rule.overrides.get(info.id)
        if ov is not None and not ov.enabled:
            return None
        levels = ov.levels if ov is not None and ov.levels is not None else rule.levels
        offset = ov.offset if ov is not None and ov.offset is not None else rule.offset
        above = rule.direction == "above"
        lv = _levels(levels, above)
        return Compiled(rule, rule.name, key, "threshold", lv, tuple(x.severity for x in lv), above, offset, flap)
    if isinstance(rule, TiltRule):
        tov = rule.overrides.get(info.id)
        if tov is not None and not tov.enabled:
            return None
        limit = tov.limit_deg if tov is not None and tov.limit_deg is not None else rule.limit_deg
        h = rule.hysteresis_deg
        specs = [LevelSpec(rule.severity, limit, limit - h, rule.raise_after_s, rule.clear_after_s)]
        if rule.severity != Severity.CRITICAL:
            specs.append(LevelSpec(Severity.CRITICAL, 90.0, 90.0 - h, 0.0, rule.clear_after_s))
        t = tuple(specs)
        return Compiled(rule, rule.name, key, "threshold", t, tuple(x.severity for x in t), True, 0.0, flap)
    if isinstance(rule, RateRule):
        rov = rule.overrides.get(info.id)
        if rov is not None and not rov.enabled:
            return None
        offset = rov.offset if rov is not None and rov.offset is not None else 0.0
        return Compiled(rule, rule.name, key, "rate", (), (rule.severity,), rule.direction == "rising", offset, flap)
    kind = rule.kind
    sev = getattr(rule, "severity", Severity.MAJOR)
    return Compiled(rule, rule.name, key, kind, (), (sev,), True, 0.0, flap)


def rule_metrics(rule: Rule) -> tuple[str, ...]:
    """Metrics whose readings drive a rule (empty for event/tick-driven rules)."""
    if isinstance(rule, ThresholdRule | TiltRule | RateRule | SensorFaultRule | SupplyVoltageRule | CoverOpenRule):
        return (rule.metric,)
    if isinstance(rule, LampFailureRule | LampDayBurningRule | LampDarkRule):
        return ("relay", "current")
    return ()


@dataclass(slots=True)
class DevicePlan:
    """Compiled rules of one device, by triggering metric; sensor-fault ranges per metric."""

    by_metric: dict[str, list[Compiled]]
    ranges: dict[str, list[tuple[float | None, float | None]]]
    staleness: list[Compiled]
    wim: list[Compiled]
    cover_events: dict[str, list[Compiled]]


class RuleSet:
    """Loaded rules plus a memo of device plans (a pure function of rules and device info)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(r for r in rules if r.enabled)
        self.by_name = {r.name: r for r in self.rules}
        names: list[str] = []
        for r in self.rules:
            names.append(r.name)
            if isinstance(r, StalenessRule) and r.gateway_rule:
                names.append(r.gateway_rule)
            if isinstance(r, WimOverloadRule):
                names.append(r.axle_rule)
        #: every condition name an alarm can carry (the per-device state is keyed by these)
        self.condition_names: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._stale_rules = [r for r in self.rules if isinstance(r, StalenessRule)]
        #: whether any staleness rule is loaded (no silence schedule without one)
        self.has_staleness = bool(self._stale_rules)
        # devices a rule names (selector, exclusion, override) are compiled one by one; every other device's
        # plan depends on its kind and tags alone: compiled once per (kind, tags), then copied with its own keys
        named: set[str] = set()
        for r in self.rules:
            named.update(r.applies_to.devices, r.applies_to.exclude, getattr(r, "overrides", None) or ())
        self._named = frozenset(named)
        self._templates: dict[tuple[str, tuple[str, ...]], DevicePlan] = {}

    def silence_floor(self, info: DeviceInfo | None) -> float:
        """A lower bound of the silence after which any staleness rule could call ``info``'s device silent.

        The least of every staleness rule's limit for this device, whether it applies or not: a silence check can
        be scheduled from the registry entry alone, without compiling the plan, and devices with different
        intervals are not all checked in the same tick after a mass birth.
        """
        interval = info.interval_s if info is not None else None
        out = math.inf
        for r in self._stale_rules:
            limit = max(r.factor * (interval or r.default_interval_s), r.min_silence_s)
            out = min(out, limit)
        return out if self._stale_rules else 0.0

    def plan(self, info: DeviceInfo) -> DevicePlan:
        """The device's compiled rules: what ``compile_plan`` gives, ~10x cheaper for a device no rule names."""
        if info.id in self._named:
            return self.compile_plan(info)
        shape = (info.kind, tuple(info.tags))
        tpl = self._templates.get(shape)
        if tpl is None:
            tpl = self._templates[shape] = self.compile_plan(info)
        return _rebind(tpl, info.id)

    def compile_plan(self, info: DeviceInfo) -> DevicePlan:
        """Compile every rule that applies to ``info`` (the reference :meth:`plan` agrees with)."""
        plan = DevicePlan({}, {}, [], [], {})
        for rule in self.rules:
            if not rule.applies_to.matches(info):
                continue
            comp = compile_rule(rule, info)
            if comp is None:
                continue
            if isinstance(rule, StalenessRule):
                plan.staleness.append(comp)
                continue
            if isinstance(rule, WimOverloadRule):
                plan.wim.append(comp)
                continue
            if isinstance(rule, CoverOpenRule):
                for ek in rule.event_kinds:
                    plan.cover_events.setdefault(ek, []).append(comp)
            if isinstance(rule, SensorFaultRule):
                plan.ranges.setdefault(rule.metric, []).append((rule.min, rule.max))
            for m in rule_metrics(rule):
                plan.by_metric.setdefault(m, []).append(comp)
        return plan


def _rebind(tpl: DevicePlan, device: str) -> DevicePlan:
    """A template plan bound to ``device`` (new keys; a rule on two metrics stays one object; ranges shared)."""
    memo: dict[int, Compiled] = {}

    def bind(cs: list[Compiled]) -> list[Compiled]:
        out = []
        for c in cs:
            n = memo.get(id(c))
            if n is None:
                n = memo[id(c)] = Compiled(c.rule, c.name, f"{c.name}|{device}", c.kind, c.levels, c.severities,
                                           c.above, c.offset, c.flap)
            out.append(n)
        return out

    return DevicePlan(
        {m: bind(cs) for m, cs in tpl.by_metric.items()}, tpl.ranges, bind(tpl.staleness), bind(tpl.wim),
        {k: bind(cs) for k, cs in tpl.cover_events.items()},
    )


@dataclass(slots=True)
class EngineState:
    """Everything the engine remembers; JSON-able so a restart resumes exactly."""

    last_ts: dict[str, float] = field(default_factory=dict)  # "device|metric" -> last sample time processed
    last_seen: dict[str, float] = field(default_factory=dict)  # device -> newest sample time (any quality)
    latest: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # device -> metric -> [t, value, good]
    latches: dict[str, LatchState] = field(default_factory=dict)  # "rule|device"
    scratch: dict[str, dict[str, Any]] = field(default_factory=dict)  # "rule|device" -> per-kind working data
    alarms: dict[str, Alarm] = field(default_factory=dict)  # alarm_id -> active alarm
    active: dict[str, str] = field(default_factory=dict)  # "rule|device" -> active alarm id
    raises: dict[str, list[float]] = field(default_factory=dict)  # "rule|device" -> recent raise times
    registry: dict[str, DeviceInfo] = field(default_factory=dict)
    gw_of: dict[str, str] = field(default_factory=dict)
    gw_state: dict[str, list[Any]] = field(default_factory=dict)  # gw -> [state, since]
    born: dict[str, float] = field(default_factory=dict)  # device -> when it was first announced
    open_cases: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> rule -> case id
    next_tick_t: float = 0.0
    next_stale_t: float = 0.0  # earliest scheduled silence check (informational: the schedule is rebuilt on load)
    plans: dict[str, DevicePlan] = field(default_factory=dict)  # not persisted: derived
    dirty: set[str] = field(default_factory=set)  # devices (and gateways) whose state changed: persist these
    # not persisted: checkpoint bookkeeping (see take_checkpoint)
    # "device|metric" changed by a reading alone -> its state-log entry (series_entry; [device] alone when
    # checkpoints is False)
    series_dirty: dict[str, list[Any]] = field(default_factory=dict)
    checkpoints: bool = True  # build state-log entries as readings are evaluated; False: never persisted
    uncompacted: set[str] = field(default_factory=set)  # devices with entries in the state log
    log_entries: int = 0  # entries in the state log since the last compaction
    # take_checkpoint_sliced: records appended to the log since it was last emptied (the store numbers them alike),
    # devices whose whole part the running compaction has still to log, and the record it began with
    log_records: int = 0
    slice_todo: list[str] = field(default_factory=list, compare=False, repr=False)
    slice_from: int = 0
    # not persisted: per-device memos that keep device_json cheap (it runs for every dirty device per commit)
    part_keys: dict[str, tuple[DevicePlan | None, Sequence[str], tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    registry_json: dict[str, tuple[DeviceInfo, dict[str, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # not persisted: the silence schedule (see tick), rebuilt from the registry at the first tick after a load.
    # stale_heap holds (lower bound of the device's silence deadline, device), possibly with superseded entries;
    # stale_due is each device's live entry; gw_members is gw_of inverted
    stale_ready: bool = field(default=False, compare=False, repr=False)
    stale_heap: list[tuple[float, str]] = field(default_factory=list, compare=False, repr=False)
    stale_due: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    gw_members: dict[str, set[str]] = field(default_factory=dict, compare=False, repr=False)
    registry_pos: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def device_json(
        self, device: str, condition_names: Sequence[str], alarms: dict[str, list[Alarm]] | None = None
    ) -> dict[str, Any]:
        """The part of the state that belongs to one device (or gateway): what a step persists for it.

        ``from_parts(global_json(), [device_json(d) for every d])`` rebuilds the whole state.
        """
        latest = self.latest.get(device)
        last_ts: dict[str, float] = {}
        if latest:
            for m in latest:
                k = f"{device}|{m}"
                if k in self.last_ts:
                    last_ts[k] = self.last_ts[k]
        latches: dict[str, Any] = {}
        scratch: dict[str, Any] = {}
        active: dict[str, str] = {}
        raises: dict[str, list[float]] = {}
        lt, sc, ac, ra = self.latches, self.scratch, self.active, self.raises
        for k in self._part_keys(device, condition_names):
            latch = lt.get(k)
            if latch is not None:
                latches[k] = [latch.on, latch.since]
            v = sc.get(k)
            if v is not None:
                scratch[k] = v
            a = ac.get(k)
            if a is not None:
                active[k] = a
            r = ra.get(k)
            if r is not None:
                raises[k] = r
        if alarms is not None:
            own = {al.alarm_id: al.to_json() for al in alarms.get(device, ())}
        else:
            own = {a: al.to_json() for a, al in self.alarms.items() if al.device == device}
        out: dict[str, Any] = {
            "last_ts": last_ts,
            "latest": {device: latest} if latest else {},
            "latches": latches,
            "scratch": scratch,
            "active": active,
            "raises": raises,
            "alarms": own,
        }
        if device in self.last_seen:
            out["last_seen"] = {device: self.last_seen[device]}
        if device in self.gw_of:
            out["gw_of"] = {device: self.gw_of[device]}
        if device in self.born:
            out["born"] = {device: self.born[device]}
        if device in self.open_cases:
            out["open_cases"] = {device: self.open_cases[device]}
        info = self.registry.get(device)
        if info is not None:
            cached = self.registry_json.get(device)
            if cached is None or cached[0] is not info:
                cached = self.registry_json[device] = (info, info.to_json())
            out["registry"] = {device: cached[1]}
        return out

    def _part_keys(self, device: str, condition_names: Sequence[str]) -> tuple[str, ...]:
        """The "rule|device" keys ``device_json`` looks up, memoised per (device plan, condition names).

        Only the device's current plan creates condition state, so with a plan the keys are its rules'
        plus any left from an earlier plan; a gateway gets every name; a device without a plan only the keys
        it has state under (not memoised).
        """
        plan = self.plans.get(device)
        memo = self.part_keys.get(device)
        if memo is not None and memo[0] is plan and memo[1] is condition_names:
            return memo[2]
        keys = [f"{n}|{device}" for n in condition_names]
        lt, sc, ac, ra = self.latches, self.scratch, self.active, self.raises
        if plan is None and device not in self.gw_state:
            # a device without a plan yet (announced, never read) has no condition state: nothing to memoise
            # (a memo of every name would hold ~1 KB per device of a million announced at once)
            return tuple(k for k in keys if k in lt or k in sc or k in ac or k in ra)
        if plan is not None and device not in self.gw_state:
            comps = [*plan.staleness, *plan.wim]
            for group in (*plan.by_metric.values(), *plan.cover_events.values()):
                comps += group
            own = {c.key: c.key for c in comps}  # the plan's own key strings: the memo shares them
            keys = [own.get(k, k) for k in keys if k in own or k in lt or k in sc or k in ac or k in ra]
        out = tuple(keys)
        self.part_keys[device] = (plan, condition_names, out)
        return out

    def global_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "gw_state": self.gw_state,
            "next_tick_t": None if math.isinf(self.next_tick_t) else self.next_tick_t,
            "next_stale_t": None if math.isinf(self.next_stale_t) else self.next_stale_t,
        }

    def devices_known(self) -> set[str]:
        """Every device or gateway id that has a state part."""
        out = set(self.latest) | set(self.registry) | set(self.last_seen) | set(self.open_cases)
        out.update(al.device for al in self.alarms.values())
        out.update(k.split("|", 1)[1] for k in (*self.latches, *self.active, *self.scratch, *self.raises))
        return out

    @classmethod
    def from_parts(cls, global_obj: dict[str, Any], parts: Iterable[dict[str, Any]]) -> EngineState:
        merged: dict[str, Any] = dict(global_obj)
        for part in parts:
            for name, table in part.items():
                merged.setdefault(name, {}).update(table)
        return cls.from_json(merged)

    def take_dirty(self) -> set[str]:
        """Every device changed since the last call (a reading's series counts as its device)."""
        dirty, self.dirty = self.dirty, set()
        dirty.update(e[0] for e in self.series_dirty.values())
        self.series_dirty = {}
        return dirty

    def series_entry(self, device: str, metric: str, comps: Sequence[Compiled]) -> list[Any]:
        """What a reading changed in one (device, metric) series, as one flat list (see :func:`fold_state_log`).

        A reading alone only overwrites the series' latest value and watermark (its sample time), raises the
        device's last-seen time to at most that, and steps the latches and scratch of the rules on that
        metric; anything that can delete state (an alarm raised or cleared, a birth, an acknowledgement, an
        event) marks the whole device ``dirty`` instead. ``[device, metric, latest, n, (key, on, since) * n,
        (key, scratch) * m]``: one new container per entry (allocation is what a checkpoint costs), latches and
        scratch by reference, so the entry serialises their values at commit time.
        """
        out = [device, metric, self.latest[device][metric], 0]
        lt, sc = self.latches, self.scratch
        n = 0
        tail: list[Any] | None = None  # scratch pairs, after the latches (one pass over the rules)
        for c in comps:
            k = c.key
            latch = lt.get(k)
            if latch is not None:
                out += (k, latch.on, latch.since)
                n += 1
            v = sc.get(k)
            if v is not None:
                if tail is None:
                    tail = [k, v]
                else:
                    tail += (k, v)
        out[3] = n
        if tail is not None:
            out += tail
        return out

    def take_checkpoint(
        self, condition_names: Sequence[str], max_log_entries: int
    ) -> tuple[dict[str, dict[str, Any]], list[list[Any]], bool]:
        """What the next commit persists: ``(device parts, series entries, compact)``.

        Normally a delta for the state log: whole parts of the devices marked ``dirty`` plus one small
        entry per series a reading changed, so the write follows what changed, not the device count or
        the size of a device's state. Once ``max_log_entries`` have been logged since the last
        compaction, it is a compaction instead: the whole part of every device logged since, which
        replaces those devices' rows and empties the log (0 compacts every time: one row per device).
        """
        if not self.checkpoints:
            raise ValueError("take_checkpoint on an EngineState built with checkpoints=False")
        full, self.dirty = self.dirty, set()
        series_dirty, self.series_dirty = self.series_dirty, {}
        by_device: dict[str, list[Alarm]] = {}
        for al in self.alarms.values():
            by_device.setdefault(al.device, []).append(al)
        if self.log_entries + len(full) + len(series_dirty) >= max_log_entries:
            devices = self.uncompacted | full
            devices.update(e[0] for e in series_dirty.values())
            self.uncompacted = set()
            self.log_entries = 0
            self.log_records = 0
            return {d: self.device_json(d, condition_names, by_device) for d in devices}, [], True
        parts = {d: self.device_json(d, condition_names, by_device) for d in full}
        series = [e for e in series_dirty.values() if e[0] not in full]
        self.uncompacted |= full
        self.uncompacted.update(e[0] for e in series)
        self.log_entries += len(parts) + len(series)
        return parts, series, False

    def take_checkpoint_sliced(
        self, condition_names: Sequence[str], max_log_entries: int, slice_devices: int = COMPACT_SLICE_DEVICES
    ) -> tuple[dict[str, dict[str, Any]], list[list[Any]], int]:
        """Like :meth:`take_checkpoint`, but a compaction is spread over steps: ``(parts, series, drop_through)``.

        Why: a compaction writes the whole part of every device logged since the last one, and at a million
        devices that is ~1 M parts in one step (a stall of tens of seconds). Here, once ``max_log_entries``
        are logged, the devices logged so far are logged again as whole parts, ``slice_devices`` per call,
        in the normal log records; a whole part replaces everything logged before it for its device, so once
        the last slice is logged every record before the compaction began is superseded: ``drop_through`` is
        then that record's number (the store deletes log records 1..n, numbered from the last time the log
        was emptied), else 0. Nothing is written to the device rows until a load folds the log.
        """
        if not self.checkpoints:
            raise ValueError("take_checkpoint_sliced on an EngineState built with checkpoints=False")
        full, self.dirty = self.dirty, set()
        series_dirty, self.series_dirty = self.series_dirty, {}
        if not self.slice_todo and self.log_entries + len(full) + len(series_dirty) >= max_log_entries:
            todo = self.uncompacted | full
            todo.update(e[0] for e in series_dirty.values())
            self.slice_todo = sorted(todo)
            self.slice_from = self.log_records + 1  # this call's record: it logs the first slice
            self.uncompacted = set()
            self.log_entries = 0
        drop = 0
        if self.slice_todo:
            full.update(self.slice_todo[-slice_devices:])
            del self.slice_todo[-slice_devices:]
            if not self.slice_todo:
                drop = self.slice_from - 1
        by_device: dict[str, list[Alarm]] = {}
        if full:
            for al in self.alarms.values():
                by_device.setdefault(al.device, []).append(al)
        parts = {d: self.device_json(d, condition_names, by_device) for d in full}
        series = [e for e in series_dirty.values() if e[0] not in full]
        self.uncompacted |= full
        self.uncompacted.update(e[0] for e in series)
        self.log_entries += len(parts) + len(series)
        if parts or series:
            self.log_records += 1
        return parts, series, drop

    def take_dirty_parts(self, condition_names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The state parts of every device changed since the last call (what a step persists)."""
        by_device: dict[str, list[Alarm]] = {}
        for al in self.alarms.values():
            by_device.setdefault(al.device, []).append(al)
        return {d: self.device_json(d, condition_names, by_device) for d in self.take_dirty()}

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "last_ts": self.last_ts,
            "last_seen": self.last_seen,
            "latest": self.latest,
            "latches": {k: v.to_json() for k, v in self.latches.items()},
            "scratch": self.scratch,
            "alarms": {k: v.to_json() for k, v in self.alarms.items()},
            "active": self.active,
            "raises": self.raises,
            "registry": {k: v.to_json() for k, v in self.registry.items()},
            "gw_of": self.gw_of,
            "gw_state": self.gw_state,
            "born": self.born,
            "open_cases": self.open_cases,
            # JSON has no infinity: None stands for "never"
            "next_tick_t": None if math.isinf(self.next_tick_t) else self.next_tick_t,
            "next_stale_t": None if math.isinf(self.next_stale_t) else self.next_stale_t,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EngineState:
        reg = {}
        for k, d in obj.get("registry", {}).items():
            reg[k] = DeviceInfo(**{**d, "tags": tuple(d.get("tags", ()))})
        return cls(
            last_ts=dict(obj.get("last_ts", {})),
            last_seen=dict(obj.get("last_seen", {})),
            latest={k: dict(v) for k, v in obj.get("latest", {}).items()},
            latches={k: LatchState.from_json(v) for k, v in obj.get("latches", {}).items()},
            scratch=dict(obj.get("scratch", {})),
            alarms={k: Alarm.from_json(v) for k, v in obj.get("alarms", {}).items()},
            active=dict(obj.get("active", {})),
            raises={k: list(v) for k, v in obj.get("raises", {}).items()},
            registry=reg,
            gw_of=dict(obj.get("gw_of", {})),
            gw_state=dict(obj.get("gw_state", {})),
            born=dict(obj.get("born", {})),
            open_cases=dict(obj.get("open_cases", {})),
            next_tick_t=_time_or_never(obj.get("next_tick_t", 0.0)),
            next_stale_t=_time_or_never(obj.get("next_stale_t", 0.0)),
        )


def fold_state_log(parts: dict[str, dict[str, Any]], records: Iterable[dict[str, Any]]) -> set[str]:
    """Apply state-log records (oldest first) to device parts in place; return the devices they touched.

    A record is ``{"p": {device: whole part}, "s": [series entry, ...]}`` (:meth:`EngineState.take_checkpoint`):
    a whole part replaces the device's, a series entry overwrites the few values a reading changed.
    """
    touched: set[str] = set()
    for rec in records:
        for device, part in rec.get("p", {}).items():
            parts[device] = part
            touched.add(device)
        for entry in rec.get("s", ()):
            device, metric, latest, n = entry[:4]
            part = parts.get(device)
            if part is None:
                part = parts[device] = {}
            touched.add(device)
            t = latest[0]  # a reading's sample time is its series' watermark
            part.setdefault("last_ts", {})[f"{device}|{metric}"] = t
            part.setdefault("latest", {}).setdefault(device, {})[metric] = latest
            seen = part.get("last_seen", {}).get(device)
            if seen is None or t > seen:  # last seen is the newest sample time of any series
                part["last_seen"] = {device: t}
            end = 4 + 3 * n
            latches = part.setdefault("latches", {})
            for i in range(4, end, 3):
                latches[entry[i]] = [entry[i + 1], entry[i + 2]]
            scratch = part.setdefault("scratch", {})
            for i in range(end, len(entry), 2):
                scratch[entry[i]] = entry[i + 1]
    return touched


def _time_or_never(value: Any) -> float:
    return float("inf") if value is None else float(value)


# ---------------------------------------------------------------- helpers


def _plan(rs: RuleSet, st: EngineState, device: str) -> DevicePlan:
    plan = st.plans.get(device)
    if plan is None:
        info = st.registry.get(device) or DeviceInfo(id=device, profile="", kind="")
        plan = st.plans[device] = rs.plan(info)
    return plan


class Change(NamedTuple):
    target: Severity | None
    t: float
    value: float | None
    evidence: dict[str, Any]


def _set_condition(st: EngineState, c: Compiled, device: str, ch: Change, out: list[AlarmTransition]) -> None:
    st.dirty.add(device)
    target, t, value, evidence = ch
    aid = st.active.get(c.key)
    alarm = st.alarms.get(aid) if aid is not None else None
    if alarm is None and target is None:
        return
    case_id = st.open_cases.get(device, {}).get(c.name) if alarm is None else None
    raises = st.raises.setdefault(c.key, []) if c.flap is not None else []
    new = step_alarm(
        alarm,
        target,
        device=device,
        rule=c.name,
        t=t,
        value=value,
        evidence=evidence,
        raises=raises,
        flap=c.flap,
        case_id=case_id,
        out=out,
    )
    if new is None:
        if aid is not None:
            st.alarms.pop(aid, None)
            st.active.pop(c.key, None)
    elif alarm is None:
        st.alarms[new.alarm_id] = new
        st.active[c.key] = new.alarm_id
    if not raises and c.key in st.raises:
        del st.raises[c.key]


def _levels_step(st: EngineState, c: Compiled, r: Reading, out: list[AlarmTransition]) -> None:
    device, metric, t, raw = r.device, r.metric, r.ts, r.value
    value = raw + c.offset
    latch = st.latches.get(c.key)
    if latch is None or len(latch.on) != len(c.severities):
        latch = st.latches[c.key] = LatchState.fresh(len(c.severities))
    on, since = latch.on, latch.since
    above = c.above
    for i, lv in enumerate(c.levels):  # step_latch inlined (the hot loop: one pass per level per reading)
        if above:
            raise_c, clear_c = value >= lv.raise_at, value < lv.clear_at
        else:
            raise_c, clear_c = value <= lv.raise_at, value > lv.clear_at
        if not on[i]:
            if raise_c:
                s = since[i]
                if s is None:
                    s = since[i] = t
                if t - s >= lv.raise_after_s:
                    on[i] = True
                    since[i] = None
            else:
                since[i] = None
        elif clear_c:
            s = since[i]
            if s is None:
                s = since[i] = t
            if t - s >= lv.clear_after_s:
                on[i] = False
                since[i] = None
        else:
            since[i] = None
    if True not in on and c.key not in st.active:
        return  # nothing latched, no alarm to clear: no evidence to build
    target = latched_severity(latch, c.severities)
    ev: dict[str, Any] = {"metric": metric, "value": value}
    if c.offset:
        ev["raw"] = raw
    if target is not None:
        lv = c.levels[c.severities.index(target)]
        ev["threshold"] = lv.raise_at
    # the condition that clears the alarm (every level released), for the case's verification evidence
    clears = [x.clear_at for x in c.levels]
    ev["clear_at"] = min(clears) if above else max(clears)
    ev["direction"] = "above" if above else "below"
    _set_condition(st, c, device, Change(target, t, value, ev), out)


def _step_one(
    st: EngineState, c: Compiled, t: float, raise_c: bool, clear_c: bool, *, raise_after_s: float, clear_after_s: float
) -> list[bool] | None:
    """Step a single-level latch (``step_latch`` inlined); its levels when the alarm must be set, else None.

    The alarm is set when the level is latched or an alarm is active (so it may clear): only then does the
    caller build the evidence, which most readings never need.
    """
    key = c.key
    latch = st.latches.get(key)
    if latch is None or len(latch.on) != len(c.severities):
        latch = st.latches[key] = LatchState.fresh(len(c.severities))
    on, since = latch.on, latch.since
    if not on[0]:
        if raise_c:
            s = since[0]
            if s is None:
                s = since[0] = t
            if t - s >= raise_after_s:
                on[0] = True
                since[0] = None
        else:
            since[0] = None
    elif clear_c:
        s = since[0]
        if s is None:
            s = since[0] = t
        if t - s >= clear_after_s:
            on[0] = False
            since[0] = None
    else:
        since[0] = None
    return on if on[0] or key in st.active else None


def _rate_step(st: EngineState, c: Compiled, r: Reading, out: list[AlarmTransition]) -> None:
    device, metric, t, raw = r.device, r.metric, r.ts, r.value
    rule = c.rule
    assert isinstance(rule, RateRule)
    sc = st.scratch.get(c.key)
    if sc is None:
        sc = st.scratch[c.key] = {"t": [], "v": [], "e": None}
    ts: list[float] = sc["t"]
    vs: list[float] = sc["v"]
    ts.append(t)
    vs.append(raw + c.offset)
    cutoff = t - rule.window_s
    if ts[0] < cutoff:
        drop = 1
        while drop < len(ts) and ts[drop] < cutoff:
            drop += 1
        del ts[:drop]
        del vs[:drop]
    last_eval = sc["e"]
    if last_eval is not None and t - last_eval < rule.eval_every_s:
        return
    if len(ts) < rule.min_points:
        return
    sc["e"] = t
    slope_h = theil_sen_slope(ts, vs, rule.max_points) * 3600.0
    if math.isnan(slope_h):
        return
    signed = slope_h if c.above else -slope_h
    raise_c = signed >= rule.rate_per_h
    clear_c = signed < rule.rate_per_h - rule.hysteresis_per_h
    on = _step_one(st, c, t, raise_c, clear_c, raise_after_s=rule.raise_after_s, clear_after_s=rule.clear_after_s)
    if on is not None:
        ev = {"metric": metric, "rate_per_h": round(slope_h, 6), "threshold_per_h": rule.rate_per_h, "points": len(ts)}
        _set_condition(st, c, device, Change(c.severities[0] if on[0] else None, t, slope_h, ev), out)


def _fault_scratch() -> dict[str, Any]:
    return {"bad": 0, "ok": 0, "fs": None, "fmin": 0.0, "fmax": 0.0, "fn": 0}


def _fault_step(st: EngineState, c: Compiled, r: Reading, good: bool, out: list[AlarmTransition]) -> None:
    t, raw = r.ts, r.value
    rule = c.rule
    assert isinstance(rule, SensorFaultRule)
    sc = st.scratch.get(c.key)
    if sc is None:
        sc = st.scratch[c.key] = _fault_scratch()
    window_s = rule.flatline_window_s
    if good:
        sc["ok"] += 1
        sc["bad"] = 0
        if window_s is not None:
            fmin, fmax = sc["fmin"], sc["fmax"]
            if sc["fs"] is not None and max(fmax, raw) - min(fmin, raw) <= rule.flatline_epsilon:
                sc["fmin"] = min(fmin, raw)
                sc["fmax"] = max(fmax, raw)
                sc["fn"] += 1
            else:
                sc["fs"], sc["fmin"], sc["fmax"], sc["fn"] = t, raw, raw, 1
    else:
        sc["bad"] += 1
        sc["ok"] = 0
    fs = sc["fs"]
    flat = window_s is not None and fs is not None and sc["fn"] >= rule.flatline_min_readings and t - fs >= window_s
    raise_c = sc["bad"] >= rule.bad_count or flat
    clear_c = sc["ok"] >= rule.good_count and not flat
    on = _step_one(st, c, t, raise_c, clear_c, raise_after_s=0.0, clear_after_s=0.0)
    if on is not None:
        flagged = r.quality is not Quality.GOOD
        reason = "flatline" if flat else ("flagged_bad" if flagged else "out_of_range")
        ev = {"metric": r.metric, "value": raw, "reason": reason}
        _set_condition(st, c, r.device, Change(c.severities[0] if on[0] else None, t, raw, ev), out)


def _lamp_inputs(st: EngineState, device: str) -> list[Any]:
    """``[relay on, current in A, margin, sun up]``: the device's latest good relay and current (None: unknown),
    then a memo of the last :func:`sun_is_up` (margin None: none yet), alike for every lamp rule of a reading."""
    latest = st.latest.get(device, {})
    relay = latest.get("relay")
    current = latest.get("current")
    relay_on = None if relay is None or not relay[2] else relay[1] >= 0.5
    amps = None if current is None or not current[2] else float(current[1])
    return [relay_on, amps, None, None]


def _lamp_step(st: EngineState, c: Compiled, r: Reading, lamp: list[Any], out: list[AlarmTransition]) -> None:
    """One lamp rule on the lamp's relay and current (``lamp``: :func:`_lamp_inputs`, alike for a reading's rules)."""
    device, t = r.device, r.ts
    relay_on: bool | None = lamp[0]
    amps: float | None = lamp[1]
    rule = c.rule
    kind = c.kind
    if kind == "lamp_failure":
        assert isinstance(rule, LampFailureRule)
        if relay_on is None or amps is None:
            return
        fail = relay_on and amps < rule.min_current_a
        on = _step_one(st, c, t, fail, not fail, raise_after_s=rule.raise_after_s, clear_after_s=rule.clear_after_s)
        if on is not None:
            ev = {"fault": "lampFailure", "relay": relay_on, "current_a": amps}
            _set_condition(st, c, device, Change(c.severities[0] if on[0] else None, t, amps, ev), out)
        return
    assert isinstance(rule, LampDayBurningRule | LampDarkRule)
    info = st.registry.get(device)
    if info is None or info.lat is None or info.lon is None:
        return
    if kind == "lamp_unexpected_on":  # burning = current flows (or the relay is on when current is unknown)
        assert isinstance(rule, LampDayBurningRule)
        lit = amps >= rule.on_current_a if amps is not None else relay_on
    else:  # dark = the controller has it switched off (a lit relay without current is lampFailure)
        lit = relay_on if relay_on is not None else (None if amps is None else amps >= rule.on_current_a)
    if lit is None:
        return
    margin_s = rule.margin_s
    if lamp[2] == margin_s:
        sun = lamp[3]
    else:
        sun = lamp[3] = sun_is_up(info.lat, info.lon, t, margin_s)
        lamp[2] = margin_s
    if sun is None:  # twilight: neither raise nor clear
        return
    if kind == "lamp_unexpected_on":
        bad, fault = lit and sun, "lampUnexpectedOn"
    else:
        bad, fault = (not lit) and not sun, "lampDarkAtNight"
    on = _step_one(st, c, t, bad, not bad, raise_after_s=rule.raise_after_s, clear_after_s=rule.clear_after_s)
    if on is not None:
        ev = {"fault": fault, "lit": lit, "sun_up": sun}
        _set_condition(st, c, device, Change(c.severities[0] if on[0] else None, t, amps, ev), out)


_NO_COMPS: tuple[Compiled, ...] = ()
_GOOD = Quality.GOOD
_isfinite = math.isfinite


def _reading(rs: RuleSet, st: EngineState, r: Reading, out: list[AlarmTransition]) -> None:
    device, metric, t = r.device, r.metric, r.ts
    skey = f"{device}|{metric}"
    last_ts = st.last_ts
    last = last_ts.get(skey)
    if last is not None and t <= last:
        return  # duplicate or late: never re-evaluated, never raises anew
    last_ts[skey] = t
    seen = st.last_seen.get(device)
    if seen is None or t > seen:
        st.last_seen[device] = t
    plan = st.plans.get(device)
    if plan is None:
        plan = _plan(rs, st, device)
    comps = plan.by_metric.get(metric)
    value = r.value
    good = r.quality is _GOOD and _isfinite(value)
    if good and plan.ranges:
        for lo, hi in plan.ranges.get(metric, ()):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                good = False
                break
    dev_latest = st.latest.get(device)
    if dev_latest is None:
        dev_latest = st.latest[device] = {}
    cur = dev_latest.get(metric)
    if cur is None:
        dev_latest[metric] = [t, value, good]
    else:  # in place: one container fewer per reading to allocate and for the step's young collection to walk
        cur[0], cur[1], cur[2] = t, value, good
    for stale in plan.staleness:  # a device that speaks again is no longer silent
        if stale.key in st.active:
            _set_condition(st, stale, device, Change(None, t, None, {"reason": "reading"}), out)
            _stale_push(st, device, t + rs.silence_floor(st.registry.get(device)))  # it has a deadline again
    if comps:
        _conditions(st, comps, r, good, out)
    # what the next checkpoint logs for this series, built while its state is at hand (a later reading of the
    # series replaces it; building it at the checkpoint instead costs 5-10x more: the state is out of cache);
    # _set_condition marks the whole device when an alarm changes
    st.series_dirty[skey] = st.series_entry(device, metric, comps or _NO_COMPS) if st.checkpoints else [device]


def _conditions(st: EngineState, comps: list[Compiled], r: Reading, good: bool, out: list[AlarmTransition]) -> None:
    """Step the rules on one reading's metric."""
    device, metric, t, value = r.device, r.metric, r.ts, r.value
    lamp: list[Any] | None = None  # relay on, current: alike for every lamp rule (_lamp_inputs)
    for c in comps:
        kind = c.kind
        if kind == "sensor_fault":
            _fault_step(st, c, r, good, out)
        elif not good:
            continue  # no threshold, rate or lamp alarm from a bad reading
        elif kind == "threshold":
            _levels_step(st, c, r, out)
        elif kind == "rate":
            _rate_step(st, c, r, out)
        elif kind == "supply_voltage":
            rule = c.rule
            assert isinstance(rule, SupplyVoltageRule)
            low, high = value < rule.min_v, value > rule.max_v
            inside = rule.min_v + rule.hysteresis_v <= value <= rule.max_v - rule.hysteresis_v
            on = _step_one(st, c, t, low or high, inside, raise_after_s=rule.raise_after_s,
                           clear_after_s=rule.clear_after_s)
            if on is not None:
                fault = "supplyVoltageTooLow" if low else "supplyVoltageTooHigh" if high else None
                ev: dict[str, Any] = {"metric": metric, "value": value}
                if fault:
                    ev["fault"] = fault
                _set_condition(st, c, device, Change(c.severities[0] if on[0] else None, t, value, ev), out)
        elif kind == "cover_open":
            rule = c.rule
            assert isinstance(rule, CoverOpenRule)
            is_open = value >= 0.5
            on = _step_one(st, c, t, is_open, not is_open, raise_after_s=0.0, clear_after_s=rule.clear_after_s)
            if on is not None:
                ev = {"metric": metric, "value": value}
                _set_condition(st, c, device, Change(c.severities[0] if on[0] else None, t, value, ev), out)
        elif kind in ("lamp_failure", "lamp_unexpected_on", "lamp_dark"):
            if lamp is None:
                lamp = _lamp_inputs(st, device)
            _lamp_step(st, c, r, lamp, out)


def _wim(st: EngineState, c: Compiled, ev: Event, out: list[AlarmTransition]) -> None:
    rule = c.rule
    assert isinstance(rule, WimOverloadRule)
    body = ev.body
    gross = body.get("gross_kg")
    axle_kg = body.get("axle_kg") or []
    axles = body.get("axles", len(axle_kg))
    if isinstance(gross, bool) or not isinstance(gross, int | float) or not isinstance(axles, int):
        return
    combo = bool(body.get("combination", False))
    limit = rule.limit_kg(axles, combo)
    record = {"event_id": ev.id, **body}
    vehicle = wim.vehicle_evidence(ev.device, ev.id, ev.ts, body, rule)  # one identity for all its alarms
    if limit is not None and gross > limit * (1.0 + rule.tolerance_pct / 100.0):
        over_pct = (gross / limit - 1.0) * 100.0
        sev = Severity.CRITICAL if over_pct > rule.critical_over_pct else rule.severity
        evidence = {"record": record, "limit_kg": limit, "over_pct": round(over_pct, 2), "vehicle": vehicle}
        evidence["tolerance_pct"] = rule.tolerance_pct
        _event_alarm(st, rule.name, ev, Change(sev, ev.ts + rule.auto_clear_s, float(gross), evidence), out)
    if rule.axle_limit_kg is not None and isinstance(axle_kg, list):
        over = [i for i, w in enumerate(axle_kg) if isinstance(w, int | float) and w > rule.axle_limit_kg]
        if over:
            top = max(float(axle_kg[i]) for i in over)
            evidence = {"record": record, "axle_limit_kg": rule.axle_limit_kg, "axles_over": over,
                        "vehicle": vehicle}
            _event_alarm(st, rule.axle_rule, ev, Change(rule.severity, ev.ts + rule.auto_clear_s, top, evidence), out)


def _event_alarm(st: EngineState, rule: str, ev: Event, ch: Change, out: list[AlarmTransition]) -> None:
    """Raise one alarm for one event; ``ch.t`` is when it clears itself."""
    device = ev.device
    sev, value, evidence = ch.target, ch.value, ch.evidence
    assert sev is not None
    aid = f"{alarm_id_for(device, rule, ev.ts)}-{ev.id}"
    if aid in st.alarms:
        return
    # no "attach to the device's open case" hint: each event (a vehicle) is its own incident, and the
    # case bridge correlates it by its identity (``correlate: vehicle``), not by device and rule
    alarm = Alarm(aid, device, rule, sev, ev.ts, value, case_id=None, auto_clear_t=ch.t)
    alarm.evidence = evidence
    st.alarms[aid] = alarm
    out.append(AlarmTransition(aid, device, rule, TransitionKind.RAISED, sev, ev.ts, value, evidence))


def _event(rs: RuleSet, st: EngineState, ev: Event, out: list[AlarmTransition]) -> None:
    ekey = f"{ev.device}|event:{ev.kind}"
    last = st.last_ts.get(ekey)
    if last is not None and ev.ts < last:
        return
    st.last_ts[ekey] = ev.ts
    st.dirty.add(ev.device)
    st.latest.setdefault(ev.device, {})[f"event:{ev.kind}"] = [ev.ts, None, True]  # so its watermark persists
    seen = st.last_seen.get(ev.device)
    if seen is None or ev.ts > seen:
        st.last_seen[ev.device] = ev.ts
    plan = _plan(rs, st, ev.device)
    for c in plan.wim:
        rule = c.rule
        assert isinstance(rule, WimOverloadRule)
        if ev.kind == rule.event_kind:
            _wim(st, c, ev, out)
    for c in plan.cover_events.get(ev.kind, ()):
        rule = c.rule
        assert isinstance(rule, CoverOpenRule)
        on = _step_one(st, c, ev.ts, True, False, raise_after_s=0.0, clear_after_s=rule.clear_after_s)
        if on is not None:
            evidence = {"event": ev.kind, "event_id": ev.id}
            _set_condition(st, c, ev.device, Change(c.severities[0] if on[0] else None, ev.ts, 1.0, evidence), out)


def _status(rs: RuleSet, st: EngineState, s: GatewayStatus, out: list[AlarmTransition]) -> None:
    """A birth or last will. Only devices whose registry entry, gateway or birth time changes are marked dirty
    and rescheduled: a re-birth after a reconnect repeats the same 1 000 devices and changes nothing."""
    prev = st.gw_state.get(s.gw)
    st.dirty.add(s.gw)
    stale = rs.has_staleness
    if s.state == "online":
        for info in s.devices:
            dev = info.id
            changed = False
            if st.registry.get(dev) != info:
                st.registry[dev] = info
                st.plans.pop(dev, None)
                changed = True
            old_gw = st.gw_of.get(dev)
            if old_gw != s.gw:
                st.gw_of[dev] = s.gw
                if st.stale_ready:
                    if old_gw is not None:
                        st.gw_members.get(old_gw, set()).discard(dev)
                    st.gw_members.setdefault(s.gw, set()).add(dev)
                changed = True
            if dev not in st.born:
                st.born[dev] = s.t
                changed = True
            if changed:
                st.dirty.add(dev)
                if stale:
                    _stale_push(st, dev, _silence_start(st, dev, s.t) + rs.silence_floor(info))
        if prev is None or prev[0] != "online":
            st.gw_state[s.gw] = ["online", s.t]
            if stale and st.stale_ready:  # silence counts from the gateway's return
                for dev in st.gw_members.get(s.gw, ()):
                    _stale_push(st, dev, _silence_start(st, dev, s.t) + rs.silence_floor(st.registry.get(dev)))
        for c in _gateway_conditions(rs, s.gw):
            if c.key in st.active:
                _set_condition(st, c, s.gw, Change(None, s.t, None, {"reason": "gateway online"}), out)
    elif prev is None or prev[0] != "offline":
        st.gw_state[s.gw] = ["offline", s.t]  # its devices' checks drop out of the schedule until it returns


def _silence_start(st: EngineState, device: str, now: float) -> float:
    """When the device's current silence began: its newest sample, else its birth, and never before its
    gateway's last change of state (silence counts from the gateway's return, not across its outage)."""
    last = st.last_seen.get(device, st.born.get(device, now))
    dev_gw = st.gw_of.get(device)
    gws = st.gw_state.get(dev_gw) if dev_gw is not None else None
    if gws is not None:
        last = max(last, float(gws[1]))
    return last


def _stale_push(st: EngineState, device: str, key: float) -> None:
    """Schedule a silence check of ``device`` no later than ``key`` (a lower bound of its deadline)."""
    if not st.stale_ready:
        return  # the first tick rebuilds the whole schedule
    due = st.stale_due.get(device)
    if due is not None and due <= key:
        return  # an earlier check is already scheduled; it recomputes the deadline
    st.stale_due[device] = key
    heapq.heappush(st.stale_heap, (key, device))


def _stale_rebuild(rs: RuleSet, st: EngineState, now: float) -> None:
    """Derive the silence schedule from the state (at the first tick, e.g. after a load): one entry per device."""
    members: dict[str, set[str]] = {}
    for dev, gw in st.gw_of.items():
        members.setdefault(gw, set()).add(dev)
    st.gw_members = members
    due = {}
    if rs.has_staleness:
        due = {dev: _silence_start(st, dev, now) + rs.silence_floor(info) for dev, info in st.registry.items()}
    st.stale_due = due
    st.stale_heap = [(k, dev) for dev, k in due.items()]
    heapq.heapify(st.stale_heap)
    st.stale_ready = True


def _gateway_conditions(rs: RuleSet, gw: str) -> list[Compiled]:
    out = []
    for rule in rs.rules:
        if isinstance(rule, StalenessRule) and rule.gateway_rule:
            out.append(
                Compiled(rule, rule.gateway_rule, f"{rule.gateway_rule}|{gw}", "gateway", (), (rule.gateway_severity,))
            )
    return out


def tick(rs: RuleSet, st: EngineState, now: float, out: list[AlarmTransition]) -> None:
    """Time-driven checks at ``now`` (gateway last wills, staleness, lamp day/night), appending to ``out``.

    Public because the vectorised backtest ends a replay with the same tick the live engine runs.
    """
    if not st.stale_ready:
        _stale_rebuild(rs, st, now)
    # gateways whose last will has stood long enough
    for gw, (state, since) in st.gw_state.items():
        if state != "offline":
            continue
        for c in _gateway_conditions(rs, gw):
            rule = c.rule
            assert isinstance(rule, StalenessRule)
            if c.key not in st.active and now - since >= rule.gateway_after_s:
                devices = sorted(st.gw_members.get(gw, ()))
                ev = {"reason": "gateway offline (last will)", "offline_since": since, "devices": devices}
                _set_condition(st, c, gw, Change(rule.gateway_severity, now, None, ev), out)
    # silent devices: only those whose scheduled check is due (cost follows the deadlines that pass, not the
    # registry). A check recomputes the deadline from the state: raise if passed, else schedule it again. A
    # device is dropped while its gateway is offline or its silence alarm is active; its gateway's return, a
    # reading that clears the alarm, or a changed registry entry schedules it again.
    heap, due = st.stale_heap, st.stale_due
    registry, gw_of, gw_state, last_seen, born = st.registry, st.gw_of, st.gw_state, st.last_seen, st.born
    again: list[tuple[float, str]] = []
    silent: list[tuple[str, Compiled, dict[str, Any]]] = []
    while heap and heap[0][0] <= now:
        key, device = heapq.heappop(heap)
        if due.get(device) != key:
            continue  # superseded by an earlier entry
        del due[device]
        info = registry.get(device)
        if info is None:
            continue
        dev_gw = gw_of.get(device)
        gws = gw_state.get(dev_gw) if dev_gw is not None else None
        last = last_seen.get(device, born.get(device, now))  # _silence_start, inlined: a mass birth's first
        if gws is not None:  # checks all come due in a few ticks
            if gws[0] == "offline":
                continue
            last = max(last, float(gws[1]))
        floor = rs.silence_floor(info)
        if now - last <= floor:  # not silent for any rule yet (the usual case): the plan is not needed
            again.append((last + floor, device))
            continue
        plan = _plan(rs, st, device)
        soonest = float("inf")
        for c in plan.staleness:
            if c.key in st.active:
                continue
            rule = c.rule
            assert isinstance(rule, StalenessRule)
            interval = info.interval_s or rule.default_interval_s
            limit = max(rule.factor * interval, rule.min_silence_s)
            if now - last > limit:
                ev = {"reason": "silent", "last_seen": last, "expected_interval_s": interval, "silence_s": now - last}
                silent.append((device, c, ev))
            else:
                soonest = min(soonest, last + limit)
        if soonest < float("inf"):
            again.append((soonest, device))
    if len(silent) > 1:  # raise in registry order, as a scan of the registry did
        pos = st.registry_pos
        if len(pos) != len(st.registry):
            pos = st.registry_pos = {d: i for i, d in enumerate(st.registry)}
        silent.sort(key=lambda x: pos.get(x[0], -1))
    for device, c, ev in silent:
        rule = c.rule
        assert isinstance(rule, StalenessRule)
        _set_condition(st, c, device, Change(rule.severity, now, None, ev), out)
    for key, device in again:
        _stale_push(st, device, key)
    st.next_stale_t = heap[0][0] if heap else float("inf")
    _auto_clear(st, now, out)


def _manual_clear(st: EngineState, al: Alarm, ack: AlarmAck, out: list[AlarmTransition]) -> None:
    """A person clears an event alarm (WIM overload): no sensor reading can, only its timer.

    A condition alarm (depth, tilt, voltage) is refused: its sensor still decides, and a
    cleared-by-hand flood alarm would be raised again by the next reading anyway.
    """
    if al.auto_clear_t is None:
        return  # refused: no transition, the alarm stays active on every screen
    st.alarms.pop(al.alarm_id, None)
    why: dict[str, Any] = {"reason": "manual", "note": ack.note}
    out.append(AlarmTransition(al.alarm_id, al.device, al.rule, TransitionKind.CLEARED, al.severity, ack.t, al.value,
                               why, ack.actor))


def _auto_clear(st: EngineState, now: float, out: list[AlarmTransition]) -> None:
    # event alarms that clear themselves
    for aid in [a for a, al in st.alarms.items() if al.auto_clear_t is not None and al.auto_clear_t <= now]:
        al = st.alarms.pop(aid)
        st.dirty.add(al.device)
        assert al.auto_clear_t is not None
        cleared = TransitionKind.CLEARED
        why = {"reason": "auto"}
        out.append(AlarmTransition(aid, al.device, al.rule, cleared, al.severity, al.auto_clear_t, al.value, why))


def evaluate(
    rs: RuleSet, state: EngineState, inputs: Iterable[Input], now: float
) -> tuple[EngineState, list[AlarmTransition]]:
    """Apply ``inputs`` in order, then time-driven checks at ``now``; return the state and transitions."""
    out: list[AlarmTransition] = []
    for item in inputs:
        if isinstance(item, Reading):
            _reading(rs, state, item, out)
        elif isinstance(item, Event):
            _event(rs, state, item, out)
        elif isinstance(item, GatewayStatus):
            _status(rs, state, item, out)
        elif isinstance(item, AlarmAck):
            state.dirty.add(item.device)
            alarm = state.alarms.get(item.alarm_id)
            if alarm is not None and alarm.device == item.device:
                if item.action == "clear":
                    _manual_clear(state, alarm, item, out)
                else:
                    acknowledge(alarm, item.actor, item.t, item.note, out)
        elif isinstance(item, OpenCases):
            state.dirty.add(item.device)
            if item.cases:
                state.open_cases[item.device] = dict(item.cases)
            else:
                state.open_cases.pop(item.device, None)
            for aid in state.active.values():
                alarm = state.alarms.get(aid)
                if alarm is not None and alarm.device == item.device:
                    alarm.case_id = item.cases.get(alarm.rule)
    if now >= state.next_tick_t:
        state.next_tick_t = now + TICK_S
        tick(rs, state, now, out)
    return state, out


def active_alarms(state: EngineState) -> list[Alarm]:
    return sorted(state.alarms.values(), key=lambda a: (a.raised_t, a.alarm_id))


__all__ = [
    "BatteryLowRule",
    "EngineState",
    "GatewayStatus",
    "Input",
    "RuleSet",
    "active_alarms",
    "evaluate",
    "fold_state_log",
]
