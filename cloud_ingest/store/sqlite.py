"""SQLite backend: the embedded default (``sqlite:///data/citywatch.db``).

WAL journal plus ``busy_timeout`` so several processes (ingest, rules, console) share one
file: one writer at a time, readers never blocked. ``synchronous=FULL``: the ingester
acknowledges a message once its commit returns, so the commit must survive a power cut,
not only a crash (in WAL, NORMAL may roll back the last commits on power loss). Readings
are ``WITHOUT ROWID`` keyed by their identity, so ``INSERT OR IGNORE`` is the dedup.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from cloud_ingest.errors import StoreError, StoreUnavailable
from cloud_ingest.store.base import (
    DeviceState,
    Point,
    ReadingChunk,
    WriteBatch,
    WriteResult,
    make_chunk,
)
from cloud_ingest.store.common import (
    device_info_from_json,
    device_info_json,
    in_placeholders,
    latest_rows,
    reading_rows,
)
from cloud_ingest.store.queries import SharedQueries, digest
from cloud_ingest.store.schema import MIGRATIONS
from contracts.metrics import METRIC_UNITS
from contracts.payloads import ts_ms
from contracts.reading import Event, Quality, Reading
from sqlstore import SqlStoreError, migrate


class SqliteStore(SharedQueries):
    """One connection guarded by a lock; safe to share between threads of one process."""

    dialect = "sqlite"

    def __init__(self, path: str, url: str | None = None) -> None:
        self.url = url or f"sqlite:///{path}"
        self.path = path
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            migrate(self._conn, "ingest", MIGRATIONS)
        except (sqlite3.Error, SqlStoreError) as exc:
            raise StoreError(f"cannot open SQLite store {path!r}: {exc}") from exc

    # ------------------------------------------------------------ plumbing

    def _fail(self, exc: sqlite3.Error, what: str) -> StoreError:
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return StoreUnavailable(f"SQLite {what}: {exc}")
        return StoreError(f"SQLite {what}: {exc}")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc, "query") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------ write

    def write(self, batch: WriteBatch) -> WriteResult:
        rows = reading_rows(batch.readings)
        rows.extend(batch.rows)
        now = time.time()
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    before = conn.total_changes
                    conn.executemany("INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?)", rows)
                    r_ins = conn.total_changes - before
                    conn.executemany(
                        "INSERT INTO latest VALUES (?,?,?,?,?) ON CONFLICT (device, metric) DO UPDATE SET "
                        "ts_ms=excluded.ts_ms, value=excluded.value, quality=excluded.quality "
                        "WHERE excluded.ts_ms > latest.ts_ms",
                        latest_rows(rows),
                    )
                    before = conn.total_changes
                    conn.executemany(
                        "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?)",
                        [
                            (e.device, e.kind, e.id, ts_ms(e.ts), gw, orjson.dumps(e.body).decode())
                            for gw, e in batch.events
                        ],
                    )
                    e_ins = conn.total_changes - before
                    before = conn.total_changes
                    conn.executemany(
                        "INSERT OR IGNORE INTO dead_letters (received_at, topic, gw, reason, detail, raw, digest) "
                        "VALUES (?,?,?,?,?,?,?)",
                        [
                            (d.received_at, d.topic, d.gw, d.reason, d.detail, d.raw, digest(d.raw))
                            for d in batch.dead_letters
                        ],
                    )
                    d_ins = conn.total_changes - before
                    conn.executemany(
                        "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?,?)",
                        [(s.gw, s.boot, s.seq, s.kind, s.n, now) for s in batch.seqs],
                    )
                    for su in batch.statuses:
                        self._apply_status(su.gw, su.status, su.received_at)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._fail(exc, "write") from exc
        return WriteResult(r_ins, len(rows) - r_ins, e_ins, len(batch.events) - e_ins, d_ins)

    def _apply_status(self, gw: str, status: Any, received_at: float) -> None:
        conn = self._conn
        if status.state == "online":
            conn.execute(
                "INSERT INTO gateways VALUES (?, 'online', ?, ?, ?, ?) ON CONFLICT (gw) DO UPDATE SET "
                "state='online', boot=excluded.boot, agent=excluded.agent, health=excluded.health, "
                "updated_at=excluded.updated_at",
                (gw, status.boot, status.agent, orjson.dumps(status.health).decode(), received_at),
            )
            ids = [d.id for d in status.devices]
            conn.execute(f"DELETE FROM devices WHERE gw = ? AND id NOT IN ({in_placeholders(len(ids))})", (gw, *ids))
            conn.executemany(
                "INSERT INTO devices VALUES (?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "gw=excluded.gw, info=excluded.info, updated_at=excluded.updated_at",
                [(d.id, gw, device_info_json(d), received_at) for d in status.devices],
            )
        else:  # a last will only counts for the boot it belongs to
            conn.execute(
                "INSERT INTO gateways VALUES (?, 'offline', ?, NULL, '{}', ?) ON CONFLICT (gw) DO UPDATE SET "
                "state='offline', updated_at=excluded.updated_at WHERE gateways.boot = excluded.boot",
                (gw, status.boot, received_at),
            )

    # ------------------------------------------------------------ queries

    def latest(self, device: str | None = None) -> list[Reading]:
        sql = "SELECT device, metric, ts_ms, value, quality FROM latest"
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            params = (device,)
        rows = self._query(sql + " ORDER BY device, metric", params)
        return [Reading(d, m, t / 1000.0, v, METRIC_UNITS.get(m, ""), Quality(q)) for d, m, t, v, q in rows]

    def range(self, device: str, metric: str, start: float, end: float, bucket_s: float | None = None) -> list[Point]:
        lo, hi = ts_ms(start), ts_ms(end)
        if bucket_s is None:
            rows = self._query(
                "SELECT ts_ms, value FROM readings WHERE device=? AND metric=? AND ts_ms >= ? AND ts_ms < ? "
                "ORDER BY ts_ms",
                (device, metric, lo, hi),
            )
            return [Point(t / 1000.0, v, v, v, 1) for t, v in rows]
        b = max(1, round(bucket_s * 1000))
        rows = self._query(
            "SELECT (ts_ms / ?) * ? AS b, avg(value), min(value), max(value), count(*) FROM readings "
            "WHERE device=? AND metric=? AND ts_ms >= ? AND ts_ms < ? GROUP BY b ORDER BY b",
            (b, b, device, metric, lo, hi),
        )
        return [Point(t / 1000.0, a, mn, mx, n) for t, a, mn, mx, n in rows]

    def iter_readings(
        self, start: float, end: float, devices: Sequence[str] | None = None, chunk: int = 50_000
    ) -> Iterator[ReadingChunk]:
        sql = "SELECT device, metric, ts_ms / 1000.0, value, quality FROM readings WHERE ts_ms >= ? AND ts_ms < ?"
        params: list[Any] = [ts_ms(start), ts_ms(end)]
        if devices is not None:
            if not devices:
                return
            sql += f" AND device IN ({in_placeholders(len(devices))})"
            params.extend(devices)
        sql += " ORDER BY ts_ms, device, metric"
        # A separate read connection: the iterator may be consumed slowly, and WAL readers
        # never block the writer.
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        except sqlite3.Error as exc:
            raise self._fail(exc, "iter_readings") from exc
        try:
            cur = conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    break
                yield make_chunk(rows)
        except sqlite3.Error as exc:
            raise self._fail(exc, "iter_readings") from exc
        finally:
            conn.close()

    def events(
        self, start: float, end: float, device: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Event]:
        sql = "SELECT device, kind, id, ts_ms, body FROM events WHERE ts_ms >= ? AND ts_ms < ?"
        params: list[Any] = [ts_ms(start), ts_ms(end)]
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._query(sql + " ORDER BY ts_ms, device, kind, id LIMIT ?", [*params, limit])
        return [Event(d, k, i, t / 1000.0, orjson.loads(b)) for d, k, i, t, b in rows]

    def devices(self) -> list[DeviceState]:
        rows = self._query(
            "SELECT d.info, d.gw, coalesce(g.state = 'online', 0), "
            "(SELECT max(l.ts_ms) FROM latest l WHERE l.device = d.id), d.updated_at "
            "FROM devices d LEFT JOIN gateways g ON g.gw = d.gw ORDER BY d.id"
        )
        return [
            DeviceState(device_info_from_json(info), gw, bool(on), None if seen is None else seen / 1000.0, upd)
            for info, gw, on, seen, upd in rows
        ]

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise self._fail(exc, "write") from exc
