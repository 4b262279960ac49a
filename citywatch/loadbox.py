"""The load generator's outbox: the edge outbox's batch/ack/resend discipline, kept in memory.

The agent's :class:`edge_agent.outbox.Outbox` commits every append to SQLite with an fsync, so a
sample survives a crash of the gateway. A load generator has nothing to survive: if it dies, the
run is void. What it must keep is what the cloud sees and what the ledger counts, and that is
the same here: records in append order, batches of the oldest unbatched records of one class with
the next seq of the boot, a batch's records and (boot, seq) fixed until the cloud's retained ack
watermark covers it (a resend is byte-identical), deletion only by that watermark, the byte
budget with the policy ``drop_oldest_telemetry_first`` (counted), and the ledger ``appended =
present + acked + dropped`` per class. The real :class:`edge_agent.uplink.Uplink` drives it
(:class:`LoadUplink` only takes a batch's message from here instead of re-encoding it), so
window, linger, resends, ack timeouts and relabelling are the edge's own code.

Readings are held already encoded, as :data:`citywatch.loadplan.Chunk` s (one device's sample),
so a reading costs neither a ``Reading`` object, an SQL row, nor a dict in the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import orjson

from contracts import payloads, topics
from contracts.reading import Event, Reading
from edge_agent.batching import Outgoing
from edge_agent.outbox import (
    POLICIES,
    AppendResult,
    BatchHeader,
    ClassLedger,
    Ledger,
    OverflowPolicy,
    RecordClass,
    event_body,
    event_nbytes,
    reading_nbytes,
)
from edge_agent.uplink import Uplink

from .loadplan import Chunk

T = TypeVar("T", Chunk, Event)

#: a gateway id the encoder accepts, for rendering chunks back into readings
_ANY_GW = "gw-loadbox"


def chunks_of(readings: Sequence[Reading]) -> list[Chunk]:
    """Encode readings as chunks, one per device sample (a run of one device's readings with one sample
    time), as :func:`citywatch.loadplan.chunks_at` makes them."""
    out: list[Chunk] = []
    i = 0
    while i < len(readings):
        j = i + 1
        while j < len(readings) and readings[j].device == readings[i].device and readings[j].ts == readings[i].ts:
            j += 1
        run = readings[i:j]
        raw = payloads.encode_telemetry(_ANY_GW, "0" * 12, 1, run)
        body = raw[raw.index(b'"e":[') + 5:-2]  # the envelope's keys come first, "e" last
        out.append((len(run), sum(reading_nbytes(r) for r in run), body))
        i = j
    return out


class _Queue(Generic[T]):
    """One class's rows as items (a chunk of readings, or one event): the unbatched tail, the counters."""

    __slots__ = ("acked", "appended", "dropped", "head", "items", "ns", "present", "present_bytes", "sizes",
                 "unbatched", "unbatched_bytes", "upto")

    def __init__(self) -> None:
        self.items: list[T] = []  # unbatched items are items[head:]
        self.ns: list[int] = []  # records per item
        self.sizes: list[int] = []  # budget bytes per item
        self.head = 0
        self.upto = 0  # id of the last batched record (record ids count appends from 1)
        self.appended = self.acked = self.dropped = 0
        self.present = self.present_bytes = self.unbatched = self.unbatched_bytes = 0

    def push(self, items: Sequence[T], ns: Sequence[int], sizes: Sequence[int]) -> None:
        self.items.extend(items)
        self.ns.extend(ns)
        self.sizes.extend(sizes)
        n, nbytes = sum(ns), sum(sizes)
        self.appended += n
        self.present += n
        self.present_bytes += nbytes
        self.unbatched += n
        self.unbatched_bytes += nbytes

    def take(self, k: int, n: int, nbytes: int, dropped: bool) -> list[T]:
        """Remove the ``k`` oldest unbatched items (``n`` records, ``nbytes``): batched, or dropped by the policy."""
        start = self.head
        items = self.items[start:start + k]
        self.head = start + k
        self.upto += n
        self.unbatched -= n
        self.unbatched_bytes -= nbytes
        if dropped:
            self.dropped += n
            self.present -= n
            self.present_bytes -= nbytes
        if self.head > 4096 and self.head * 2 > len(self.items):  # compact now and then, not per batch
            del self.items[:self.head]
            del self.ns[:self.head]
            del self.sizes[:self.head]
            self.head = 0
        return items

    def ledger(self) -> ClassLedger:
        return ClassLedger(self.appended, self.acked, self.dropped, self.present, self.present_bytes, self.unbatched)


class MemOutbox:
    """:class:`edge_agent.outbox.OutboxPort` in memory, for ``citywatch loadgen`` (one owner, one loop).

    Telemetry is held as :data:`~citywatch.loadplan.Chunk` s, one device's readings of one tick
    already encoded, and a batch is whole chunks: the oldest unbatched ones, at least one, more while
    under ``max_records`` and ``max_bytes`` (a device's sample is never split over two batches).
    """

    def __init__(self, budget_bytes: int, boot: str, policy: OverflowPolicy = "drop_oldest_telemetry_first") -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
        if policy not in POLICIES:
            raise ValueError(f"unknown overflow policy {policy!r}; known: {', '.join(POLICIES)}")
        self.budget_bytes = budget_bytes
        self.disk_full_cap: int | None = None  # no disk to fill
        self.policy: OverflowPolicy = policy
        self.boot = boot
        self._last_seq = 0
        self._next_batch_id = 1
        self._t: _Queue[Chunk] = _Queue()
        self._e: _Queue[Event] = _Queue()
        self._batches: dict[int, BatchHeader] = {}
        self._chunks: dict[int, list[Chunk]] = {}  # telemetry batch id -> its chunks, until acked
        self._events: dict[int, list[Event]] = {}  # events batch id -> its events, until acked

    # ------------------------------------------------------------ append + policy

    def append(self, readings: Sequence[Reading] = (), events: Sequence[Event] = ()) -> AppendResult:
        """Take samples in, then enforce the byte budget (oldest unbatched telemetry first, then events)."""
        if readings:
            chunks = chunks_of(readings)
            self._t.push(chunks, [c[0] for c in chunks], [c[1] for c in chunks])
        if events:
            self._e.push(events, [1] * len(events), [event_nbytes(e, event_body(e)) for e in events])
        return self._enforce_budget()

    def append_chunks(self, chunks: Sequence[Chunk]) -> AppendResult:
        """Take pre-encoded readings in (the generator's path), then enforce the byte budget."""
        if chunks:
            self._t.push(chunks, [c[0] for c in chunks], [c[1] for c in chunks])
        return self._enforce_budget()

    def _enforce_budget(self) -> AppendResult:
        dropped_t = dropped_e = 0
        if self.bytes > self.budget_bytes:
            dropped_t = self._drop(self._t, self.bytes - self.budget_bytes)
        if self.bytes > self.budget_bytes:
            dropped_e = self._drop(self._e, self.bytes - self.budget_bytes)
        return AppendResult(dropped_t, dropped_e)

    @staticmethod
    def _drop(q: _Queue[T], excess: int) -> int:
        freed = n = k = 0
        for size, ni in zip(q.sizes[q.head:], q.ns[q.head:], strict=True):
            if freed >= excess:
                break
            freed += size
            n += ni
            k += 1
        if k:
            q.take(k, n, freed, dropped=True)
        return n

    # ------------------------------------------------------------ batches

    def unbatched(self, cls: RecordClass) -> int:
        return self._t.unbatched if cls is RecordClass.TELEMETRY else self._e.unbatched

    def unacked(self) -> list[BatchHeader]:
        """Formed batches not yet acked, oldest first (the order they must be (re)sent in)."""
        return list(self._batches.values())

    @property
    def unacked_count(self) -> int:
        return len(self._batches)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def form_batch(self, cls: RecordClass, max_records: int, max_bytes: int) -> BatchHeader | None:
        """The oldest unbatched items of ``cls`` (at least one, more while under both limits) as the next seq."""
        q: _Queue[Chunk] | _Queue[Event] = self._t if cls is RecordClass.TELEMETRY else self._e
        if q.unbatched == 0:
            return None
        total = n = k = 0
        for ni, size in zip(q.ns[q.head:q.head + max_records], q.sizes[q.head:q.head + max_records], strict=True):
            if k and (n + ni > max_records or total + size > max_bytes):
                break
            total += size
            n += ni
            k += 1
        first = q.upto + 1
        self._last_seq += 1
        h = BatchHeader(self._next_batch_id, self.boot, self._last_seq, cls, first, first + n - 1, n, total)
        self._next_batch_id += 1
        self._batches[h.id] = h
        if cls is RecordClass.TELEMETRY:
            self._chunks[h.id] = self._t.take(k, n, total, dropped=False)
        else:
            self._events[h.id] = self._e.take(k, n, total, dropped=False)
        return h

    def payload(self, gw: str, h: BatchHeader) -> bytes:
        """A telemetry batch's message, the bytes :func:`contracts.payloads.encode_telemetry` makes."""
        head = orjson.dumps({"v": payloads.VERSION, "gw": gw, "boot": h.boot, "seq": h.seq, "e": []})
        return b"".join((head[:-2], b",".join([c[2] for c in self._chunks[h.id]]), b"]}"))

    def load_readings(self, h: BatchHeader) -> list[Reading]:
        return payloads.decode_telemetry(self.payload(_ANY_GW, h)).readings

    def load_events(self, h: BatchHeader) -> list[Event]:
        return list(self._events[h.id])

    def relabel(self, batch_ids: Sequence[int]) -> list[BatchHeader]:
        """Give batches of another boot new seqs of this boot (same rows, same order), as the disk outbox."""
        out: list[BatchHeader] = []
        for i in batch_ids:
            h = self._batches.get(i)
            if h is None or h.boot == self.boot:
                continue
            self._last_seq += 1
            h = BatchHeader(h.id, self.boot, self._last_seq, h.cls, h.first_id, h.last_id, h.n, h.nbytes)
            self._batches[h.id] = h
            out.append(h)
        return out

    # ------------------------------------------------------------ acks

    def ack(self, acked: dict[str, int]) -> int:
        """Apply the cloud's watermark: drop every batch of a listed boot with ``seq <= watermark``."""
        done = [h for h in self._batches.values() if h.seq <= acked.get(h.boot, 0)]
        n_total = 0
        for h in done:
            q: _Queue[Chunk] | _Queue[Event] = self._t if h.cls is RecordClass.TELEMETRY else self._e
            q.acked += h.n
            q.present -= h.n
            q.present_bytes -= h.nbytes
            n_total += h.n
            del self._batches[h.id]
            self._chunks.pop(h.id, None)
            self._events.pop(h.id, None)
        return n_total

    # ------------------------------------------------------------ observation

    @property
    def bytes(self) -> int:
        return self._t.present_bytes + self._e.present_bytes

    def ledger(self) -> Ledger:
        return Ledger(self._t.ledger(), self._e.ledger())

    def close(self) -> None:
        """Nothing to release (the disk outbox closes its database here)."""


class LoadUplink(Uplink):
    """The edge :class:`Uplink` (connect, birth, window, linger, resend, ack watermark: all its own)
    sending a :class:`MemOutbox`'s telemetry batches as they are stored, already encoded."""

    def _encode(self, h: BatchHeader) -> Outgoing:
        box = self.outbox
        if h.cls is RecordClass.TELEMETRY and isinstance(box, MemOutbox):
            return Outgoing(h, topics.telemetry(self.gw), box.payload(self.gw, h))
        return super()._encode(h)
