"""PostgreSQL backend via psycopg 3: COPY into a staging table, then ``INSERT ... ON CONFLICT DO NOTHING``.

Why this shape: binary COPY costs the client about 1 µs per row and the staged upsert keeps
the dedup on the server (docs/performance.md: ~95–135k rows/s here, against ~40k for
``executemany``). ``readings`` is range-partitioned by day; partitions are created on demand
by the SECURITY DEFINER function ``citywatch_ensure_partitions`` so the ingester's role needs
no DDL rights (configs/postgres/ingest_role.sql). When the ``timescaledb`` extension is
available, ``readings`` becomes a hypertable with a compression policy instead; its absence
is logged once.

Every call holds one lock around one connection. A broken connection raises
:class:`StoreUnavailable` and is reopened on the next call, so the ingester's retry loop
recovers on its own when the database comes back. A paused (SIGSTOPped) server simply makes
the call wait: the kernel still acknowledges TCP, and there is nothing to do but wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg.types.json import Jsonb

from cloud_ingest.errors import StoreError, StoreUnavailable
from cloud_ingest.store.base import DeviceState, WriteBatch, WriteResult
from cloud_ingest.store.common import device_info_from_json
from cloud_ingest.store.lifecycle import DAY_MS, Lifecycle, Row
from cloud_ingest.store.queries import digest
from cloud_ingest.store.schema import MIGRATIONS, rollup_merge
from contracts.metrics import METRIC_UNITS
from contracts.payloads import Status, ts_ms
from contracts.reading import Event, Quality, Reading
from sqlstore import Sql, SqlStoreError, migrate

T = TypeVar("T")
TS = "(timestamptz 'epoch' + %s * interval '1 millisecond')"
_TRANSIENT = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
)
# Each inserted row (RETURNING: duplicates are not returned) folded into both rollups.
ROLLUP_CTE = ", ".join(
    f"{name} AS (INSERT INTO {table} SELECT device, metric, t / {step} * {step}, count(*), sum(value), min(value), "
    f"max(value), max(t), (max(ARRAY[t::float8, value]))[2] FROM ins GROUP BY 1, 2, 3 {rollup_merge(table)})"
    for name, table, step in (("r1m", "rollup_1m", 60_000), ("r1h", "rollup_1h", 3_600_000))
)


class PostgresStore(Lifecycle):
    """The production store. Safe to share between threads (one lock, one connection)."""

    dialect = "postgresql"
    ts_ms_expr = "(extract(epoch FROM ts) * 1000)::int8"

    def __init__(self, url: str, connect_timeout_s: int = 5) -> None:
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._days: dict[int, bool] = {}  # partitions known to exist -> may we insert into them directly
        self.timescale = False
        with self._lock:
            self._run(self._setup, "setup")

    # ------------------------------------------------------------ connection

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = psycopg.connect(
            self.url,
            connect_timeout=self._connect_timeout_s,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            application_name="citywatch-ingest",
        )
        self._conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_readings (device text, metric text, ts_ms int8, "
            "value float8, quality int2) ON COMMIT DELETE ROWS"
        )
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS stage_devices (id text, info jsonb) ON COMMIT DELETE ROWS")
        self._conn.commit()
        return self._conn

    def _run(self, fn: Any, what: str, *args: Any) -> Any:
        """Run ``fn(conn, *args)`` in one transaction; translate driver errors once, here."""
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            self._conn = None
            raise StoreUnavailable(f"PostgreSQL unreachable ({what}): {exc}") from exc
        try:
            result = fn(conn, *args)
            conn.commit()
            return result
        except psycopg.OperationalError as exc:
            self._drop()
            raise StoreUnavailable(f"PostgreSQL {what}: {exc}") from exc
        except _TRANSIENT as exc:  # concurrent ingesters (or writers) crossed: retry the transaction
            try:
                conn.rollback()
            except psycopg.Error:
                self._drop()
            raise StoreUnavailable(f"PostgreSQL {what}: {exc}") from exc
        except psycopg.Error as exc:
            if conn.broken:
                self._drop()
                raise StoreUnavailable(f"PostgreSQL {what}: {exc}") from exc
            try:
                conn.rollback()
            except psycopg.Error:
                self._drop()
            # a day partition compacted by maintenance since write() cached it: the retry re-creates it
            stale = isinstance(exc, psycopg.errors.UndefinedTable) and "readings_d" in str(exc)
            raise (StoreUnavailable if stale else StoreError)(f"PostgreSQL {what}: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ------------------------------------------------------------ schema

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Migrate (no DDL when the schema is current), then see how readings are stored."""
        conn.commit()  # the migration runner starts from an idle connection
        try:
            migrate(conn, "ingest", MIGRATIONS)
        except SqlStoreError as exc:
            raise StoreError(f"PostgreSQL schema: {exc}") from exc
        has_ts = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        self.timescale = bool(has_ts and has_ts[0]) and self._is_hypertable(conn)

    @staticmethod
    def _is_hypertable(conn: psycopg.Connection[Any]) -> bool:
        try:
            row = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"
            ).fetchone()
        except psycopg.Error:
            conn.rollback()
            return False
        return bool(row and row[0])

    def _target(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[str, str, int, float, int]]) -> str:
        """The table to insert into: the day's partition when the batch fits in one day.

        Inserting into the partition directly skips PostgreSQL's per-row tuple routing, which
        cost about a third of the staged upsert's throughput in our measurement. A role that may
        insert into ``readings`` but not into the partition itself (partitions are created by the
        SECURITY DEFINER function) goes through the parent.
        """
        if self.timescale:
            return "readings"
        first = rows[0][2] // DAY_MS
        days = {r[2] // DAY_MS for r in rows}
        self._ensure_days(conn, sorted(days - self._days.keys()))  # normally done by write() beforehand
        if len(days) == 1 and self._days[first]:
            return f"readings_d{first}"
        return "readings"

    def _ensure_days(self, conn: psycopg.Connection[Any], days: Sequence[int]) -> None:
        for d in days:
            conn.execute("SELECT citywatch_ensure_partitions(%s, %s)", (d, d))
            row = conn.execute("SELECT has_table_privilege(%s, 'INSERT')", (f"readings_d{d}",)).fetchone()
            self._days[d] = bool(row and row[0])

    # ------------------------------------------------------------ write

    def write(self, batch: WriteBatch) -> WriteResult:
        # no client-side dedup: ON CONFLICT DO NOTHING also drops duplicates inside one statement,
        # keeping the first in COPY order
        rows = [(r.device, r.metric, round(r.ts * 1000), r.value, int(r.quality)) for r in batch.readings]
        rows.extend(batch.rows)
        with self._lock:
            try:
                new_days = {r[2] // DAY_MS for r in rows} - self._days.keys()
                if new_days and not self.timescale:
                    # its own short transaction: creating a partition locks ``readings`` exclusively,
                    # and held through a write (and its births) it stalled every other writer and reader
                    self._run(self._ensure_days, "write", sorted(new_days))
                result: WriteResult = self._run(self._write, "write", batch, rows)
            except StoreError:
                self._days.clear()  # a rolled-back transaction may have held a new partition
                raise
            return result

    def _write(
        self, conn: psycopg.Connection[Any], batch: WriteBatch, rows: list[tuple[str, str, int, float, int]]
    ) -> WriteResult:
        now = time.time()
        r_ins = 0
        with conn.cursor() as cur:
            if rows:
                target = self._target(conn, rows)
                with cur.copy("COPY stage_readings FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "int8", "float8", "int2"])
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"WITH ins AS (INSERT INTO {target} (device, metric, ts, value, quality) "
                    "SELECT device, metric, timestamptz 'epoch' + ts_ms * interval '1 millisecond', value, quality "
                    "FROM stage_readings ON CONFLICT DO NOTHING "
                    f"RETURNING device, metric, value, {self.ts_ms_expr} AS t), "
                    f"{ROLLUP_CTE} SELECT count(*) FROM ins"
                )
                counted = cur.fetchone()
                r_ins = int(counted[0]) if counted else 0
                cur.execute(
                    "INSERT INTO latest (device, metric, ts, value, quality) "
                    "SELECT DISTINCT ON (device, metric) device, metric, "
                    "timestamptz 'epoch' + ts_ms * interval '1 millisecond', value, quality "
                    "FROM stage_readings ORDER BY device, metric, ts_ms DESC "
                    "ON CONFLICT (device, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value, "
                    "quality = excluded.quality WHERE excluded.ts > latest.ts"
                )
            e_ins = 0
            for gw, e in batch.events:
                cur.execute(
                    f"INSERT INTO events VALUES (%s, %s, %s, {TS}, %s, %s) ON CONFLICT DO NOTHING",
                    (e.device, e.kind, e.id, ts_ms(e.ts), gw, Jsonb(e.body)),
                )
                e_ins += max(cur.rowcount, 0)
            d_ins = 0
            for d in batch.dead_letters:
                cur.execute(
                    "INSERT INTO dead_letters (received_at, topic, gw, reason, detail, raw, digest) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (d.received_at, d.topic, d.gw, d.reason, d.detail, d.raw, digest(d.raw)),
                )
                d_ins += max(cur.rowcount, 0)
            if batch.seqs:
                cols = list(zip(*[(s.gw, s.boot, s.seq, s.kind, s.n) for s in batch.seqs], strict=True))
                cur.execute(
                    "INSERT INTO batches SELECT g, b, s, k, n, %s "
                    "FROM unnest(%s::text[], %s::text[], %s::int8[], %s::text[], %s::int4[]) AS u(g, b, s, k, n) "
                    "ON CONFLICT DO NOTHING",
                    [now, *[list(c) for c in cols]],
                )
            for su in batch.statuses:
                self._apply_status(cur, su.gw, su.status, su.received_at)
        return WriteResult(r_ins, len(rows) - r_ins, e_ins, len(batch.events) - e_ins, d_ins)

    @staticmethod
    def _apply_status(cur: psycopg.Cursor[Any], gw: str, status: Status, received_at: float) -> None:
        if status.state == "online":
            cur.execute(
                "INSERT INTO gateways VALUES (%s, 'online', %s, %s, %s, %s) ON CONFLICT (gw) DO UPDATE SET "
                "state = 'online', boot = excluded.boot, agent = excluded.agent, health = excluded.health, "
                "updated_at = excluded.updated_at",
                (gw, status.boot, status.agent, Jsonb(status.health), received_at),
            )
            # a birth may carry 1 000 devices: staged by COPY, then one DELETE and one upsert (one
            # statement per device, or a text[] parameter escaped in Python, took a minute for 1 000 births)
            infos = {d.id: orjson.dumps(d.to_json()).decode() for d in status.devices}  # a repeated id: last wins
            with cur.copy("COPY stage_devices (id, info) FROM STDIN") as copy:
                for row in infos.items():
                    copy.write_row(row)
            cur.execute(
                "DELETE FROM devices d WHERE d.gw = %s AND NOT EXISTS (SELECT FROM stage_devices s WHERE s.id = d.id)",
                (gw,),
            )
            cur.execute(
                "INSERT INTO devices SELECT id, %s, info, %s FROM stage_devices ON CONFLICT (id) DO UPDATE SET "
                "gw = excluded.gw, info = excluded.info, updated_at = excluded.updated_at",
                (gw, received_at),
            )
            cur.execute("DELETE FROM stage_devices")
        else:
            cur.execute(
                "INSERT INTO gateways VALUES (%s, 'offline', %s, NULL, '{}', %s) ON CONFLICT (gw) DO UPDATE SET "
                "state = 'offline', updated_at = excluded.updated_at WHERE gateways.boot = excluded.boot",
                (gw, status.boot, received_at),
            )

    # ------------------------------------------------------------ queries

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        def fn(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(sql, params).fetchall()

        with self._lock:
            rows: list[Any] = self._run(fn, "query")
            return rows

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        def fn(conn: psycopg.Connection[Any]) -> None:
            conn.execute(sql, params)

        with self._lock:
            self._run(fn, "write")

    def latest(self, device: str | None = None) -> list[Reading]:
        sql = "SELECT device, metric, extract(epoch FROM ts)::float8, value, quality FROM latest"
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = %s"
            params = (device,)
        rows = self._query(sql + " ORDER BY device, metric", params)
        return [Reading(d, m, round(t, 3), v, METRIC_UNITS.get(m, ""), Quality(q)) for d, m, t, v, q in rows]

    def _raw_series(self, device: str, metric: str, lo: int, hi: int) -> list[tuple[int, float]]:
        rows = self._query(
            f"SELECT {self.ts_ms_expr}, value FROM readings WHERE device = %s AND metric = %s "
            f"AND ts >= {TS} AND ts < {TS} ORDER BY ts",
            (device, metric, lo, hi),
        )
        return [(int(t), float(v)) for t, v in rows]

    def _raw_rows(self, lo: int, hi: int, devices: Sequence[str] | None, chunk: int) -> Iterator[list[Row]]:
        sql = f"SELECT device, metric, {self.ts_ms_expr}, value, quality FROM readings WHERE ts >= {TS} AND ts < {TS}"
        params: list[Any] = [lo, hi]
        if devices is not None:
            sql += " AND device = ANY(%s)"
            params.append(list(devices))
        sql += " ORDER BY ts, device, metric"
        try:
            conn = psycopg.connect(self.url, connect_timeout=self._connect_timeout_s)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL unreachable (iter_readings): {exc}") from exc
        try:
            with conn, conn.cursor(name="citywatch_iter") as cur:
                cur.itersize = chunk
                cur.execute(sql, params)
                while True:
                    rows = cur.fetchmany(chunk)
                    if not rows:
                        break
                    yield rows
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL iter_readings: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL iter_readings: {exc}") from exc
        finally:
            conn.close()

    def _table_names(self) -> list[str]:
        rows = self._query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND (tablename LIKE 'readings\\_d%%' OR tablename LIKE 'packed\\_%%' "
            "OR tablename LIKE 'rollup\\_1m\\_d%%')"
        )
        return [r[0] for r in rows]

    def _create_packed(self, sql: Sql, cls: str, day: int) -> str:
        """A partition of ``packed`` per class, sub-partitioned by day: readers need SELECT on ``packed`` only."""
        parent = f"packed_{cls}"
        if not sql.has_table(parent):
            sql.execute(
                f"CREATE TABLE {parent} PARTITION OF packed FOR VALUES IN ('{cls}') PARTITION BY RANGE (hour_ms)"
            )
        table = f"{parent}_d{day}"
        if not sql.has_table(table):
            sql.execute(
                f"CREATE TABLE {table} PARTITION OF {parent} FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
            )
        return table

    def _packed_source(self, lo_day: int, hi_day: int) -> str | None:
        return "packed"

    def _rollup_source(self, table: str, lo_day: int, hi_day: int) -> str | None:
        return table  # rollup_1m is partitioned by day: the planner prunes

    def _tx(self, fn: Callable[[Sql], T]) -> T:
        with self._lock:
            self._days.clear()  # maintenance may drop day partitions
            result: T = self._run(lambda conn: fn(Sql(conn)), "maintenance")
            return result

    def events(
        self, start: float, end: float, device: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Event]:
        sql = (
            f"SELECT device, kind, id, extract(epoch FROM ts)::float8, body FROM events WHERE ts >= {TS} AND ts < {TS}"
        )
        params: list[Any] = [ts_ms(start), ts_ms(end)]
        if device is not None:
            sql += " AND device = %s"
            params.append(device)
        if kind is not None:
            sql += " AND kind = %s"
            params.append(kind)
        rows = self._query(sql + " ORDER BY ts, device, kind, id LIMIT %s", [*params, limit])
        return [Event(d, k, i, round(t, 3), b) for d, k, i, t, b in rows]

    def devices(self) -> list[DeviceState]:
        rows = self._query(
            "SELECT d.info, d.gw, coalesce(g.state = 'online', false), "
            "(SELECT extract(epoch FROM max(l.ts))::float8 FROM latest l WHERE l.device = d.id), d.updated_at "
            "FROM devices d LEFT JOIN gateways g ON g.gw = d.gw ORDER BY d.id"
        )
        return [
            DeviceState(device_info_from_json(info), gw, bool(on), None if seen is None else round(seen, 3), upd)
            for info, gw, on, seen, upd in rows
        ]
