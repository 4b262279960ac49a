"""The ingest store's schema, one migration list for SQLite and PostgreSQL.

Tables whose SQL agrees are written once with :mod:`sqlstore.dialect` type tokens; the
time-keyed tables differ for speed (SQLite keys readings by integer ``ts_ms`` in a
``WITHOUT ROWID`` table; PostgreSQL uses ``timestamptz``, daily range partitions created by
a SECURITY DEFINER function, or a TimescaleDB hypertable when the extension is available).
Version 1 is the schema release d572fb5 created with ``CREATE ... IF NOT EXISTS``, so it
also adopts a database from that release. Never edit a released migration; add a new one.

Version 2 (storage lifecycle, :mod:`cloud_ingest.store.lifecycle`): the rollup tables, filled
from the readings already stored (``rollup_1m`` by day: SQLite tables, PostgreSQL partitions);
SQLite's single ``readings`` table becomes one table per day (each with its rollup trigger);
PostgreSQL gets the ``packed`` parent of the compacted tables.
"""

from __future__ import annotations

import logging

from sqlstore import Migration, Sql, Variant, render

log = logging.getLogger(__name__)

COMPRESS_AFTER = "30 days"  # beyond the ingest late limit, so late data rarely lands in a compressed chunk

READINGS_COLUMNS = """
    device text NOT NULL, metric text NOT NULL, ts timestamptz NOT NULL,
    value float8 NOT NULL, quality int2 NOT NULL DEFAULT 0, PRIMARY KEY (device, metric, ts)"""

ENSURE_PARTITIONS_FN = """
CREATE OR REPLACE FUNCTION citywatch_ensure_partitions(first_day int8, last_day int8) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE d int8;
BEGIN
  FOR d IN first_day..last_day LOOP
    IF to_regclass(format('readings_d%s', d)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE readings_d%s PARTITION OF readings FOR VALUES FROM (%L) TO (%L)', d,
          timestamptz 'epoch' + d * interval '1 day', timestamptz 'epoch' + (d + 1) * interval '1 day');
      EXCEPTION WHEN duplicate_table THEN NULL;  -- another ingester created it first
      END;
    END IF;
  END LOOP;
END $$;
"""


def _pg_readings(sql: Sql) -> None:
    """A TimescaleDB hypertable when the extension can be enabled, else native daily partitions."""
    import psycopg

    if sql.has_table("readings"):
        return  # created by release d572fb5 (adopted as version 1) or by an admin
    timescale = False
    if sql.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")[0][0]:
        try:
            with sql.conn.transaction():  # a savepoint: a refusal must not abort the migration
                sql.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            timescale = True
        except psycopg.Error as exc:
            log.warning("timescaledb is available but could not be enabled (%s); using native partitions", exc)
    else:
        log.info("timescaledb extension not available: readings use native daily range partitions")
    if timescale:
        sql.execute(f"CREATE TABLE IF NOT EXISTS readings ({READINGS_COLUMNS})")
        sql.execute(
            "SELECT create_hypertable('readings', 'ts', chunk_time_interval => interval '1 day', if_not_exists => true)"
        )
        sql.execute(
            "ALTER TABLE readings SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'device, metric', timescaledb.compress_orderby = 'ts')"
        )
        sql.execute(f"SELECT add_compression_policy('readings', interval '{COMPRESS_AFTER}', if_not_exists => true)")
    else:
        sql.execute(f"CREATE TABLE IF NOT EXISTS readings ({READINGS_COLUMNS}) PARTITION BY RANGE (ts)")
        sql.execute(ENSURE_PARTITIONS_FN)


DAY_MS = 86_400_000

ROLLUP_COLUMNS = (
    "device TEXT NOT NULL, metric TEXT NOT NULL, bucket_ms {BIGINT} NOT NULL, n {BIGINT} NOT NULL, "
    "total {REAL} NOT NULL, mn {REAL} NOT NULL, mx {REAL} NOT NULL, last_ts_ms {BIGINT} NOT NULL, "
    "last_v {REAL} NOT NULL, PRIMARY KEY (device, metric, bucket_ms)"
)


def rollup_merge(table: str) -> str:
    """The upsert that folds a new partial aggregate (``excluded``) into a rollup row."""
    return (
        f"ON CONFLICT (device, metric, bucket_ms) DO UPDATE SET n = {table}.n + excluded.n, "
        f"total = {table}.total + excluded.total, "
        f"mn = CASE WHEN excluded.mn < {table}.mn THEN excluded.mn ELSE {table}.mn END, "
        f"mx = CASE WHEN excluded.mx > {table}.mx THEN excluded.mx ELSE {table}.mx END, "
        f"last_v = CASE WHEN excluded.last_ts_ms > {table}.last_ts_ms THEN excluded.last_v ELSE {table}.last_v END, "
        f"last_ts_ms = CASE WHEN excluded.last_ts_ms > {table}.last_ts_ms "
        f"THEN excluded.last_ts_ms ELSE {table}.last_ts_ms END"
    )


def sqlite_day_ddl(day: int) -> list[str]:
    """SQLite's hot table of one day, its 1-minute rollup table (expired by whole days, as the raw
    data is), and the trigger that rolls up each row actually inserted."""
    t = f"readings_d{day}"
    ddl = [
        f"CREATE TABLE IF NOT EXISTS {t} (device TEXT NOT NULL, metric TEXT NOT NULL, ts_ms INTEGER NOT NULL, "
        "value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (device, metric, ts_ms)) WITHOUT ROWID",
        render(f"CREATE TABLE IF NOT EXISTS rollup_1m_d{day} ({ROLLUP_COLUMNS}) WITHOUT ROWID", "sqlite"),
    ]
    body = " ".join(
        f"INSERT INTO {table} VALUES (NEW.device, NEW.metric, NEW.ts_ms / {res * 1000} * {res * 1000}, 1, "
        f"NEW.value, NEW.value, NEW.value, NEW.ts_ms, NEW.value) {rollup_merge(table)};"
        for res, table in ((60, f"rollup_1m_d{day}"), (3600, "rollup_1h"))
    )
    ddl.append(f"CREATE TRIGGER IF NOT EXISTS {t}_rollup AFTER INSERT ON {t} BEGIN {body} END")
    return ddl


def _sqlite_day_tables(sql: Sql) -> None:
    """Move the single readings table into day tables; their triggers fill the rollups on the way."""
    days = [int(r[0]) for r in sql.execute(f"SELECT DISTINCT ts_ms / {DAY_MS} FROM readings")]
    for day in days:
        for stmt in sqlite_day_ddl(day):
            sql.execute(stmt)
        sql.execute(
            f"INSERT INTO readings_d{day} SELECT * FROM readings WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
            (day * DAY_MS, (day + 1) * DAY_MS),
        )
    sql.execute("DROP TABLE readings")


ENSURE_PARTITIONS_FN_V2 = """
CREATE OR REPLACE FUNCTION citywatch_ensure_partitions(first_day int8, last_day int8) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE d int8;
BEGIN
  FOR d IN first_day..last_day LOOP
    IF to_regclass(format('readings_d%s', d)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE readings_d%s PARTITION OF readings FOR VALUES FROM (%L) TO (%L)', d,
          timestamptz 'epoch' + d * interval '1 day', timestamptz 'epoch' + (d + 1) * interval '1 day');
      EXCEPTION WHEN duplicate_table THEN NULL;  -- another ingester created it first
      END;
    END IF;
    IF to_regclass(format('rollup_1m_d%s', d)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE rollup_1m_d%s PARTITION OF rollup_1m FOR VALUES FROM (%s) TO (%s) WITH (fillfactor = 70)',
          d, d::int8 * 86400000, (d::int8 + 1) * 86400000);  -- a FOR loop variable is int4
      EXCEPTION WHEN duplicate_table THEN NULL;
      END;
    END IF;
  END LOOP;
END $$;
"""


def _pg_lifecycle(sql: Sql) -> None:
    """Rollups of the readings already stored, and the parent of the compacted tables (SQLite's
    compacted tables are standalone, created per class and day by compaction).

    With native partitions, ``rollup_1m`` has a partition per day too, created with the readings
    partition, so 1-minute rollups expire by dropping days; under TimescaleDB it is one table.
    Updates dominate rollup writes: fillfactor 70 leaves room for HOT updates.
    """
    native = bool(sql.execute("SELECT count(*) FROM pg_proc WHERE proname = 'citywatch_ensure_partitions'")[0][0])
    sql.execute(render(f"CREATE TABLE rollup_1m ({ROLLUP_COLUMNS})", "postgresql")
                + (" PARTITION BY RANGE (bucket_ms)" if native else " WITH (fillfactor = 70)"))
    sql.execute("ALTER TABLE rollup_1h SET (fillfactor = 70)")
    if native:
        sql.execute(ENSURE_PARTITIONS_FN_V2)
        lo, hi = sql.execute(f"SELECT min(ts_ms) / {DAY_MS}, max(ts_ms) / {DAY_MS} FROM "
                             "(SELECT (extract(epoch FROM ts) * 1000)::int8 AS ts_ms FROM readings) r")[0]
        if lo is not None:
            sql.execute("SELECT citywatch_ensure_partitions(?, ?)", (int(lo), int(hi)))
    sql.execute(
        "CREATE TABLE packed (cls text NOT NULL, device text NOT NULL, metric text NOT NULL, "
        "hour_ms int8 NOT NULL, n int4 NOT NULL, block bytea NOT NULL, "
        "PRIMARY KEY (cls, device, metric, hour_ms)) PARTITION BY LIST (cls)"
    )
    for res, table in ((60, "rollup_1m"), (3600, "rollup_1h")):
        step = res * 1000
        sql.execute(
            f"INSERT INTO {table} SELECT device, metric, t / {step} * {step}, count(*), sum(value), min(value), "
            f"max(value), max(t), (max(ARRAY[t::float8, value]))[2] "
            "FROM (SELECT device, metric, (extract(epoch FROM ts) * 1000)::int8 AS t, value FROM readings) r "
            "GROUP BY 1, 2, 3"
        )


MIGRATIONS = (
    Migration(1, "readings, latest, events, dead letters, batches, gaps, gateways, devices", (
        Variant(
            sqlite="CREATE TABLE IF NOT EXISTS readings ("
            " device TEXT NOT NULL, metric TEXT NOT NULL, ts_ms INTEGER NOT NULL,"
            " value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (device, metric, ts_ms)) WITHOUT ROWID",
            postgresql=_pg_readings,
        ),
        Variant(
            sqlite="CREATE TABLE IF NOT EXISTS latest ("
            " device TEXT NOT NULL, metric TEXT NOT NULL, ts_ms INTEGER NOT NULL,"
            " value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (device, metric)) WITHOUT ROWID",
            postgresql="CREATE TABLE IF NOT EXISTS latest ("
            " device text NOT NULL, metric text NOT NULL, ts timestamptz NOT NULL,"
            " value float8 NOT NULL, quality int2 NOT NULL DEFAULT 0, PRIMARY KEY (device, metric))",
        ),
        Variant(
            sqlite="CREATE TABLE IF NOT EXISTS events ("
            " device TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, ts_ms INTEGER NOT NULL,"
            " gw TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (device, kind, id)) WITHOUT ROWID",
            postgresql="CREATE TABLE IF NOT EXISTS events ("
            " device text NOT NULL, kind text NOT NULL, id text NOT NULL, ts timestamptz NOT NULL,"
            " gw text NOT NULL, body jsonb NOT NULL, PRIMARY KEY (device, kind, id))",
        ),
        "CREATE TABLE IF NOT EXISTS dead_letters ("
        " id {SERIAL}, received_at {REAL} NOT NULL, topic TEXT NOT NULL, gw TEXT, reason TEXT NOT NULL,"
        " detail TEXT NOT NULL, raw {BLOB} NOT NULL, digest {BLOB} NOT NULL, UNIQUE (topic, digest))",
        "CREATE TABLE IF NOT EXISTS batches ("
        " gw TEXT NOT NULL, boot TEXT NOT NULL, seq {BIGINT} NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,"
        " committed_at {REAL} NOT NULL, PRIMARY KEY (gw, boot, seq)){WITHOUT_ROWID}",
        "CREATE TABLE IF NOT EXISTS gaps ("
        " gw TEXT NOT NULL, boot TEXT NOT NULL, first_seq {BIGINT} NOT NULL, last_seq {BIGINT} NOT NULL,"
        " detected_at {REAL} NOT NULL, filled_at {REAL}, PRIMARY KEY (gw, boot, first_seq)){WITHOUT_ROWID}",
        "CREATE TABLE IF NOT EXISTS gateways ("
        " gw TEXT PRIMARY KEY, state TEXT NOT NULL, boot TEXT NOT NULL, agent TEXT,"
        " health {JSON} NOT NULL DEFAULT '{}', updated_at {REAL} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS devices ("
        " id TEXT PRIMARY KEY, gw TEXT NOT NULL, info {JSON} NOT NULL, updated_at {REAL} NOT NULL)",
    )),
    Migration(2, "rollups (1 min, 1 h), SQLite day tables, compacted blocks", (
        "CREATE TABLE rollup_1h (" + ROLLUP_COLUMNS + "){WITHOUT_ROWID}",
        Variant(sqlite=_sqlite_day_tables, postgresql=_pg_lifecycle),
    )),
    # a birth replaces its gateway's device list (DELETE ... WHERE gw = ...): without the index each
    # birth scanned every device of the city, and 1 000 births of 1 000 devices stalled the ingester
    Migration(3, "devices by gateway", ("CREATE INDEX devices_gw ON devices (gw)",)),
)
