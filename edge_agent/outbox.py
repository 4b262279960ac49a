"""The durable outbox: every sample goes to disk before anything else happens to it.

SQLite in WAL mode with ``synchronous=FULL``: a reading is *committed* when :meth:`Outbox.append`
returns, and survives a crash of the process (and, on storage that honours fsync, a power cut).
Rows leave the outbox only two ways, each counted in the same transaction that deletes them:

* **acked** — the cloud's retained ack watermark says their batch is committed (a PUBACK only
  says the broker has it; a broker may still drop it, so it deletes nothing);
* **dropped** — the byte budget is exceeded; the named policy ``drop_oldest_telemetry_first``
  drops the oldest *unbatched* telemetry first and events (WIM records, cover interrupts) only
  when no unbatched telemetry is left.

So the ledger ``appended = present + acked + dropped`` holds per class at every commit, and
:meth:`Outbox.ledger` reports it.

Batches. Telemetry and events live in two tables with AUTOINCREMENT ids. A batch is formed
from the oldest unbatched rows of one class and recorded as ``(boot, seq, class, first_id,
last_id)``; ``meta.upto_<class>`` remembers the last batched id. Because batch formation takes
rows strictly in id order and policy drops touch only unbatched rows, a batch's members are
exactly the rows of its class in ``[first_id, last_id]`` for as long as it exists: a resend
after a reconnect or a restart re-reads the same rows and goes out with the same (boot, seq).
The caller keeps the number of formed-but-unacked batches bounded (the publish window), so the
rows exempt from dropping are bounded too.

The module is synchronous and owns one connection; the agent calls it from its event loop
(each call is one short transaction, one fsync).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal, Protocol

import orjson

from contracts.reading import Event, Quality, Reading
from edge_agent.errors import OutboxError

OverflowPolicy = Literal["drop_oldest_telemetry_first"]
POLICIES: tuple[str, ...] = ("drop_oldest_telemetry_first",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    quality INTEGER NOT NULL,
    nbytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    nbytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    cls INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    UNIQUE (boot, seq)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    cls INTEGER PRIMARY KEY,
    appended INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO ledger (cls) VALUES (0), (1);
"""

#: fixed per-row overhead added to the payload estimate (ids, ts, JSON punctuation, SQLite row header)
ROW_OVERHEAD_BYTES = 40


class RecordClass(IntEnum):
    TELEMETRY = 0
    EVENTS = 1

    @property
    def table(self) -> str:
        return "telemetry" if self is RecordClass.TELEMETRY else "events"


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """A formed batch: its identity on the wire and which rows it holds."""

    id: int
    boot: str
    seq: int
    cls: RecordClass
    first_id: int
    last_id: int
    n: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ClassLedger:
    appended: int
    acked: int
    dropped: int
    present: int
    present_bytes: int
    unbatched: int


@dataclass(frozen=True, slots=True)
class Ledger:
    """Exact accounting of every record the outbox ever took in (persisted across restarts)."""

    telemetry: ClassLedger
    events: ClassLedger

    @property
    def bytes(self) -> int:
        return self.telemetry.present_bytes + self.events.present_bytes

    @property
    def depth(self) -> int:
        return self.telemetry.present + self.events.present


@dataclass(frozen=True, slots=True)
class AppendResult:
    dropped_telemetry: int = 0
    dropped_events: int = 0


def reading_nbytes(r: Reading) -> int:
    """Budget size of a reading: roughly its encoded SenML record plus row overhead."""
    return len(r.device) + len(r.metric) + len(r.unit) + ROW_OVERHEAD_BYTES


def event_body(e: Event) -> str:
    return orjson.dumps(e.body).decode()


def event_nbytes(e: Event, body: str) -> int:
    return len(e.device) + len(e.kind) + len(e.id) + len(body) + ROW_OVERHEAD_BYTES


class OutboxPort(Protocol):
    """What the :class:`edge_agent.uplink.Uplink` needs of an outbox: batches, ledger, acks.

    :class:`Outbox` is the agent's (durable, on disk); ``citywatch.loadbox.MemOutbox`` is the load
    generator's (the same discipline in memory, where a crash may lose what it generated).
    """

    budget_bytes: int
    disk_full_cap: int | None
    policy: OverflowPolicy

    def append(self, readings: Sequence[Reading] = (), events: Sequence[Event] = ()) -> AppendResult: ...
    def unbatched(self, cls: RecordClass) -> int: ...
    def unacked(self) -> list[BatchHeader]: ...
    @property
    def unacked_count(self) -> int: ...
    def form_batch(self, cls: RecordClass, max_records: int, max_bytes: int) -> BatchHeader | None: ...
    def load_readings(self, h: BatchHeader) -> Sequence[Reading]: ...
    def load_events(self, h: BatchHeader) -> Sequence[Event]: ...
    def relabel(self, batch_ids: Sequence[int]) -> list[BatchHeader]: ...
    def ack(self, acked: dict[str, int]) -> int: ...
    def ledger(self) -> Ledger: ...
    def close(self) -> None: ...


class _ClassState:
    __slots__ = ("acked", "appended", "dropped", "present", "present_bytes", "unbatched", "unbatched_bytes", "upto")

    def __init__(self) -> None:
        self.appended = 0
        self.acked = 0
        self.dropped = 0
        self.present = 0
        self.present_bytes = 0
        self.upto = 0  # last batched id
        self.unbatched = 0
        self.unbatched_bytes = 0


class Outbox:
    """The on-disk queue between sampling and publishing. Not thread-safe: one owner."""

    def __init__(
        self,
        path: str | Path,
        budget_bytes: int,
        boot: str,
        policy: OverflowPolicy = "drop_oldest_telemetry_first",
        max_pages: int | None = None,
    ) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
        if policy not in POLICIES:
            raise ValueError(f"unknown overflow policy {policy!r}; known: {', '.join(POLICIES)}")
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        #: set when the disk filled up before the budget did: the budget actually enforceable
        self.disk_full_cap: int | None = None
        self.policy = policy
        self.boot = boot
        self._cls = {RecordClass.TELEMETRY: _ClassState(), RecordClass.EVENTS: _ClassState()}
        self._batches: dict[int, BatchHeader] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            if max_pages is not None:  # tests: a database that cannot grow, like a full disk
                self._db.execute(f"PRAGMA max_page_count={int(max_pages)}")
            self._db.executescript(_SCHEMA)
            self._load()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"{self.path}: cannot open outbox: {exc}") from exc

    # ------------------------------------------------------------ lifecycle

    def _load(self) -> None:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("boot") == self.boot:
            self._last_seq = int(meta.get("last_seq", "0"))
        else:
            self._last_seq = 0
            with self._tx():
                db.execute("INSERT OR REPLACE INTO meta VALUES ('boot', ?), ('last_seq', '0')", (self.boot,))
        for cls, st in self._cls.items():
            st.upto = int(meta.get(f"upto_{cls.table}", "0"))
            st.appended, st.acked, st.dropped = db.execute(
                "SELECT appended, acked, dropped FROM ledger WHERE cls = ?", (int(cls),)
            ).fetchone()
            n, nbytes = db.execute(f"SELECT count(*), coalesce(sum(nbytes), 0) FROM {cls.table}").fetchone()
            st.present, st.present_bytes = n, nbytes
            un, unbytes = db.execute(
                f"SELECT count(*), coalesce(sum(nbytes), 0) FROM {cls.table} WHERE id > ?", (st.upto,)
            ).fetchone()
            st.unbatched, st.unbatched_bytes = un, unbytes
        for row in db.execute("SELECT id, boot, seq, cls, first_id, last_id, n, nbytes FROM batches ORDER BY id"):
            h = BatchHeader(row[0], row[1], row[2], RecordClass(row[3]), row[4], row[5], row[6], row[7])
            self._batches[h.id] = h

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: close failed: {exc}") from exc

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    # ------------------------------------------------------------ append + policy

    @property
    def effective_budget(self) -> int:
        return self.budget_bytes if self.disk_full_cap is None else min(self.budget_bytes, self.disk_full_cap)

    def append(self, readings: Sequence[Reading] = (), events: Sequence[Event] = ()) -> AppendResult:
        """Store samples durably (one transaction, one fsync), then enforce the byte budget.

        When this returns the samples are committed. Raises :class:`OutboxError` if they are not
        (nothing is then stored).

        A full disk (SQLITE_FULL) before the budget is reached is handled like the budget: the
        enforceable cap is lowered below what is stored, the policy drops (counted), and the
        append is retried, up to 4 times.
        """
        for _attempt in range(4):
            try:
                return self._append(readings, events)
            except _DiskFull:
                cap = self.bytes if self.disk_full_cap is None else min(self.bytes, self.disk_full_cap)
                self.disk_full_cap = int(cap * 0.8)
        raise OutboxError(f"{self.path}: disk full even after dropping to {self.disk_full_cap} bytes")

    def _append(self, readings: Sequence[Reading], events: Sequence[Event]) -> AppendResult:
        if not readings and not events:
            return AppendResult()
        if self.disk_full_cap is not None and self.bytes > self.disk_full_cap:
            # make room *before* inserting: the disk has none to spare for the new rows
            saved = self._snapshot()
            try:
                with self._tx():
                    self._enforce_budget()
                    self._write_ledger()
            except sqlite3.Error as exc:
                self._restore(saved)
                if _is_full(exc):
                    raise _DiskFull from exc
                raise OutboxError(f"{self.path}: making room failed: {exc}") from exc
        t_rows = [(r.device, r.metric, r.ts, r.value, r.unit, int(r.quality), reading_nbytes(r)) for r in readings]
        e_rows = []
        for e in events:
            body = event_body(e)
            e_rows.append((e.device, e.kind, e.id, e.ts, body, event_nbytes(e, body)))
        t_bytes = sum(row[6] for row in t_rows)
        e_bytes = sum(row[5] for row in e_rows)
        saved = self._snapshot()
        try:
            with self._tx():
                if t_rows:
                    self._db.executemany(
                        "INSERT INTO telemetry (device, metric, ts, value, unit, quality, nbytes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        t_rows,
                    )
                if e_rows:
                    self._db.executemany(
                        "INSERT INTO events (device, kind, event_id, ts, body, nbytes) VALUES (?, ?, ?, ?, ?, ?)",
                        e_rows,
                    )
                self._count_in(RecordClass.TELEMETRY, len(t_rows), t_bytes)
                self._count_in(RecordClass.EVENTS, len(e_rows), e_bytes)
                dropped_t, dropped_e = self._enforce_budget()
                self._write_ledger()
        except sqlite3.Error as exc:
            self._restore(saved)
            if _is_full(exc):
                raise _DiskFull from exc
            what = f"{len(t_rows)} readings, {len(e_rows)} events"
            raise OutboxError(f"{self.path}: append of {what} failed: {exc}") from exc
        return AppendResult(dropped_t, dropped_e)

    def _count_in(self, cls: RecordClass, n: int, nbytes: int) -> None:
        st = self._cls[cls]
        st.appended += n
        st.present += n
        st.present_bytes += nbytes
        st.unbatched += n
        st.unbatched_bytes += nbytes

    def _enforce_budget(self) -> tuple[int, int]:
        dropped = [0, 0]
        for cls in (RecordClass.TELEMETRY, RecordClass.EVENTS):  # the policy order
            excess = self.bytes - self.effective_budget
            if excess <= 0:
                break
            dropped[cls] = self._drop_oldest_unbatched(cls, excess)
        return dropped[0], dropped[1]

    def _drop_oldest_unbatched(self, cls: RecordClass, excess: int) -> int:
        st = self._cls[cls]
        freed = 0
        n = 0
        cut = st.upto
        cursor = self._db.execute(f"SELECT id, nbytes FROM {cls.table} WHERE id > ? ORDER BY id", (st.upto,))
        for row_id, nbytes in cursor:
            if freed >= excess:
                break
            freed += nbytes
            n += 1
            cut = row_id
        cursor.close()
        if n:
            self._db.execute(f"DELETE FROM {cls.table} WHERE id > ? AND id <= ?", (st.upto, cut))
            st.dropped += n
            st.present -= n
            st.present_bytes -= freed
            st.unbatched -= n
            st.unbatched_bytes -= freed
        return n

    def _write_ledger(self) -> None:
        self._db.executemany(
            "UPDATE ledger SET appended = ?, acked = ?, dropped = ? WHERE cls = ?",
            [(st.appended, st.acked, st.dropped, int(cls)) for cls, st in self._cls.items()],
        )

    # in-memory counters are rolled back with the transaction they describe
    def _snapshot(self) -> list[tuple[int, ...]]:
        return [
            (st.appended, st.acked, st.dropped, st.present, st.present_bytes, st.upto, st.unbatched, st.unbatched_bytes)
            for st in self._cls.values()
        ]

    def _restore(self, saved: list[tuple[int, ...]]) -> None:
        for st, vals in zip(self._cls.values(), saved, strict=True):
            (st.appended, st.acked, st.dropped, st.present, st.present_bytes, st.upto, st.unbatched,
             st.unbatched_bytes) = vals

    # ------------------------------------------------------------ batches

    def unbatched(self, cls: RecordClass) -> int:
        return self._cls[cls].unbatched

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
        """Put the oldest unbatched rows of ``cls`` into the next batch of this boot.

        Takes at least one row, then more while under both limits. The batch and its seq are
        persisted in one transaction, so a resend (even after a restart) reuses them.
        """
        st = self._cls[cls]
        if st.unbatched == 0:
            return None
        saved = self._snapshot()
        try:
            rows = self._db.execute(
                f"SELECT id, nbytes FROM {cls.table} WHERE id > ? ORDER BY id LIMIT ?", (st.upto, max_records)
            ).fetchall()
            if not rows:  # counters out of step with the table: resync rather than loop
                st.unbatched = st.unbatched_bytes = 0
                return None
            total = 0
            last = rows[0][0]
            n = 0
            for row_id, nbytes in rows:
                if n and total + nbytes > max_bytes:
                    break
                total += nbytes
                last = row_id
                n += 1
            first = rows[0][0]
            seq = self._last_seq + 1
            with self._tx():
                cur = self._db.execute(
                    "INSERT INTO batches (boot, seq, cls, first_id, last_id, n, nbytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.boot, seq, int(cls), first, last, n, total),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?), ('last_seq', ?)",
                    (f"upto_{cls.table}", str(last), str(seq)),
                )
                st.upto = last
                st.unbatched -= n
                st.unbatched_bytes -= total
            batch_id = cur.lastrowid
            assert batch_id is not None
        except sqlite3.Error as exc:
            self._restore(saved)
            raise OutboxError(f"{self.path}: forming a {cls.table} batch failed: {exc}") from exc
        self._last_seq = seq
        h = BatchHeader(batch_id, self.boot, seq, cls, first, last, n, total)
        self._batches[h.id] = h
        return h

    def load_readings(self, h: BatchHeader) -> list[Reading]:
        try:
            rows = self._db.execute(
                "SELECT device, metric, ts, value, unit, quality FROM telemetry WHERE id BETWEEN ? AND ? ORDER BY id",
                (h.first_id, h.last_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: reading batch {h.boot}/{h.seq} failed: {exc}") from exc
        return [Reading(d, m, ts, v, u, Quality(q)) for d, m, ts, v, u, q in rows]

    def load_events(self, h: BatchHeader) -> list[Event]:
        try:
            rows = self._db.execute(
                "SELECT device, kind, event_id, ts, body FROM events WHERE id BETWEEN ? AND ? ORDER BY id",
                (h.first_id, h.last_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: reading batch {h.boot}/{h.seq} failed: {exc}") from exc
        return [Event(d, k, i, ts, orjson.loads(b)) for d, k, i, ts, b in rows]

    def relabel(self, batch_ids: Sequence[int]) -> list[BatchHeader]:
        """Give batches of an old boot new seqs of the current boot (same rows, same order).

        For batches the cloud no longer acks by their old boot (it keeps only its recent boots):
        without this they would hold the window forever. Identity (device, metric, sample time)
        makes the possible duplicate harmless.
        """
        todo = [self._batches[i] for i in batch_ids if i in self._batches and self._batches[i].boot != self.boot]
        if not todo:
            return []
        seq = self._last_seq
        out: list[BatchHeader] = []
        try:
            with self._tx():
                for h in todo:
                    seq += 1
                    self._db.execute("UPDATE batches SET boot = ?, seq = ? WHERE id = ?", (self.boot, seq, h.id))
                    out.append(BatchHeader(h.id, self.boot, seq, h.cls, h.first_id, h.last_id, h.n, h.nbytes))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (str(seq),))
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: relabelling {len(todo)} batches failed: {exc}") from exc
        self._last_seq = seq
        for h in out:
            self._batches[h.id] = h
        return out

    # ------------------------------------------------------------ acks

    def ack(self, acked: dict[str, int]) -> int:
        """Apply the cloud's watermark (highest contiguous committed seq per boot).

        Deletes every batch of a listed boot with ``seq <= watermark``, with its rows; returns
        how many records were deleted. Boots not listed and batches above it are untouched.
        """
        done = [h for h in self._batches.values() if h.seq <= acked.get(h.boot, 0)]
        if not done:
            return 0
        saved = self._snapshot()
        n_total = 0
        try:
            with self._tx():
                for h in done:
                    self._db.execute(f"DELETE FROM {h.cls.table} WHERE id BETWEEN ? AND ?", (h.first_id, h.last_id))
                    self._db.execute("DELETE FROM batches WHERE id = ?", (h.id,))
                    st = self._cls[h.cls]
                    st.acked += h.n
                    st.present -= h.n
                    st.present_bytes -= h.nbytes
                    n_total += h.n
                self._write_ledger()
        except sqlite3.Error as exc:
            self._restore(saved)
            raise OutboxError(f"{self.path}: applying ack {acked} failed: {exc}") from exc
        for h in done:
            del self._batches[h.id]
        return n_total

    # ------------------------------------------------------------ observation

    @property
    def bytes(self) -> int:
        return sum(st.present_bytes for st in self._cls.values())

    def ledger(self) -> Ledger:
        def one(cls: RecordClass) -> ClassLedger:
            st = self._cls[cls]
            return ClassLedger(st.appended, st.acked, st.dropped, st.present, st.present_bytes, st.unbatched)

        return Ledger(one(RecordClass.TELEMETRY), one(RecordClass.EVENTS))

    def file_bytes(self) -> int:
        """Bytes on disk (database + WAL): larger than the logical budget by SQLite's overhead."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def integrity_check(self) -> str:
        try:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: integrity check failed: {exc}") from exc


class _DiskFull(Exception):
    """SQLITE_FULL inside an append (internal: the append retries after dropping)."""


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
