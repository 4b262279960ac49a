"""Pure batching decisions and encoding: outbox rows -> (topic, payload) with (boot, seq).

Nothing here touches the disk, the clock or the network: the publisher passes ``now`` and the
outbox state in and gets decisions out, so the rules are unit-tested exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from contracts import payloads, topics
from contracts.reading import Event, Reading
from edge_agent.outbox import BatchHeader, RecordClass

#: the longest the ack timeout grows to
ACK_TIMEOUT_CAP_S = 600.0


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


@dataclass(slots=True)
class AckTimer:
    """How long to wait for the cloud's ack before resending: RFC 6298's retransmission timer over batches.

    Why: a fixed timeout that snaps back to its base on any progress resends the whole window on every
    cycle once the cloud runs behind it (the city bench at 1 M devices with the ingester 3 min behind: 1.35 M
    duplicate readings on 2.76 M), adding load to the very stage that is late. So the timeout follows the
    measured ack delay (``srtt + 4 * rttvar``, never below the configured ``base_s``), doubles on each
    expiry up to ``cap_s``, and keeps that backed-off value until a batch sent only once is acked (Karn's
    rule: the ack of a resent batch does not say which send it answers).
    """

    base_s: float
    cap_s: float = ACK_TIMEOUT_CAP_S
    srtt_s: float | None = None
    rttvar_s: float = 0.0
    timeout_s: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={self.base_s} cap_s={self.cap_s}")
        self.timeout_s = self.base_s

    def acked(self, delays_s: Iterable[float]) -> None:
        """The watermark advanced; ``delays_s``: send-to-ack time of each newly acked batch that was sent once."""
        sampled = False
        for r in delays_s:
            if self.srtt_s is None:
                self.srtt_s, self.rttvar_s = r, r / 2
            else:
                self.rttvar_s = 0.75 * self.rttvar_s + 0.25 * abs(self.srtt_s - r)
                self.srtt_s = 0.875 * self.srtt_s + 0.125 * r
            sampled = True
        if sampled:
            assert self.srtt_s is not None
            self.timeout_s = min(max(self.base_s, self.srtt_s + 4 * self.rttvar_s), self.cap_s)

    def expired(self) -> None:
        """No progress for ``timeout_s``: the batches are resent, and the next wait is twice as long."""
        self.timeout_s = min(self.timeout_s * 2, self.cap_s)
