"""Backtest: replay stored history through the rules and count what they would have raised.

The core, :func:`backtest`, is a pure function over arrays (one ``(t, value, quality)`` triple
of numpy arrays per device and metric), so it can be benchmarked and tested without a database.
It gives the same transitions as the live evaluator (:mod:`rules.evaluate`) — tests check this
on random streams — but runs the expensive parts vectorised:

* threshold, battery and tilt rules: each level's raise and clear conditions are computed for
  every sample at once; the length of the run each sample belongs to decides whether its delay
  has elapsed; only the (few) latch flips are then walked in Python. This is exact because
  the raise and clear conditions are disjoint: a run that satisfies one started after the
  latch last flipped.
* rate rules: evaluation points, windows and Theil–Sen slopes for all points of one window
  size at once;
* staleness: from gaps between consecutive samples (the live engine sees the same gap as
  silence at its next tick);
* everything else (sensor faults, lamps, cover, supply voltage, WIM events) goes through the
  live evaluator itself, device by device.

"Cases that would have opened" is a pluggable policy (:data:`CasePolicy`); the default opens
one case per (device, rule) when an alarm is raised and no case of that pair is open, and
closes it when the alarm clears. The case bridge can pass its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.evaluate import Compiled, DevicePlan, EngineState, RuleSet, _tick, compile_rule, evaluate, rule_metrics
from rules.lifecycle import SEVERITIES, FlapPolicy, alarm_id_for
from rules.specs import (
    CoverOpenRule,
    LampDarkRule,
    LampDayBurningRule,
    LampFailureRule,
    RateRule,
    Rule,
    SensorFaultRule,
    StalenessRule,
    SupplyVoltageRule,
)
from rules.sun import local_sun_times, sun_is_up

_RANK_TO_SEV = {s.rank: s for s in SEVERITIES}


@dataclass(slots=True)
class Series:
    """One device metric's history, sorted by time, one sample per time."""

    t: np.ndarray  # float64 Unix seconds
    v: np.ndarray  # float64
    q: np.ndarray  # int8 quality (0 good)


@dataclass(slots=True)
class History:
    """What a backtest replays: per-series arrays, the device registry, and discrete events."""

    series: dict[tuple[str, str], Series]
    registry: dict[str, DeviceInfo]
    events: list[Event] = field(default_factory=list)
    start: float | None = None
    end: float | None = None

    @property
    def readings(self) -> int:
        return sum(int(s.t.size) for s in self.series.values())


@dataclass(slots=True)
class SeverityStats:
    entered: int = 0  # raises or escalations/de-escalations into this severity
    time_s: float = 0.0


@dataclass(slots=True)
class RuleStats:
    raised: int = 0
    alarm_time_s: float = 0.0
    cases_opened: int = 0
    by_severity: dict[str, SeverityStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "raised": self.raised,
            "alarm_time_s": round(self.alarm_time_s, 3),
            "cases_opened": self.cases_opened,
            "by_severity": {
                k: {"entered": v.entered, "time_s": round(v.time_s, 3)} for k, v in sorted(self.by_severity.items())
            },
        }


@dataclass(slots=True)
class BacktestReport:
    rules: dict[str, RuleStats]
    transitions: list[AlarmTransition]
    readings: int
    start: float
    end: float

    def to_json(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "start": self.start,
            "end": self.end,
            "rules": {k: v.to_json() for k, v in sorted(self.rules.items())},
        }


CasePolicy = Callable[[Sequence[AlarmTransition]], Mapping[str, int]]
"""Given all transitions of a backtest (time-ordered), how many cases each rule would have opened."""


def default_case_policy(transitions: Sequence[AlarmTransition]) -> dict[str, int]:
    """One open case per (device, rule): a raise opens one unless one is open; a clear closes it."""
    open_pairs: set[tuple[str, str]] = set()
    counts: dict[str, int] = defaultdict(int)
    for tr in transitions:
        pair = (tr.device, tr.rule)
        if tr.kind is TransitionKind.RAISED and pair not in open_pairs:
            open_pairs.add(pair)
            counts[tr.rule] += 1
        elif tr.kind is TransitionKind.CLEARED:
            open_pairs.discard(pair)
    return dict(counts)


# ---------------------------------------------------------------- vectorised pieces


def _run_start_t(t: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """For each sample, the time its run of consecutive ``cond`` samples started (garbage where not cond)."""
    n = cond.size
    if n == 0:
        return t
    starts = cond.copy()
    starts[1:] &= ~cond[:-1]
    idx = np.where(starts, np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    return t[idx]


def latch_vector(
    t: np.ndarray, raise_c: np.ndarray, clear_c: np.ndarray, raise_after_s: float, clear_after_s: float
) -> np.ndarray:
    """Latch state after each sample (bool array); equals :func:`rules.lifecycle.step_latch` sample by sample."""
    n = t.size
    on = np.zeros(n, dtype=bool)
    if n == 0:
        return on
    raise_ok = raise_c & (t - _run_start_t(t, raise_c) >= raise_after_s)
    clear_ok = clear_c & (t - _run_start_t(t, clear_c) >= clear_after_s)
    r_idx = np.flatnonzero(raise_ok)
    c_idx = np.flatnonzero(clear_ok)
    i = 0
    while True:
        k = int(np.searchsorted(r_idx, i))
        if k >= r_idx.size:
            break
        j = int(r_idx[k])
        m = int(np.searchsorted(c_idx, j + 1))
        if m >= c_idx.size:
            on[j:] = True
            break
        e = int(c_idx[m])
        on[j:e] = True
        i = e + 1
    return on


def alarms_from_levels(
    t: np.ndarray,
    sev_rank: np.ndarray,
    values: np.ndarray,
    *,
    device: str,
    rule: str,
    flap: FlapPolicy | None,
) -> list[AlarmTransition]:
    """Alarm transitions from a per-sample latched severity rank (0 = none); same as ``step_alarm``."""
    out: list[AlarmTransition] = []
    n = t.size
    if n == 0:
        return out
    change = np.flatnonzero(np.diff(sev_rank, prepend=np.int8(0)) != 0)
    alarm_id: str | None = None
    cur = 0
    flapping = False
    raises: list[float] = []
    hold = flap is not None and flap.hold_s > 0
    for pos, i in enumerate(change.tolist()):
        s = int(sev_rank[i])
        ti = float(t[i])
        val = float(values[i])
        if s > 0:
            sev = _RANK_TO_SEV[s]
            if alarm_id is None:
                if flap is not None:
                    raises.append(ti)
                    cutoff = ti - flap.window_s
                    while raises and raises[0] < cutoff:
                        raises.pop(0)
                flapping = flap is not None and len(raises) >= flap.max_raises
                alarm_id = alarm_id_for(device, rule, ti)
                out.append(AlarmTransition(alarm_id, device, rule, TransitionKind.RAISED, sev, ti, val))
            elif s != cur:
                kind = TransitionKind.ESCALATED if s > cur else TransitionKind.DEESCALATED
                out.append(AlarmTransition(alarm_id, device, rule, kind, sev, ti, val))
            cur = s
            continue
        if alarm_id is None:
            continue
        j = i
        if flapping and hold and flap is not None:
            nxt = int(change[pos + 1]) if pos + 1 < change.size else n
            j = int(np.searchsorted(t, ti + flap.hold_s, side="left"))
            if j >= nxt:
                continue  # re-raised (or history ended) before the hold elapsed: the alarm stays
        cleared = TransitionKind.CLEARED
        out.append(AlarmTransition(alarm_id, device, rule, cleared, _RANK_TO_SEV[cur], float(t[j]), float(values[j])))
        alarm_id = None
        cur = 0
    return out


def threshold_vector(c: Compiled, device: str, t: np.ndarray, v: np.ndarray) -> list[AlarmTransition]:
    """A compiled threshold/tilt/battery rule over one device's good samples."""
    value = v + c.offset if c.offset else v
    rank = np.zeros(t.size, dtype=np.int8)
    for lv in c.levels:
        if c.above:
            on = latch_vector(t, value >= lv.raise_at, value < lv.clear_at, lv.raise_after_s, lv.clear_after_s)
        else:
            on = latch_vector(t, value <= lv.raise_at, value > lv.clear_at, lv.raise_after_s, lv.clear_after_s)
        np.maximum(rank, np.where(on, np.int8(lv.severity.rank), np.int8(0)), out=rank)
    return alarms_from_levels(t, rank, value, device=device, rule=c.name, flap=c.flap)


def _rate_eval_points(t: np.ndarray, rule: RateRule) -> tuple[np.ndarray, np.ndarray]:
    """Indices where the live engine computes a slope, and each one's window start index."""
    n = t.size
    start = np.searchsorted(t, t - rule.window_s, side="left")
    enough = (np.arange(n) - start + 1) >= rule.min_points
    cand = np.flatnonzero(enough)
    if cand.size == 0 or rule.eval_every_s <= 0:
        return cand, start[cand]
    pts: list[int] = []
    k = 0
    tc = t[cand]
    while k < cand.size:
        pts.append(int(cand[k]))
        k = int(np.searchsorted(tc, tc[k] + rule.eval_every_s, side="left"))
    idx = np.asarray(pts, dtype=np.int64)
    return idx, start[idx]


def rate_slopes(t: np.ndarray, v: np.ndarray, idx: np.ndarray, start: np.ndarray, max_points: int) -> np.ndarray:
    """Theil–Sen slope (per second) of the window ``[start[k], idx[k]]`` for each k, grouped by window size."""
    slopes = np.full(idx.size, np.nan)
    sizes = idx - start + 1
    for size in np.unique(sizes).tolist():
        sel = np.flatnonzero(sizes == size)
        offs = np.arange(size)
        if size > max_points:
            offs = np.linspace(0, size - 1, max_points).round().astype(np.int64)
        rows = start[sel][:, None] + offs[None, :]
        tt, vv = t[rows], v[rows]
        i, j = np.triu_indices(offs.size, 1)
        s = (vv[:, j] - vv[:, i]) / (tt[:, j] - tt[:, i])
        slopes[sel] = np.median(s, axis=1)
    return slopes


def rate_vector(c: Compiled, device: str, t: np.ndarray, v: np.ndarray) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, RateRule)
    value = v + c.offset if c.offset else v
    idx, start = _rate_eval_points(t, rule)
    if idx.size == 0:
        return []
    slope_h = rate_slopes(t, value, idx, start, rule.max_points) * 3600.0
    signed = slope_h if c.above else -slope_h
    te = t[idx]
    with np.errstate(invalid="ignore"):
        raise_c = signed >= rule.rate_per_h
        clear_c = signed < rule.rate_per_h - rule.hysteresis_per_h
    on = latch_vector(te, raise_c, clear_c, rule.raise_after_s, rule.clear_after_s)
    rank = np.where(on, np.int8(rule.severity.rank), np.int8(0)).astype(np.int8)
    return alarms_from_levels(te, rank, slope_h, device=device, rule=c.name, flap=c.flap)


def staleness_vector(c: Compiled, info: DeviceInfo, t: np.ndarray, end: float) -> list[AlarmTransition]:
    """Silences longer than the limit between consecutive samples (and after the last one)."""
    rule = c.rule
    assert isinstance(rule, StalenessRule)
    interval = info.interval_s or rule.default_interval_s
    limit = max(rule.factor * interval, rule.min_silence_s)
    if t.size == 0:
        return []
    nxt = np.append(t[1:], end)
    gaps = np.flatnonzero(nxt - t > limit)
    out = []
    for k in gaps.tolist():
        raised = float(t[k]) + limit
        aid = alarm_id_for(info.id, c.name, raised)
        out.append(AlarmTransition(aid, info.id, c.name, TransitionKind.RAISED, rule.severity, raised))
        if k + 1 < t.size:
            out.append(AlarmTransition(aid, info.id, c.name, TransitionKind.CLEARED, rule.severity, float(t[k + 1])))
    return out



def single_vector(
    c: Compiled, device: str, t: np.ndarray, cond: tuple[np.ndarray, np.ndarray], delays: tuple[float, float],
    *,
    values: np.ndarray,
) -> list[AlarmTransition]:
    """A single-level condition evaluated at the samples ``t``: raise/clear arrays and their delays."""
    on = latch_vector(t, cond[0], cond[1], delays[0], delays[1])
    rank = np.where(on, np.int8(c.severities[0].rank), np.int8(0)).astype(np.int8)
    return alarms_from_levels(t, rank, values, device=device, rule=c.name, flap=c.flap)


def _consecutive(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each sample (0 where False)."""
    n = mask.size
    idx = np.arange(n)
    last_false = np.where(~mask, idx, -1)
    np.maximum.accumulate(last_false, out=last_false)
    return np.where(mask, idx - last_false, 0)


def sensor_fault_vector(c: Compiled, device: str, s: Series, good: np.ndarray) -> list[AlarmTransition]:
    """Bad-reading runs and flatline, at every sample of the metric (as the live engine evaluates it)."""
    rule = c.rule
    assert isinstance(rule, SensorFaultRule)
    t = s.t
    n = t.size
    if n == 0:
        return []
    bad_run = _consecutive(~good)
    ok_run = _consecutive(good)
    flat = np.zeros(n, dtype=bool)
    if rule.flatline_window_s is not None and good.any():
        gi = np.flatnonzero(good)
        gv = s.v[gi]
        gt = t[gi]
        # greedy flat runs over good samples: a run restarts where the spread would exceed epsilon
        run_start = np.zeros(gi.size, dtype=np.int64)
        if rule.flatline_epsilon == 0.0:
            brk = np.ones(gi.size, dtype=bool)
            brk[1:] = gv[1:] != gv[:-1]
            run_start = np.where(brk, np.arange(gi.size), 0)
            np.maximum.accumulate(run_start, out=run_start)
        else:
            lo = hi = float(gv[0])
            st = 0
            vals = gv.tolist()
            for k, x in enumerate(vals):
                if k and max(hi, x) - min(lo, x) <= rule.flatline_epsilon:
                    lo, hi = min(lo, x), max(hi, x)
                else:
                    st, lo, hi = k, x, x
                run_start[k] = st
        count = np.arange(gi.size) - run_start + 1
        fs_t = gt[run_start]
        # for every sample, the flat state of the last good sample at or before it
        last_good = np.where(good, np.arange(n), -1)
        np.maximum.accumulate(last_good, out=last_good)
        has = last_good >= 0
        pos = np.searchsorted(gi, np.where(has, last_good, 0))
        flat = has & (count[pos] >= rule.flatline_min_readings) & (t - fs_t[pos] >= rule.flatline_window_s)
    raise_c = (bad_run >= rule.bad_count) | flat
    clear_c = (ok_run >= rule.good_count) & ~flat
    return single_vector(c, device, t, (raise_c, clear_c), (0.0, 0.0), values=s.v)


def supply_voltage_vector(c: Compiled, device: str, t: np.ndarray, v: np.ndarray) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, SupplyVoltageRule)
    raise_c = (v < rule.min_v) | (v > rule.max_v)
    clear_c = (v >= rule.min_v + rule.hysteresis_v) & (v <= rule.max_v - rule.hysteresis_v)
    return single_vector(c, device, t, (raise_c, clear_c), (rule.raise_after_s, rule.clear_after_s), values=v)


def cover_vector(c: Compiled, device: str, t: np.ndarray, v: np.ndarray) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, CoverOpenRule)
    is_open = v >= 0.5
    return single_vector(c, device, t, (is_open, ~is_open), (0.0, rule.clear_after_s), values=v)


def _ffill(idx_valid: np.ndarray) -> np.ndarray:
    out = idx_valid.copy()
    np.maximum.accumulate(out, out=out)
    return out


def sun_up_vector(lat: float, lon: float, t: np.ndarray, margin_s: float) -> np.ndarray:
    """:func:`rules.sun.sun_is_up` for many times: 1 up, 0 down, -1 twilight (one sun computation per day)."""
    shift = lon / 15.0 * 3600.0
    day = np.floor((t + shift) / 86400.0).astype(np.int64)
    out = np.empty(t.size, dtype=np.int8)
    for d in np.unique(day).tolist():
        sel = day == d
        mid = d * 86400.0 - shift + 43200.0  # local solar noon of that day
        rise, sset = local_sun_times(lat, lon, mid)
        tt = t[sel]
        if rise is None or sset is None:
            up = sun_is_up(lat, lon, mid, margin_s)
            out[sel] = 1 if up else 0
            continue
        res = np.full(tt.size, -1, dtype=np.int8)
        res[(tt >= rise + margin_s) & (tt <= sset - margin_s)] = 1
        res[(tt < rise - margin_s) | (tt > sset + margin_s)] = 0
        out[sel] = res
    return out


def lamp_vector(c: Compiled, info: DeviceInfo, metrics: dict[str, Series], ranges: Any) -> list[AlarmTransition]:
    """lampFailure / day-burning / dark at night, at every good relay or current sample."""
    rule = c.rule
    cur, rel = metrics.get("current"), metrics.get("relay")
    parts = []
    for rank, (name, ser) in enumerate((("current", cur), ("relay", rel))):
        if ser is not None and ser.t.size:
            ok = _good_mask(ser, ranges.get(name, ()))
            parts.append((ser.t, np.full(ser.t.size, rank, dtype=np.int8), ser.v, ok))
    if not parts:
        return []
    t = np.concatenate([p[0] for p in parts])
    which = np.concatenate([p[1] for p in parts])
    val = np.concatenate([p[2] for p in parts])
    good = np.concatenate([p[3] for p in parts])
    order = np.lexsort((which, t))
    t, which, val, good = t[order], which[order], val[order], good[order]
    n = t.size
    idx = np.arange(n)
    last_cur = _ffill(np.where(which == 0, idx, -1))
    last_rel = _ffill(np.where(which == 1, idx, -1))
    amps_known = (last_cur >= 0) & good[np.maximum(last_cur, 0)]
    relay_known = (last_rel >= 0) & good[np.maximum(last_rel, 0)]
    amps = val[np.maximum(last_cur, 0)]
    relay_on = val[np.maximum(last_rel, 0)] >= 0.5
    evaluated = good.copy()  # the live engine skips lamp rules on a bad reading
    if isinstance(rule, LampFailureRule):
        ev = evaluated & amps_known & relay_known
        fail = relay_on & (amps < rule.min_current_a)
        te = t[ev]
        delays = (rule.raise_after_s, rule.clear_after_s)
        return single_vector(c, info.id, te, (fail[ev], ~fail[ev]), delays, values=amps[ev])
    assert isinstance(rule, LampDayBurningRule | LampDarkRule)
    if info.lat is None or info.lon is None:
        return []
    lit = np.where(amps_known, amps >= rule.on_current_a, relay_on)
    lit_known = amps_known | relay_known
    sun = sun_up_vector(info.lat, info.lon, t, rule.margin_s)
    ev = evaluated & lit_known & (sun >= 0)
    bad = lit & (sun == 1) if isinstance(rule, LampDayBurningRule) else ~lit & (sun == 0)
    te = t[ev]
    values = np.where(amps_known, amps, np.nan)[ev]
    return single_vector(c, info.id, te, (bad[ev], ~bad[ev]), (rule.raise_after_s, rule.clear_after_s), values=values)


# ---------------------------------------------------------------- the core


def _good_mask(s: Series, ranges: Iterable[tuple[float | None, float | None]]) -> np.ndarray:
    good: np.ndarray = (s.q == int(Quality.GOOD)) & np.isfinite(s.v)
    for lo, hi in ranges:
        if lo is not None:
            good &= s.v >= lo
        if hi is not None:
            good &= s.v <= hi
    return good


def _device_rules(plan: DevicePlan) -> list[Compiled]:
    seen: dict[str, Compiled] = {}
    for comps in plan.by_metric.values():
        for c in comps:
            seen.setdefault(c.name, c)
    return list(seen.values())


def backtest(
    rules: Sequence[Rule],
    history: History,
    case_policy: CasePolicy | None = None,
    progress: Callable[[float], None] | None = None,
) -> BacktestReport:
    """Replay ``history`` through ``rules``; pure (no clock, no I/O). ``progress`` gets the fraction done."""
    all_t = [s.t for s in history.series.values() if s.t.size]
    start = history.start if history.start is not None else (min(float(x[0]) for x in all_t) if all_t else 0.0)
    end = history.end if history.end is not None else (max(float(x[-1]) for x in all_t) if all_t else 0.0)
    full = RuleSet(rules)
    by_device: dict[str, list[tuple[str, Series]]] = defaultdict(list)
    for (device, metric), s in history.series.items():
        by_device[device].append((metric, s))
    events_by_device: dict[str, list[Event]] = defaultdict(list)
    for ev in history.events:
        events_by_device[ev.device].append(ev)
    out: list[AlarmTransition] = []
    devices = sorted(set(by_device) | set(events_by_device))
    for k, device in enumerate(devices):
        info = history.registry.get(device) or DeviceInfo(id=device, profile="", kind="")
        plan = full.plan(info)
        metrics = dict(by_device.get(device, []))
        events = events_by_device.get(device, [])
        scalar_rules: list[Rule] = [c.rule for c in plan.wim]
        goods: dict[str, np.ndarray] = {}
        for c in _device_rules(plan):
            rule = c.rule
            if isinstance(rule, LampFailureRule | LampDayBurningRule | LampDarkRule):
                out.extend(lamp_vector(c, info, metrics, plan.ranges))
                continue
            metric = rule_metrics(rule)[0]
            if isinstance(rule, CoverOpenRule) and any(e.kind in rule.event_kinds for e in events):
                scalar_rules.append(rule)
                continue
            ser = metrics.get(metric)
            if ser is None or ser.t.size == 0:
                continue
            good = goods.get(metric)
            if good is None:
                good = goods[metric] = _good_mask(ser, plan.ranges.get(metric, ()))
            if isinstance(rule, SensorFaultRule):
                out.extend(sensor_fault_vector(c, device, ser, good))
                continue
            t, v = (ser.t, ser.v) if good.all() else (ser.t[good], ser.v[good])
            if isinstance(rule, RateRule):
                out.extend(rate_vector(c, device, t, v))
            elif isinstance(rule, SupplyVoltageRule):
                out.extend(supply_voltage_vector(c, device, t, v))
            elif isinstance(rule, CoverOpenRule):
                out.extend(cover_vector(c, device, t, v))
            else:
                out.extend(threshold_vector(c, device, t, v))
        if plan.staleness and metrics:
            seen = np.unique(np.concatenate([m.t for m in metrics.values()]))
            for c in plan.staleness:
                out.extend(staleness_vector(c, info, seen, end))
        if scalar_rules:
            out.extend(_scalar_device(RuleSet(scalar_rules), info, metrics, events, end))
        if progress is not None and (k % 256 == 0 or k == len(devices) - 1):
            progress((k + 1) / len(devices))
    out.sort(key=lambda tr: (tr.t, tr.device, tr.rule))
    stats = summarize(out, end)
    counts = (case_policy or default_case_policy)(out)
    for name, n in counts.items():
        stats.setdefault(name, RuleStats()).cases_opened = n
    for rule in full.rules:
        stats.setdefault(rule.name, RuleStats())
    return BacktestReport(stats, out, history.readings, start, end)


def _scalar_device(
    rs: RuleSet, info: DeviceInfo, metrics: dict[str, Series], events: list[Event], end: float
) -> list[AlarmTransition]:
    """The live evaluator over one device's history, for rules driven by events."""
    plan = rs.plan(info)
    wanted = [m for m in metrics if m in plan.by_metric]
    if not wanted and not (events and (plan.wim or plan.cover_events)):
        return []
    items: list[tuple[float, int, Reading | Event]] = []
    for order, m in enumerate(sorted(wanted)):
        s = metrics[m]
        for tt, vv, qq in zip(s.t.tolist(), s.v.tolist(), s.q.tolist(), strict=True):
            items.append((tt, order, Reading(info.id, m, tt, vv, "", Quality(qq))))
    for ev in events:
        items.append((ev.ts, len(wanted), ev))
    items.sort(key=lambda x: (x[0], x[1]))
    st = EngineState(registry={info.id: info}, next_tick_t=float("inf"))
    st, out = evaluate(rs, st, (x[2] for x in items), 0.0)
    _tick(rs, st, end, out)
    return out


def summarize(transitions: Sequence[AlarmTransition], end: float) -> dict[str, RuleStats]:
    """Per rule: alarms raised, total alarm time, and per severity entries and time (open alarms run to ``end``)."""
    stats: dict[str, RuleStats] = {}
    cur: dict[str, tuple[Severity, float, float]] = {}  # alarm id -> (severity, since, raised)
    rule_of: dict[str, str] = {}
    for tr in transitions:
        rs = stats.setdefault(tr.rule, RuleStats())
        if tr.kind is TransitionKind.ACKNOWLEDGED:
            continue
        prev = cur.get(tr.alarm_id)
        if prev is not None:
            sev, since, raised = prev
            rs.by_severity.setdefault(sev.value, SeverityStats()).time_s += tr.t - since
        if tr.kind is TransitionKind.RAISED:
            rs.raised += 1
            cur[tr.alarm_id] = (tr.severity, tr.t, tr.t)
            rule_of[tr.alarm_id] = tr.rule
            rs.by_severity.setdefault(tr.severity.value, SeverityStats()).entered += 1
        elif tr.kind is TransitionKind.CLEARED:
            if prev is not None:
                rs.alarm_time_s += tr.t - prev[2]
                del cur[tr.alarm_id]
        elif prev is not None:
            cur[tr.alarm_id] = (tr.severity, tr.t, prev[2])
            rs.by_severity.setdefault(tr.severity.value, SeverityStats()).entered += 1
    for aid, (sev, since, raised) in cur.items():
        rs = stats[rule_of[aid]]
        rs.by_severity.setdefault(sev.value, SeverityStats()).time_s += max(0.0, end - since)
        rs.alarm_time_s += max(0.0, end - raised)
    return stats


def history_from_readings(
    readings: Iterable[Reading], registry: Mapping[str, DeviceInfo], events: Iterable[Event] = ()
) -> History:
    """Build a :class:`History` from reading objects (tests, small replays); sorts and de-duplicates."""
    cols: dict[tuple[str, str], tuple[list[float], list[float], list[int]]] = defaultdict(lambda: ([], [], []))
    for r in readings:
        c = cols[(r.device, r.metric)]
        c[0].append(r.ts)
        c[1].append(r.value)
        c[2].append(int(r.quality))
    series = {}
    for key, (ts, vs, qs) in cols.items():
        t = np.asarray(ts, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        t = t[order]
        keep = np.ones(t.size, dtype=bool)
        keep[1:] = t[1:] != t[:-1]  # first of equal times wins, as in the live engine
        series[key] = Series(
            t[keep], np.asarray(vs, dtype=np.float64)[order][keep], np.asarray(qs, dtype=np.int8)[order][keep]
        )
    return History(series, dict(registry), list(events))


__all__ = [
    "BacktestReport",
    "CasePolicy",
    "History",
    "RuleStats",
    "Series",
    "backtest",
    "compile_rule",
    "default_case_policy",
    "history_from_readings",
    "summarize",
]
