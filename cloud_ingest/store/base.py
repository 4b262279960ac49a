"""The time-series store interface: one Protocol, three backends, one contract test suite.

Open a store with :func:`cloud_ingest.store.open_store`::

    open_store("sqlite:///data/citywatch.db")              # embedded default (WAL, shared by processes)
    open_store("postgresql://user@host:5432/citywatch")    # PostgreSQL, TimescaleDB when present
    open_store("influxdb://token@host:8086/org/bucket")    # InfluxDB 2 (line protocol)
    open_store("influxdb1://host:8086/citywatch")          # InfluxDB 1.x (line protocol, InfluxQL)

Every method is synchronous and thread-safe (one internal lock per store); async callers
use ``await asyncio.to_thread(store.method, ...)``. Times are Unix seconds (float, UTC);
a reading's identity is ``(device, metric, ts_ms(ts))``, so writing it twice is a no-op.

Signatures (``Store`` below is the Protocol):

- ``write(batch: WriteBatch) -> WriteResult`` — one transaction: readings (as ``Reading`` objects
  or as identity-row tuples in ``batch.rows``), events, dead
  letters, committed ``(gw, boot, seq)`` marks and status updates; idempotent.
- ``latest(device: str | None = None) -> list[Reading]`` — newest reading per (device, metric).
- ``range(device, metric, start, end, bucket_s=None) -> list[Point]`` — raw points, or per
  epoch-aligned bucket of ``bucket_s`` seconds avg/min/max/count; ordered by ts. A bucket that is
  a multiple of a minute (an hour) is served from the 1-minute (1-hour) rollups, so it answers
  after raw data expired (SQL stores; InfluxDB 1.x once the raw retention policy dropped them).
- ``iter_readings(start, end, devices=None, chunk=50_000) -> Iterator[ReadingChunk]`` — all
  readings with ``start <= ts < end`` ordered by (ts, device, metric), as numpy column arrays,
  hot and compacted alike (:mod:`cloud_ingest.store.lifecycle`).
- ``events(start, end, device=None, kind=None, limit=1000) -> list[Event]`` — discrete records
  (WIM vehicles, cover interrupts) with ``start <= ts < end``, oldest first.
- ``devices() -> list[DeviceState]``, ``gateways() -> list[GatewayState]`` — registry learnt
  from retained status (birth / last-will) messages, with online state and last seen.
- ``dead_letters(limit=100, since=None) -> list[DeadLetter]``, ``dead_letter_count() -> int``.
- ``gaps(gw=None, open_only=False) -> list[Gap]``; ``record_gap(gap)``, ``close_gaps(gw, boot, upto_seq, now)``.
- ``committed_seqs(gw, boot, after_seq) -> list[int]`` — seqs committed above a watermark,
  for the ack watermark (shared by all ingesters through the store, so shared subscriptions work).
- ``close()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from contracts.payloads import Status
from contracts.reading import DeviceInfo, Event, Reading


@dataclass(frozen=True, slots=True)
class SeqMark:
    """A (gw, boot, seq) message that is committed, whether stored or dead-lettered."""

    gw: str
    boot: str
    seq: int
    kind: str  # telemetry | events
    n: int  # records in the message (0 when dead-lettered)


@dataclass(frozen=True, slots=True)
class DeadLetterIn:
    """A payload that failed validation: kept with its topic, raw bytes and reason."""

    received_at: float
    topic: str
    gw: str | None
    reason: str
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    gw: str
    status: Status
    received_at: float


@dataclass(slots=True)
class WriteBatch:
    """Everything one ingest micro-batch commits in a single transaction."""

    readings: list[Reading] = field(default_factory=list)
    #: fast path, written exactly like ``readings``: (device, metric, ts_ms, value, quality) tuples
    rows: list[tuple[str, str, int, float, int]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)  # (gw, event)
    dead_letters: list[DeadLetterIn] = field(default_factory=list)
    seqs: list[SeqMark] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.readings)
            + len(self.rows)
            + len(self.events)
            + len(self.dead_letters)
            + len(self.seqs)
            + len(self.statuses)
        )


@dataclass(frozen=True, slots=True)
class WriteResult:
    readings_inserted: int
    readings_duplicate: int
    events_inserted: int
    events_duplicate: int
    dead_lettered: int


class Point(NamedTuple):
    """One point of a range query; raw rows have ``min == max == value`` and ``n == 1``."""

    ts: float
    value: float  # average over the bucket
    min: float
    max: float
    n: int


@dataclass(frozen=True, slots=True)
class ReadingChunk:
    """Column arrays of readings (``iter_readings``), ordered by (ts, device, metric)."""

    device: npt.NDArray[np.object_]
    metric: npt.NDArray[np.object_]
    ts: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.ts)

    def readings(self) -> Iterator[Reading]:
        """Row view, for callers that want :class:`Reading` objects (slower than the arrays)."""
        from contracts.metrics import METRIC_UNITS
        from contracts.reading import Quality

        for d, m, t, v, q in zip(self.device, self.metric, self.ts, self.value, self.quality, strict=True):
            yield Reading(str(d), str(m), float(t), float(v), METRIC_UNITS.get(str(m), ""), Quality(int(q)))


def make_chunk(rows: Sequence[tuple[str, str, float, float, int]]) -> ReadingChunk:
    """Build a chunk from (device, metric, ts, value, quality) rows."""
    n = len(rows)
    device = np.empty(n, dtype=object)
    metric = np.empty(n, dtype=object)
    if n:
        cols = list(zip(*rows, strict=True))
        device[:] = cols[0]
        metric[:] = cols[1]
        ts = np.fromiter(cols[2], dtype=np.float64, count=n)
        value = np.fromiter(cols[3], dtype=np.float64, count=n)
        quality = np.fromiter(cols[4], dtype=np.int8, count=n)
    else:
        ts = np.empty(0, dtype=np.float64)
        value = np.empty(0, dtype=np.float64)
        quality = np.empty(0, dtype=np.int8)
    return ReadingChunk(device, metric, ts, value, quality)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device from the registry: its birth-message description plus live state."""

    info: DeviceInfo
    gateway: str
    online: bool  # its gateway's last status was ``online``
    last_seen: float | None  # newest stored sample time, None if it never reported
    updated_at: float  # when the registry entry was last refreshed from a status message


@dataclass(frozen=True, slots=True)
class GatewayState:
    gw: str
    online: bool
    boot: str
    agent: str | None
    health: dict[str, Any]
    updated_at: float  # when the last status message was received
    devices: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_at: float
    topic: str
    gw: str | None
    reason: str
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing seqs ``first_seq..last_seq`` of a (gw, boot): data lost in transit, not a silent device."""

    gw: str
    boot: str
    first_seq: int
    last_seq: int
    detected_at: float
    filled_at: float | None = None


@runtime_checkable
class Store(Protocol):
    """The time-series store. See the module docstring for the contract of each method."""

    url: str

    def write(self, batch: WriteBatch) -> WriteResult: ...

    def latest(self, device: str | None = None) -> list[Reading]: ...

    def range(
        self, device: str, metric: str, start: float, end: float, bucket_s: float | None = None
    ) -> list[Point]: ...

    def iter_readings(
        self, start: float, end: float, devices: Sequence[str] | None = None, chunk: int = 50_000
    ) -> Iterator[ReadingChunk]: ...

    def events(
        self, start: float, end: float, device: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Event]: ...

    def devices(self) -> list[DeviceState]: ...

    def gateways(self) -> list[GatewayState]: ...

    def dead_letters(self, limit: int = 100, since: float | None = None) -> list[DeadLetter]: ...

    def dead_letter_count(self) -> int: ...

    def gaps(self, gw: str | None = None, open_only: bool = False) -> list[Gap]: ...

    def record_gap(self, gap: Gap) -> None: ...

    def close_gaps(self, gw: str, boot: str, upto_seq: int, now: float) -> None: ...

    def committed_seqs(self, gw: str, boot: str, after_seq: int) -> list[int]: ...

    def close(self) -> None: ...
