"""Adaptive sampling: a gauge polls faster while the water rises, and slows down with hysteresis.

Pure: :func:`observe` takes the state, one depth sample and its sample time and returns the new
state. The bus budget is respected by construction: a device only ever switches between its
two configured intervals, and ``citywatch plan``/``agent --check`` refuse a config whose buses
are overbooked with *every* device at its storm interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from edge_agent.config import StormConfig


@dataclass(frozen=True, slots=True)
class StormState:
    active: bool = False  # automatic decision
    forced: bool | None = None  # set by command: True/False override, None = automatic
    since: float = 0.0  # sample time the automatic state last changed
    samples: tuple[tuple[float, float], ...] = ()  # (ts, depth) within the rate window
    reason: str = ""

    @property
    def storm(self) -> bool:
        return self.forced if self.forced is not None else self.active


#: samples kept for the rate; older ones inside the window are thinned out (bounded CPU per poll)
MAX_SAMPLES = 128


def rise_rate_m_per_h(samples: Sequence[tuple[float, float]], min_span_s: float = 0.0) -> float | None:
    """Least-squares slope of depth over time, in m/h; None with fewer than 2 samples or too short a span."""
    n = len(samples)
    if n < 2 or samples[-1][0] - samples[0][0] < min_span_s:
        return None
    mt = sum(t for t, _ in samples) / n
    md = sum(d for _, d in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var <= 0:
        return None
    cov = sum((t - mt) * (d - md) for t, d in samples)
    return cov / var * 3600.0


def observe(state: StormState, ts: float, depth: float, cfg: StormConfig) -> StormState:
    """Feed one good depth sample; returns the new state (``since``/``reason`` set on a change)."""
    window = (*(s for s in state.samples if ts - s[0] <= cfg.rate_window_s and s[0] < ts), (ts, depth))
    if len(window) > MAX_SAMPLES:  # drop every other old sample, keep the newest half as is
        half = MAX_SAMPLES // 2
        window = (*window[:-half:2], *window[-half:])
    rate = rise_rate_m_per_h(window, cfg.rate_min_span_s)
    new = replace(state, samples=window)
    if not cfg.enabled:
        return new
    deep = cfg.enter_depth_m is not None and depth >= cfg.enter_depth_m
    rising = cfg.enter_rise_m_per_h is not None and rate is not None and rate >= cfg.enter_rise_m_per_h
    if not state.active:
        if deep or rising:
            why = f"depth {depth:.3f} m" if deep else f"rising {rate:.3f} m/h"
            return replace(new, active=True, since=ts, reason=why)
        return new
    shallow = cfg.exit_depth_m is None or depth < cfg.exit_depth_m
    calm = cfg.exit_rise_m_per_h is None or rate is None or rate < cfg.exit_rise_m_per_h
    if shallow and calm and ts - state.since >= cfg.min_hold_s:
        return replace(new, active=False, since=ts, reason=f"calm: depth {depth:.3f} m")
    return new


def force(state: StormState, on: bool | None) -> StormState:
    """Command override: True/False pins the mode, None returns to automatic."""
    return replace(state, forced=on)


def interval_s(state: StormState, normal_s: float, storm_s: float | None) -> float:
    """The poll interval the device should use now (devices without a storm interval never change)."""
    if storm_s is None:
        return normal_s
    return storm_s if state.storm else normal_s
