"""SQLite backend: the embedded default (``sqlite:///data/citywatch.db``).

WAL journal plus ``busy_timeout`` so several processes (ingest, rules, console) share one
file: one writer at a time, readers never blocked. ``synchronous=FULL``: the ingester
acknowledges a message once its commit returns, so the commit must survive a power cut,
not only a crash (in WAL, NORMAL may roll back the last commits on power loss). Readings
live in one ``WITHOUT ROWID`` table per day keyed by their identity, so ``INSERT OR IGNORE``
is the dedup and each table's trigger rolls up exactly the rows inserted
(:mod:`cloud_ingest.store.lifecycle`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from cloud_ingest.errors import StoreError, StoreUnavailable
from cloud_ingest.store.base import DeviceState, WriteBatch, WriteResult
from cloud_ingest.store.common import (
    device_info_from_json,
    device_info_json,
    in_placeholders,
    latest_rows,
    reading_rows,
)
from cloud_ingest.store.lifecycle import DAY_MS, Lifecycle, Row
from cloud_ingest.store.queries import digest
from cloud_ingest.store.schema import MIGRATIONS, sqlite_day_ddl
from contracts.metrics import METRIC_UNITS
from contracts.payloads import ts_ms
from contracts.reading import Event, Quality, Reading
from sqlstore import Sql, SqlStoreError, connect_sqlite, migrate

T = TypeVar("T")


class SqliteStore(Lifecycle):
    """One connection guarded by a lock; safe to share between threads of one process."""

    dialect = "sqlite"

    def __init__(self, path: str, url: str | None = None) -> None:
        self.url = url or f"sqlite:///{path}"
        self.path = path
        self._lock = threading.Lock()
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = connect_sqlite(path, synchronous="FULL", busy_timeout_ms=10_000)
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
                    r_ins = 0
                    by_day: dict[int, list[tuple[str, str, int, float, int]]] = {}
                    for row in rows:
                        by_day.setdefault(row[2] // DAY_MS, []).append(row)
                    for day, part in by_day.items():
                        for stmt in sqlite_day_ddl(day):  # IF NOT EXISTS: cheap, and safe if compaction dropped it
                            conn.execute(stmt)
                        # rowcount counts the rows inserted, not the trigger's rollup upserts
                        ins = f"INSERT OR IGNORE INTO readings_d{day} VALUES (?,?,?,?,?)"
                        r_ins += conn.executemany(ins, part).rowcount
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

    def _day_tables(self, lo: int, hi: int) -> list[int]:
        days = self.partitions().raw_days
        return sorted(d for d in days if lo // DAY_MS <= d <= (hi - 1) // DAY_MS)

    def _raw_series(self, device: str, metric: str, lo: int, hi: int) -> list[tuple[int, float]]:
        days = self._day_tables(lo, hi)
        if not days:
            return []
        union = " UNION ALL ".join(
            f"SELECT ts_ms, value FROM readings_d{d} WHERE device=? AND metric=? AND ts_ms >= ? AND ts_ms < ?"
            for d in days
        )
        return self._query(union + " ORDER BY ts_ms", (device, metric, lo, hi) * len(days))

    def _raw_rows(self, lo: int, hi: int, devices: Sequence[str] | None, chunk: int) -> Iterator[list[Row]]:
        days = self._day_tables(lo, hi)
        if not days:
            return
        cond = "" if devices is None else f" AND device IN ({in_placeholders(len(devices))})"
        params: list[Any] = []
        selects = []
        for d in days:
            selects.append(f"SELECT device, metric, ts_ms, value, quality FROM readings_d{d} "
                           f"WHERE ts_ms >= ? AND ts_ms < ?{cond}")
            params += [lo, hi, *(devices or ())]
        sql = " UNION ALL ".join(selects) + " ORDER BY ts_ms, device, metric"
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
                yield rows
        except sqlite3.Error as exc:
            raise self._fail(exc, "iter_readings") from exc
        finally:
            conn.close()

    def _table_names(self) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def _create_packed(self, sql: Sql, cls: str, day: int) -> str:
        table = f"packed_{cls}_d{day}"
        sql.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (cls TEXT NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, "
            "hour_ms INTEGER NOT NULL, n INTEGER NOT NULL, block BLOB NOT NULL, "
            "PRIMARY KEY (device, metric, hour_ms)) WITHOUT ROWID"
        )
        return table

    def _packed_source(self, lo_day: int, hi_day: int) -> str | None:
        tables = sorted(
            f"packed_{cls}_d{day}" for cls, day in self.partitions().packed if lo_day <= day <= hi_day
        )
        if not tables:
            return None
        return "(" + " UNION ALL ".join(f"SELECT device, metric, hour_ms, n, block FROM {t}" for t in tables) + ")"

    def _rollup_source(self, table: str, lo_day: int, hi_day: int) -> str | None:
        if table != "rollup_1m":
            return table
        days = sorted(d for d in self.partitions().rollup_days if lo_day <= d <= hi_day)
        if not days:
            return None
        return "(" + " UNION ALL ".join(f"SELECT * FROM rollup_1m_d{d}" for d in days) + ")"

    def _tx(self, fn: Callable[[Sql], T]) -> T:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(Sql(conn))
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._fail(exc, "maintenance") from exc

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
