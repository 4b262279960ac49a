"""Simulated time: ``t`` seconds since scenario start, running ``speed`` times the wall clock.

Speed 0 freezes time so tests step it with :meth:`SimClock.advance`; changing the speed
re-bases the clock so ``t`` never jumps.

Device clocks (WIM record times, the lamp schedule) are *wall* clocks: :meth:`unix_at` maps
simulated time back to Unix time at the current speed, so a vehicle that crossed at sim time
``t`` carries a timestamp near the real time it was served, not one running ``speed`` times
ahead (which the cloud would quarantine as clock skew). With speed 0 (tests) the mapping is
one to one, so advancing the clock advances device time as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    def __init__(
        self,
        speed: float = 1.0,
        start_unix: float | None = None,
        t0: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._monotonic = monotonic
        self._speed = speed
        self._base_t = t0
        self._base_mono = monotonic()
        self.start_unix = time.time() if start_unix is None else start_unix
        # anchor of the sim -> Unix mapping: (sim t, its Unix time), moved on every speed change
        self._anchor = (t0, self.start_unix + t0)

    def now(self) -> float:
        """Simulated seconds since scenario start."""
        return self._base_t + (self._monotonic() - self._base_mono) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        self.set_speed(value)

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        t = self.now()
        self._anchor = (t, self.unix_at(t))
        self._base_t = t
        self._base_mono = self._monotonic()
        self._speed = speed

    def advance(self, dt_s: float) -> float:
        """Jump simulated time forward by ``dt_s``; returns the new time."""
        if dt_s < 0:
            raise ValueError("simulated time does not run backwards")
        if self._speed > 0:
            # the jump happens in no wall time: keep the Unix time of "now" where it is
            t = self.now()
            self._anchor = (t + dt_s, self.unix_at(t))
        self._base_t += dt_s
        return self.now()

    def set(self, t: float) -> None:
        """Put the clock at simulated time ``t`` (tests; going backwards is allowed here)."""
        self._base_t = t
        self._base_mono = self._monotonic()

    def unix_at(self, t: float) -> float:
        """The device (wall) time of simulated time ``t`` at the current speed."""
        t_a, unix_a = self._anchor
        scale = self._speed if self._speed > 0 else 1.0
        return unix_a + (t - t_a) / scale

    def unix(self) -> float:
        """The device (wall) time now."""
        return self.unix_at(self.now())

    def wall_delay_s(self, sim_dt_s: float) -> float:
        """Wall seconds until ``sim_dt_s`` of simulated time pass (inf when frozen)."""
        return sim_dt_s / self._speed if self._speed > 0 else float("inf")
