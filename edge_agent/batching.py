"""Pure batching decisions and encoding: outbox rows -> (topic, payload) with (boot, seq).

Nothing here touches the disk, the clock or the network: the publisher passes ``now`` and the
outbox state in and gets decisions out, so the rules are unit-tested exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts import payloads, topics
from contracts.reading import Event, Reading
from edge_agent.outbox import BatchHeader, RecordClass


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_records: int
    max_bytes: int
    linger_s: float
    window: int  # formed-but-unacked batches allowed at once


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded message, ready for ``publish``."""

    header: BatchHeader
    topic: str
    payload: bytes


def should_form(
    unbatched: int,
    unbatched_since: float | None,
    unacked: int,
    limits: BatchLimits,
    now: float,
) -> bool:
    """Form a batch now? Only inside the window, and when it is full or has lingered long enough.

    ``unbatched_since`` is when the oldest unbatched record arrived (``None`` if none; ``0.0``
    after a restart: old rows go out at once).
    """
    if unbatched <= 0 or unacked >= limits.window:
        return False
    if unbatched >= limits.max_records:
        return True
    return unbatched_since is not None and now - unbatched_since >= limits.linger_s


def linger_deadline(unbatched_since: float | None, limits: BatchLimits) -> float | None:
    """When a partial batch becomes due (for the publisher's wake-up timer)."""
    return None if unbatched_since is None else unbatched_since + limits.linger_s


def encode_batch(gw: str, h: BatchHeader, readings: Sequence[Reading], events: Sequence[Event]) -> Outgoing:
    """Encode a batch with the (boot, seq) it was given when formed: a resend is byte-identical."""
    if h.cls is RecordClass.TELEMETRY:
        return Outgoing(h, topics.telemetry(gw), payloads.encode_telemetry(gw, h.boot, h.seq, readings))
    return Outgoing(h, topics.events(gw), payloads.encode_events(gw, h.boot, h.seq, events))


def ack_timed_out(oldest_sent_at: float | None, last_ack_progress: float, ack_timeout_s: float, now: float) -> bool:
    """True when batches are outstanding and the cloud has not advanced the watermark for too long."""
    if oldest_sent_at is None:
        return False
    return now - max(oldest_sent_at, last_ack_progress) >= ack_timeout_s


