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

"Cases that would have opened" is a pluggable policy (:data:`CasePolicy`), given the
transitions and the device registry; the default opens one case per (device, rule) when an
alarm is raised and no case of that pair is open, and closes it when the alarm clears. The
CLI passes the case bridge's own (:func:`case_bridge.backtest.cases_would_open`), which
reaches cases through the live bridge's policy and needs the registry for kind-narrowed
rules (lamps) and circuit/grid correlation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.evaluate import Compiled, DevicePlan, EngineState, RuleSet, compile_rule, evaluate, rule_metrics, tick
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
from rules.sun import day_events

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


CasePolicy = Callable[[Sequence[AlarmTransition], Mapping[str, DeviceInfo]], Mapping[str, int]]
"""Given all transitions of a backtest (time-ordered) and the device registry, how many cases each rule would
have opened."""


def default_case_policy(
    transitions: Sequence[AlarmTransition], registry: Mapping[str, DeviceInfo] | None = None
) -> dict[str, int]:
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


# ---------------------------------------------------------------- segments: many devices in one array


@dataclass(slots=True)
class Segs:
    """Concatenated per-device arrays: segment k is ``[bounds[k], bounds[k+1])`` and belongs to ``devices[k]``."""

    t: np.ndarray
    v: np.ndarray
    bounds: np.ndarray  # int64, len = segments + 1
    devices: list[str]
    first: np.ndarray = field(init=False)  # True at each segment's first sample
    end: np.ndarray = field(init=False)  # per sample: one past its segment's last sample

    def __post_init__(self) -> None:
        n = self.t.size
        self.first = np.zeros(n, dtype=bool)
        starts = self.bounds[:-1][self.bounds[:-1] < n]
        self.first[starts] = True
        lengths = np.diff(self.bounds)
        self.end = np.repeat(self.bounds[1:], lengths)

    @classmethod
    def build(cls, parts: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Segs:
        parts = [p for p in parts if p[1].size]
        if not parts:
            return cls(np.empty(0), np.empty(0), np.zeros(1, dtype=np.int64), [])
        bounds = np.zeros(len(parts) + 1, dtype=np.int64)
        bounds[1:] = np.cumsum([p[1].size for p in parts])
        return cls(
            np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), bounds, [p[0] for p in parts]
        )

    def select(self, mask: np.ndarray) -> Segs:
        """The samples where ``mask`` holds, keeping segments (empty ones dropped)."""
        keep_counts = np.add.reduceat(mask.astype(np.int64), self.bounds[:-1]) if self.t.size else np.zeros(0)
        devices = [d for d, c in zip(self.devices, keep_counts.tolist(), strict=True) if c]
        counts = keep_counts[keep_counts > 0]
        bounds = np.zeros(counts.size + 1, dtype=np.int64)
        bounds[1:] = np.cumsum(counts)
        return Segs(self.t[mask], self.v[mask], bounds, devices)


def _run_start_t(t: np.ndarray, cond: np.ndarray, first: np.ndarray) -> np.ndarray:
    """For each sample, the time its run of consecutive ``cond`` samples (within its segment) started."""
    n = cond.size
    if n == 0:
        return t
    starts = cond.copy()
    starts[1:] &= ~cond[:-1] | first[1:]
    idx = np.where(starts, np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    return t[idx]


def latch_vector(
    seg: Segs, raise_c: np.ndarray, clear_c: np.ndarray, raise_after_s: float, clear_after_s: float
) -> np.ndarray:
    """Latch state after each sample; equals :func:`rules.lifecycle.step_latch` sample by sample, per segment."""
    t = seg.t
    n = t.size
    on = np.zeros(n, dtype=bool)
    if n == 0:
        return on
    raise_ok = raise_c & (t - _run_start_t(t, raise_c, seg.first) >= raise_after_s)
    clear_ok = clear_c & (t - _run_start_t(t, clear_c, seg.first) >= clear_after_s)
    r_idx = np.flatnonzero(raise_ok)
    c_idx = np.flatnonzero(clear_ok)
    if r_idx.size == 0:
        return on
    ends = seg.end
    i = 0
    nr, nc = r_idx.size, c_idx.size
    while True:
        k = int(np.searchsorted(r_idx, i))
        if k >= nr:
            break
        j = int(r_idx[k])
        stop = int(ends[j])
        m = int(np.searchsorted(c_idx, j + 1))
        e = int(c_idx[m]) if m < nc else n
        if e >= stop:
            on[j:stop] = True
            i = stop
        else:
            on[j:e] = True
            i = e + 1
    return on


def alarms_from_levels(
    seg: Segs, sev_rank: np.ndarray, values: np.ndarray, *, rule: str, flap: FlapPolicy | None
) -> list[AlarmTransition]:
    """Alarm transitions from a per-sample latched severity rank (0 = none); same as ``step_alarm``."""
    out: list[AlarmTransition] = []
    t = seg.t
    n = t.size
    if n == 0:
        return out
    changed = np.diff(sev_rank, prepend=np.int8(0)) != 0
    changed |= seg.first & (sev_rank > 0)
    change = np.flatnonzero(changed)
    if change.size == 0:
        return out
    seg_of = np.searchsorted(seg.bounds, change, side="right") - 1
    hold = flap is not None and flap.hold_s > 0
    alarm_id: str | None = None
    cur = 0
    flapping = False
    raises: list[float] = []
    cur_seg = -1
    device = ""
    ch = change.tolist()
    segs = seg_of.tolist()
    for pos, i in enumerate(ch):
        sk = segs[pos]
        if sk != cur_seg:
            cur_seg, device = sk, seg.devices[sk]
            alarm_id, cur, flapping, raises = None, 0, False, []
        s = int(sev_rank[i])
        ti = float(t[i])
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
                out.append(AlarmTransition(alarm_id, device, rule, TransitionKind.RAISED, sev, ti, float(values[i])))
            elif s != cur:
                kind = TransitionKind.ESCALATED if s > cur else TransitionKind.DEESCALATED
                out.append(AlarmTransition(alarm_id, device, rule, kind, sev, ti, float(values[i])))
            cur = s
            continue
        if alarm_id is None:
            continue
        j = i
        if flapping and hold and flap is not None:
            nxt = ch[pos + 1] if pos + 1 < len(ch) else n
            nxt = min(nxt, int(seg.end[i]))
            j = int(np.searchsorted(t[i:nxt], ti + flap.hold_s, side="left")) + i
            if j >= nxt:
                continue  # re-raised (or history ended) before the hold elapsed: the alarm stays
        cleared = TransitionKind.CLEARED
        out.append(AlarmTransition(alarm_id, device, rule, cleared, _RANK_TO_SEV[cur], float(t[j]), float(values[j])))
        alarm_id = None
        cur = 0
    return out


def threshold_vector(c: Compiled, seg: Segs) -> list[AlarmTransition]:
    """A compiled threshold/tilt/battery rule over good samples of its devices (all with the same compiled form)."""
    value = seg.v + c.offset if c.offset else seg.v
    rank = np.zeros(seg.t.size, dtype=np.int8)
    for lv in c.levels:
        if c.above:
            on = latch_vector(seg, value >= lv.raise_at, value < lv.clear_at, lv.raise_after_s, lv.clear_after_s)
        else:
            on = latch_vector(seg, value <= lv.raise_at, value > lv.clear_at, lv.raise_after_s, lv.clear_after_s)
        np.maximum(rank, np.where(on, np.int8(lv.severity.rank), np.int8(0)), out=rank)
    return alarms_from_levels(seg, rank, value, rule=c.name, flap=c.flap)


def _rate_eval_points(seg: Segs, rule: RateRule) -> tuple[np.ndarray, np.ndarray]:
    """Indices where the live engine computes a slope, and each one's window start index."""
    t = seg.t
    n = t.size
    start = np.empty(n, dtype=np.int64)
    b = seg.bounds.tolist()
    for k in range(len(b) - 1):
        lo, hi = b[k], b[k + 1]
        start[lo:hi] = np.searchsorted(t[lo:hi], t[lo:hi] - rule.window_s, side="left") + lo
    enough = (np.arange(n) - start + 1) >= rule.min_points
    if rule.eval_every_s <= 0:
        idx = np.flatnonzero(enough)
        return idx, start[idx]
    # greedy "every eval_every_s": where consecutive candidates are already that far apart (the usual
    # case: samples sparser than eval_every_s) all are taken; only the other segments are walked
    cand = np.flatnonzero(enough)
    cand_seg = np.searchsorted(seg.bounds, cand, side="right") - 1
    close = (cand_seg[1:] == cand_seg[:-1]) & (t[cand[1:]] - t[cand[:-1]] < rule.eval_every_s)
    walk = set(cand_seg[1:][close].tolist())
    if not walk:
        return cand, start[cand]
    keep = ~np.isin(cand_seg, list(walk))
    pts: list[int] = cand[keep].tolist()
    for k in sorted(walk):
        lo, hi = b[k], b[k + 1]
        sub = np.flatnonzero(enough[lo:hi])
        tc = t[lo:hi][sub]
        nxt = np.searchsorted(tc, tc + rule.eval_every_s, side="left").tolist()
        j = 0
        cl = (sub + lo).tolist()
        while j < sub.size:
            pts.append(cl[j])
            j = nxt[j]
    idx = np.sort(np.asarray(pts, dtype=np.int64))
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
        if offs.size < 2:
            continue
        rows = start[sel][:, None] + offs[None, :]
        tt, vv = t[rows], v[rows]
        i, j = np.triu_indices(offs.size, 1)
        s = (vv[:, j] - vv[:, i]) / (tt[:, j] - tt[:, i])
        m = i.size
        if m % 2:
            slopes[sel] = np.partition(s, m // 2, axis=1)[:, m // 2]
        else:  # the mean of the two middle slopes, computed as np.median does
            part = np.partition(s, (m // 2 - 1, m // 2), axis=1)
            slopes[sel] = (part[:, m // 2 - 1] + part[:, m // 2]) / 2.0
    return slopes


def rate_vector(c: Compiled, seg: Segs) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, RateRule)
    value = seg.v + c.offset if c.offset else seg.v
    idx, start = _rate_eval_points(seg, rule)
    if idx.size == 0:
        return []
    slope_h = rate_slopes(seg.t, value, idx, start, rule.max_points) * 3600.0
    signed = slope_h if c.above else -slope_h
    sub = seg.select(np.isin(np.arange(seg.t.size), idx))
    with np.errstate(invalid="ignore"):
        raise_c = signed >= rule.rate_per_h
        clear_c = signed < rule.rate_per_h - rule.hysteresis_per_h
    on = latch_vector(sub, raise_c, clear_c, rule.raise_after_s, rule.clear_after_s)
    rank = np.where(on, np.int8(rule.severity.rank), np.int8(0)).astype(np.int8)
    return alarms_from_levels(sub, rank, slope_h, rule=c.name, flap=c.flap)


def staleness_vector(c: Compiled, seg: Segs, limits: dict[str, float], end: float) -> list[AlarmTransition]:
    """Silences longer than the limit between consecutive samples (and after the last one); ``seg.t`` = sample times."""
    rule = c.rule
    assert isinstance(rule, StalenessRule)
    t = seg.t
    if t.size == 0:
        return []
    nxt = np.append(t[1:], end)
    last = seg.end - 1 == np.arange(t.size)
    nxt[last] = end
    limit = np.repeat(np.asarray([limits[d] for d in seg.devices]), np.diff(seg.bounds))
    gaps = np.flatnonzero(nxt - t > limit)
    seg_of = (np.searchsorted(seg.bounds, gaps, side="right") - 1).tolist()
    out = []
    for k, sk in zip(gaps.tolist(), seg_of, strict=True):
        device = seg.devices[sk]
        raised = float(t[k]) + float(limit[k])
        aid = alarm_id_for(device, c.name, raised)
        out.append(AlarmTransition(aid, device, c.name, TransitionKind.RAISED, rule.severity, raised))
        if not last[k]:
            out.append(AlarmTransition(aid, device, c.name, TransitionKind.CLEARED, rule.severity, float(t[k + 1])))
    return out


def single_vector(
    c: Compiled, seg: Segs, cond: tuple[np.ndarray, np.ndarray], delays: tuple[float, float], values: np.ndarray
) -> list[AlarmTransition]:
    """A single-level condition evaluated at the samples of ``seg``: raise/clear arrays and their delays."""
    on = latch_vector(seg, cond[0], cond[1], delays[0], delays[1])
    rank = np.where(on, np.int8(c.severities[0].rank), np.int8(0)).astype(np.int8)
    return alarms_from_levels(seg, rank, values, rule=c.name, flap=c.flap)


def _consecutive(mask: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each sample, runs restarting at segment starts (0 where False)."""
    n = mask.size
    idx = np.arange(n)
    reset = np.where(~mask, idx, -1)
    reset = np.where(first & mask, idx - 1, reset)
    np.maximum.accumulate(reset, out=reset)
    return np.where(mask, idx - reset, 0)


def sensor_fault_vector(c: Compiled, seg: Segs, good: np.ndarray) -> list[AlarmTransition]:
    """Bad-reading runs and flatline, at every sample of the metric (as the live engine evaluates it)."""
    rule = c.rule
    assert isinstance(rule, SensorFaultRule)
    t = seg.t
    n = t.size
    if n == 0:
        return []
    bad_run = _consecutive(~good, seg.first)
    ok_run = _consecutive(good, seg.first)
    flat = np.zeros(n, dtype=bool)
    if rule.flatline_window_s is not None and good.any():
        gi = np.flatnonzero(good)
        gv = seg.v[gi]
        gt = t[gi]
        gfirst = np.ones(gi.size, dtype=bool)  # first good sample of its segment
        gseg = np.searchsorted(seg.bounds, gi, side="right") - 1
        gfirst[1:] = gseg[1:] != gseg[:-1]
        # greedy flat runs over good samples: a run restarts where the spread would exceed epsilon
        if rule.flatline_epsilon == 0.0:
            brk = gfirst.copy()
            brk[1:] |= gv[1:] != gv[:-1]
            run_start = np.where(brk, np.arange(gi.size), 0)
            np.maximum.accumulate(run_start, out=run_start)
        else:
            run_start = np.zeros(gi.size, dtype=np.int64)
            lo = hi = 0.0
            st = 0
            eps = rule.flatline_epsilon
            for k, (x, f) in enumerate(zip(gv.tolist(), gfirst.tolist(), strict=True)):
                if not f and max(hi, x) - min(lo, x) <= eps:
                    lo, hi = min(lo, x), max(hi, x)
                else:
                    st, lo, hi = k, x, x
                run_start[k] = st
        count = np.arange(gi.size) - run_start + 1
        fs_t = gt[run_start]
        # for every sample, the flat state of the last good sample at or before it in its segment
        last_good = np.where(good, np.arange(n), -1)
        np.maximum.accumulate(last_good, out=last_good)
        seg_start = seg.end - np.repeat(np.diff(seg.bounds), np.diff(seg.bounds))
        has = last_good >= seg_start
        pos = np.searchsorted(gi, np.where(has, last_good, 0))
        pos = np.minimum(pos, gi.size - 1)
        flat = has & (count[pos] >= rule.flatline_min_readings) & (t - fs_t[pos] >= rule.flatline_window_s)
    raise_c = (bad_run >= rule.bad_count) | flat
    clear_c = (ok_run >= rule.good_count) & ~flat
    return single_vector(c, seg, (raise_c, clear_c), (0.0, 0.0), seg.v)


def supply_voltage_vector(c: Compiled, seg: Segs) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, SupplyVoltageRule)
    v = seg.v
    raise_c = (v < rule.min_v) | (v > rule.max_v)
    clear_c = (v >= rule.min_v + rule.hysteresis_v) & (v <= rule.max_v - rule.hysteresis_v)
    return single_vector(c, seg, (raise_c, clear_c), (rule.raise_after_s, rule.clear_after_s), v)


def cover_vector(c: Compiled, seg: Segs) -> list[AlarmTransition]:
    rule = c.rule
    assert isinstance(rule, CoverOpenRule)
    is_open = seg.v >= 0.5
    return single_vector(c, seg, (is_open, ~is_open), (0.0, rule.clear_after_s), seg.v)


def sun_up_vector(lat: float, lon: float, t: np.ndarray, margin_s: float) -> np.ndarray:
    """:func:`rules.sun.sun_is_up` for many times: 1 up, 0 down, -1 twilight (one sun computation per day)."""
    shift = lon / 15.0 * 3600.0
    day = np.floor((t + shift) / 86400.0).astype(np.int64)
    out = np.empty(t.size, dtype=np.int8)
    for d in np.unique(day).tolist():
        sel = day == d
        rise, sset, polar_day = day_events(lat, lon, d)
        tt = t[sel]
        if rise is None or sset is None:
            out[sel] = 1 if polar_day else 0
            continue
        res = np.full(tt.size, -1, dtype=np.int8)
        res[(tt >= rise + margin_s) & (tt <= sset - margin_s)] = 1
        res[(tt < rise - margin_s) | (tt > sset + margin_s)] = 0
        out[sel] = res
    return out


@dataclass(slots=True)
class LampData:
    """Current and relay samples of lamps merged by (time, metric), one segment per lamp."""

    seg: Segs  # v = value of the sample
    which: np.ndarray  # 0 current, 1 relay
    good: np.ndarray
    infos: list[DeviceInfo]
    sun: dict[float, np.ndarray] = field(default_factory=dict)  # margin -> sun_up_vector of every sample


def lamp_data(parts: Sequence[tuple[DeviceInfo, dict[str, Series]]], ranges: Any) -> LampData:
    """All lamps' current and relay samples in one array, sorted by (lamp, time, current before relay)."""
    infos = [info for info, m in parts if any(m.get(n) is not None and m[n].t.size for n in ("current", "relay"))]
    by_id = {info.id: m for info, m in parts}
    cols: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for k, info in enumerate(infos):
        for rank, name in enumerate(("current", "relay")):
            ser = by_id[info.id].get(name)
            if ser is not None and ser.t.size:
                n = ser.t.size
                cols.append((np.full(n, k), ser.t, np.full(n, rank, dtype=np.int8), ser.v, ser.q))
    if not cols:
        empty = np.empty(0)
        none = Segs(empty, empty, np.zeros(1, dtype=np.int64), [])
        return LampData(none, empty.astype(np.int8), empty.astype(bool), [])
    segid, t, which, v, q = (np.concatenate([c[i] for c in cols]) for i in range(5))
    good = (q == int(Quality.GOOD)) & np.isfinite(v)
    for rank, name in enumerate(("current", "relay")):
        for lo, hi in ranges.get(name, ()):
            sel = which == rank
            if lo is not None:
                good &= ~sel | (v >= lo)
            if hi is not None:
                good &= ~sel | (v <= hi)
    order = np.lexsort((which, t, segid))
    counts = np.bincount(segid, minlength=len(infos))
    bounds = np.zeros(len(infos) + 1, dtype=np.int64)
    bounds[1:] = np.cumsum(counts)
    seg = Segs(t[order], v[order], bounds, [i.id for i in infos])
    return LampData(seg, which[order], good[order], infos)


def lamp_vector(c: Compiled, data: LampData) -> list[AlarmTransition]:
    """lampFailure / day-burning / dark at night, at every good relay or current sample."""
    rule = c.rule
    seg = data.seg
    t, val, which, good = seg.t, seg.v, data.which, data.good
    n = t.size
    if n == 0:
        return []
    idx = np.arange(n)
    seg_start = seg.end - np.repeat(np.diff(seg.bounds), np.diff(seg.bounds))
    last_cur = np.where(which == 0, idx, -1)
    np.maximum.accumulate(last_cur, out=last_cur)
    last_rel = np.where(which == 1, idx, -1)
    np.maximum.accumulate(last_rel, out=last_rel)
    amps_known = (last_cur >= seg_start) & good[np.maximum(last_cur, 0)]
    relay_known = (last_rel >= seg_start) & good[np.maximum(last_rel, 0)]
    amps = val[np.maximum(last_cur, 0)]
    relay_on = val[np.maximum(last_rel, 0)] >= 0.5
    if isinstance(rule, LampFailureRule):
        ev = good & amps_known & relay_known
        fail = relay_on & (amps < rule.min_current_a)
        sub = seg.select(ev)
        sub.v = amps[ev]
        return single_vector(c, sub, (fail[ev], ~fail[ev]), (rule.raise_after_s, rule.clear_after_s), amps[ev])
    assert isinstance(rule, LampDayBurningRule | LampDarkRule)
    if isinstance(rule, LampDayBurningRule):
        lit = np.where(amps_known, amps >= rule.on_current_a, relay_on)
    else:
        lit = np.where(relay_known, relay_on, amps >= rule.on_current_a)
    lit_known = amps_known | relay_known
    sun = data.sun.get(rule.margin_s)
    if sun is None:
        sun = data.sun[rule.margin_s] = np.full(n, -1, dtype=np.int8)
        b = seg.bounds.tolist()
        for k, info in enumerate(data.infos):
            if info.lat is not None and info.lon is not None:
                sun[b[k] : b[k + 1]] = sun_up_vector(info.lat, info.lon, t[b[k] : b[k + 1]], rule.margin_s)
    ev = good & lit_known & (sun >= 0)
    bad = lit & (sun == 1) if isinstance(rule, LampDayBurningRule) else ~lit & (sun == 0)
    sub = seg.select(ev)
    values = np.where(amps_known, amps, np.nan)[ev]
    return single_vector(c, sub, (bad[ev], ~bad[ev]), (rule.raise_after_s, rule.clear_after_s), values)


# ---------------------------------------------------------------- the core


def _good_mask(s: Series, ranges: Iterable[tuple[float | None, float | None]]) -> np.ndarray:
    good: np.ndarray = (s.q == int(Quality.GOOD)) & np.isfinite(s.v)
    for lo, hi in ranges:
        if lo is not None:
            good &= s.v >= lo
        if hi is not None:
            good &= s.v <= hi
    return good


def _segs_and_good(parts: Sequence[tuple[str, Series]], ranges: Any) -> tuple[Segs, np.ndarray]:
    """Devices' series of one metric as one array, and which samples are good (quality and range)."""
    seg = Segs.build([(d, s.t, s.v) for d, s in parts])
    joined = Series(seg.t, seg.v, np.concatenate([s.q for _d, s in parts if s.t.size]) if seg.t.size else np.empty(0))
    return seg, _good_mask(joined, ranges)


def _device_rules(plan: DevicePlan) -> list[Compiled]:
    seen: dict[str, Compiled] = {}
    for comps in plan.by_metric.values():
        for c in comps:
            seen.setdefault(c.name, c)
    return list(seen.values())


def _special_ids(rules: Sequence[Rule]) -> set[str]:
    out: set[str] = set()
    for r in rules:
        out.update(r.applies_to.devices, r.applies_to.exclude, getattr(r, "overrides", {}).keys())
    return out


def _group_key(c: Compiled) -> tuple[Any, ...]:
    """Devices whose compiled rule is identical (no per-device override) are evaluated as one array."""
    return (c.name, c.kind, c.levels, c.above, c.offset, c.flap)


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
    by_device: dict[str, dict[str, Series]] = defaultdict(dict)
    for (device, metric), s in history.series.items():
        by_device[device][metric] = s
    events_by_device: dict[str, list[Event]] = defaultdict(list)
    for ev in history.events:
        events_by_device[ev.device].append(ev)
    out: list[AlarmTransition] = []
    # phase 1: per device, sort its series into jobs of identical compiled rules
    # jobs: (compiled rule, valid ranges of its metric) -> the devices' (id, series)
    plain: dict[tuple[Any, ...], tuple[Compiled, Any, list[tuple[str, Series]]]] = {}
    faults: dict[tuple[Any, ...], tuple[Compiled, Any, list[tuple[str, Series]]]] = {}
    lamps: dict[tuple[Any, ...], tuple[Compiled, Any, list[tuple[DeviceInfo, dict[str, Series]]]]] = {}
    stale: dict[tuple[Any, ...], tuple[Compiled, list[tuple[str, np.ndarray, np.ndarray]], dict[str, float]]] = {}
    devices = sorted(set(by_device) | set(events_by_device))
    special = _special_ids(full.rules)
    plans: dict[Any, DevicePlan] = {}
    for device in devices:
        info = history.registry.get(device) or DeviceInfo(id=device, profile="", kind="")
        # a plan depends on kind and tags unless a rule names the device (selector or override)
        sig = info.id if info.id in special else (info.kind, info.tags)
        plan = plans.get(sig) or plans.setdefault(sig, full.plan(info))
        metrics = by_device.get(device, {})
        events = events_by_device.get(device, [])
        scalar_rules: list[Rule] = [c.rule for c in plan.wim]
        for c in _device_rules(plan):
            rule = c.rule
            if isinstance(rule, LampFailureRule | LampDayBurningRule | LampDarkRule):
                rng = {m: tuple(plan.ranges.get(m, ())) for m in ("current", "relay")}
                lkey = (*_group_key(c), tuple(rng.items()))
                lamps.setdefault(lkey, (c, rng, []))[2].append((info, metrics))
                continue
            if isinstance(rule, CoverOpenRule) and any(e.kind in rule.event_kinds for e in events):
                scalar_rules.append(rule)
                continue
            metric = rule_metrics(rule)[0]
            ser = metrics.get(metric)
            if ser is None or ser.t.size == 0:
                continue
            ranges = tuple(plan.ranges.get(metric, ()))
            jobs_of = faults if isinstance(rule, SensorFaultRule) else plain
            jobs_of.setdefault((*_group_key(c), ranges), (c, ranges, []))[2].append((device, ser))
        if plan.staleness and metrics:
            seen = np.unique(np.concatenate([m.t for m in metrics.values()]))
            for c in plan.staleness:
                rule = c.rule
                assert isinstance(rule, StalenessRule)
                job2 = stale.setdefault(_group_key(c), (c, [], {}))
                job2[1].append((device, seen, seen))
                job2[2][device] = max(rule.factor * (info.interval_s or rule.default_interval_s), rule.min_silence_s)
        if scalar_rules:
            out.extend(_scalar_device(RuleSet(scalar_rules), info, metrics, events, end))
    # phase 2: one vectorised pass per rule (per group of identical compiled rules)
    jobs = len(plain) + len(faults) + len(lamps) + len(stale)
    done = 0

    def job_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / max(jobs, 1))

    for c, ranges, sparts in plain.values():
        seg, good = _segs_and_good(sparts, ranges)
        if not good.all():
            seg = seg.select(good)  # no threshold, rate or lamp alarm from a bad reading
        if isinstance(c.rule, RateRule):
            out.extend(rate_vector(c, seg))
        elif isinstance(c.rule, SupplyVoltageRule):
            out.extend(supply_voltage_vector(c, seg))
        elif isinstance(c.rule, CoverOpenRule):
            out.extend(cover_vector(c, seg))
        else:
            out.extend(threshold_vector(c, seg))
        job_done()
    for c, ranges, sparts in faults.values():
        seg, good = _segs_and_good(sparts, ranges)
        out.extend(sensor_fault_vector(c, seg, good))
        job_done()
    lamp_cache: dict[Any, LampData] = {}
    for c, rng, lparts in lamps.values():
        ckey = (tuple(rng.items()), tuple(info.id for info, _m in lparts))
        data = lamp_cache.get(ckey)
        if data is None:
            data = lamp_cache[ckey] = lamp_data(lparts, rng)
        out.extend(lamp_vector(c, data))
        job_done()
    for c, parts, limits in stale.values():
        out.extend(staleness_vector(c, Segs.build(parts), limits, end))
        job_done()
    if progress is not None and jobs == 0:
        progress(1.0)
    # stable, by time and device only: one device's simultaneous transitions keep the order the live
    # evaluator gave them (a vehicle's gross then axle overload), and the first one opens the case
    out.sort(key=lambda tr: (tr.t, tr.device))
    stats = summarize(out, end)
    counts = (case_policy or default_case_policy)(out, history.registry)
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
    st = EngineState(registry={info.id: info}, next_tick_t=float("inf"), checkpoints=False)  # never persisted
    st, out = evaluate(rs, st, (x[2] for x in items), 0.0)
    tick(rs, st, end, out)
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
