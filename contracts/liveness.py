"""Is a device online, and if not, how do we know? (pure; time passed in)

Two independent signals: the gateway's retained status (its birth, or the last will / goodbye
saying ``offline``) and staleness (no telemetry and no status heartbeat for several intervals).
The last will alone is not enough on a broker cluster: when the node holding the gateway's
connection dies, no will is published and the retained status keeps saying ``online``
(docs/scaleout.md). So a device whose status says online but that has been silent too long is
``offline`` with reason ``stale``; one whose status says offline has reason ``will``.
"""

from __future__ import annotations

from typing import Literal

OfflineReason = Literal["will", "stale"]

#: silent for this many sampling intervals counts as offline
STALE_INTERVALS = 3
#: never call a device stale sooner than this (three missed 60 s status heartbeats)
MIN_STALE_S = 180.0


def liveness(
    status_online: bool,
    last_seen: float | None,
    heartbeat_at: float | None,
    interval_s: float | None,
    now: float,
    *,
    stale_intervals: int = STALE_INTERVALS,
    min_stale_s: float = MIN_STALE_S,
) -> tuple[bool, OfflineReason | None]:
    """(online, why offline): ``last_seen`` is the newest sample, ``heartbeat_at`` the newest status."""
    if not status_online:
        return False, "will"
    heard = max((t for t in (last_seen, heartbeat_at) if t is not None), default=None)
    if heard is None:
        return True, None
    limit_s = max(stale_intervals * (interval_s or 0.0), min_stale_s)
    if now - heard > limit_s:
        return False, "stale"
    return True, None
