"""Ack watermark and seq-gap bookkeeping: pure state, time passed in.

Per ``(gw, boot)`` the watermark is the highest ``seq`` such that every seq from the boot's
first (``first_seq``, default 1) up to it is committed (stored or dead-lettered). The edge
deletes its outbox up to it. Seqs committed above the watermark leave holes; a hole that
persists longer than ``grace_s`` (redelivery and shared subscriptions reorder messages) is
a *gap*: data lost in transit, which is different from a device that fell silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cloud_ingest.store.base import Gap

Key = tuple[str, str]  # (gw, boot)


def advance(watermark: int, committed: Iterable[int]) -> int:
    """Highest contiguous seq reachable from ``watermark`` through ``committed``."""
    for s in sorted(set(committed)):
        if s == watermark + 1:
            watermark = s
        elif s > watermark + 1:
            break
    return watermark


def holes(watermark: int, committed: Iterable[int]) -> list[tuple[int, int]]:
    """Missing ranges ``(first, last)`` between the watermark and the highest committed seq."""
    out: list[tuple[int, int]] = []
    prev = watermark
    for s in sorted(set(committed)):
        if s > prev + 1:
            out.append((prev + 1, s - 1))
        prev = max(prev, s)
    return out


@dataclass
class AckTracker:
    """Watermarks, pending holes and recent boots per gateway (in-memory, rebuilt from the store)."""

    first_seq: int = 1
    grace_s: float = 30.0
    boots_kept: int = 4
    wm: dict[Key, int] = field(default_factory=dict)
    above: dict[Key, set[int]] = field(default_factory=dict)  # committed seqs above the watermark
    hole_since: dict[tuple[str, str, int], float] = field(default_factory=dict)
    recorded: dict[tuple[str, str, int], int] = field(default_factory=dict)  # gap start -> last recorded end
    boots: dict[str, list[str]] = field(default_factory=dict)

    def known(self, key: Key) -> bool:
        return key in self.wm

    def load(self, key: Key, committed: Iterable[int]) -> None:
        """First sight of a (gw, boot) in this process: start from what the store has committed."""
        self.wm[key] = self.first_seq - 1
        self.above[key] = set()
        gw, boot = key
        seen = self.boots.setdefault(gw, [])
        if boot not in seen:
            seen.append(boot)
            del seen[: -self.boots_kept]
        self.add(key, committed)

    def add(self, key: Key, committed: Iterable[int]) -> bool:
        """Add committed seqs; True when the watermark moved."""
        old = self.wm[key]
        pool = self.above[key]
        pool.update(s for s in committed if s > old)
        new = advance(old, pool)
        if new != old:
            self.wm[key] = new
            self.above[key] = {s for s in pool if s > new}
        return new != old

    def has_holes(self, key: Key) -> bool:
        return bool(self.above.get(key))

    def check_gaps(self, now: float) -> tuple[list[Gap], list[tuple[str, str, int]]]:
        """(gaps to record, (gw, boot, watermark) whose recorded gaps are now filled)."""
        new: list[Gap] = []
        current: set[tuple[str, str, int]] = set()
        for key, pool in self.above.items():
            gw, boot = key
            for first, last in holes(self.wm[key], pool):
                hk = (gw, boot, first)
                current.add(hk)
                since = self.hole_since.setdefault(hk, now)
                if now - since >= self.grace_s and self.recorded.get(hk, -1) < last:
                    self.recorded[hk] = last
                    new.append(Gap(gw, boot, first, last, since))
        for hk in list(self.hole_since):
            if hk not in current:
                del self.hole_since[hk]
        filled: list[tuple[str, str, int]] = []
        for hk in list(self.recorded):
            gw, boot, _first = hk
            if hk not in current and self.wm.get((gw, boot), -1) >= self.recorded[hk]:
                del self.recorded[hk]
                filled.append((gw, boot, self.wm[(gw, boot)]))
        return new, filled

    def ack_payload(self, gw: str) -> dict[str, int]:
        """Watermarks of the gateway's recent boots that have committed anything."""
        return {b: self.wm[(gw, b)] for b in self.boots.get(gw, []) if self.wm[(gw, b)] >= self.first_seq}
