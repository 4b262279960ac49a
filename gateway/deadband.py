"""Report by exception: which of a device's readings to publish, per metric (pure, stateful per device).

Every reading is still sampled and evaluated at the edge (storm detection sees them all); only
publication is thinned. A reading is published when

* its metric has no deadband, it is the first one, or its quality changed (both count as a
  move, below);
* it moved beyond the band from the last published value (``abs`` in the metric's unit,
  ``pct`` % of the last published value; either one given suffices). The last suppressed
  reading goes out just before it, so the cloud sees where the value still was;
* the value is *active*: it left the band less than ``hold_s`` ago. While a value moves (a
  storm rising) every sample is published, so the rules see full data exactly when they can
  change state; ``hold_s`` is longer than the rules' raise delays (road-water-depth: 60 s);
* ``heartbeat_s`` passed since the last published one (keep it below the cloud's staleness
  window: device-offline raises after 300 s of silence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from contracts.reading import Reading
from gateway.registers import Deadband

DEFAULT_HOLD_S = 600.0


@dataclass(slots=True)
class _Last:
    published: Reading
    hold_until: float
    suppressed: Reading | None = None


class ReportByException:
    """The publish decision for one device; ``select`` keeps per-metric state between polls."""

    def __init__(self, deadbands: Mapping[str, Deadband], hold_s: float = DEFAULT_HOLD_S) -> None:
        self.deadbands = dict(deadbands)
        self.hold_s = hold_s
        self._last: dict[str, _Last] = {}
        self.sampled = 0
        self.published = 0

    def select(self, readings: Iterable[Reading]) -> list[Reading]:
        out: list[Reading] = []
        for r in readings:
            self.sampled += 1
            out += self._decide(r)
        self.published += len(out)
        return out

    def _decide(self, r: Reading) -> list[Reading]:
        band = self.deadbands.get(r.metric)
        if band is None:
            return [r]
        last = self._last.get(r.metric)
        if last is None or r.quality != last.published.quality:
            self._last[r.metric] = _Last(r, r.ts + self.hold_s)  # a start or a new quality counts as a move
            return [r]
        moved = _outside(band, last.published.value, r.value)
        due = band.heartbeat_s is not None and r.ts - last.published.ts >= band.heartbeat_s
        if not (moved or due or r.ts < last.hold_until):
            last.suppressed = r
            return []
        out = [last.suppressed] if moved and last.suppressed is not None else []
        last.published, last.suppressed = r, None
        if moved:
            last.hold_until = r.ts + self.hold_s
        return [*out, r]


def _outside(band: Deadband, ref: float, value: float) -> bool:
    delta = abs(value - ref)
    if band.abs is not None and delta > band.abs:
        return True
    return band.pct is not None and delta > abs(ref) * band.pct / 100.0


def for_device(profile_deadbands: Iterable[tuple[str, Deadband]],
               overrides: Mapping[str, Deadband]) -> ReportByException | None:
    """The device's publish decision: the profile's deadbands, then the gateway config's; None if none."""
    merged = {**dict(profile_deadbands), **overrides}
    return ReportByException(merged) if merged else None
