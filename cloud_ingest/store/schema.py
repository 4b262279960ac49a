"""The ingest store's schema, one migration list for SQLite and PostgreSQL.

Tables whose SQL agrees are written once with :mod:`sqlstore.dialect` type tokens; the
time-keyed tables differ for speed (SQLite keys readings by integer ``ts_ms`` in a
``WITHOUT ROWID`` table; PostgreSQL uses ``timestamptz``, daily range partitions created by
a SECURITY DEFINER function, or a TimescaleDB hypertable when the extension is available).
Version 1 is the schema release d572fb5 created with ``CREATE ... IF NOT EXISTS``, so it
also adopts a database from that release. Never edit a released migration; add a new one.
"""

from __future__ import annotations

import logging

from sqlstore import Migration, Sql, Variant

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
)
