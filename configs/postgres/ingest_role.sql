-- Least-privilege PostgreSQL role for `citywatch ingest`.
--
-- Run as the database owner (psql -v ingest_password="'...'" -d citywatch -f ingest_role.sql)
-- AFTER the schema exists: start `citywatch ingest` once as the owner (it creates or upgrades the tables,
-- the daily-partition function and, when available, the TimescaleDB hypertable), or create it
-- with `python -c "from cloud_ingest.store import open_store; open_store('postgresql://owner@.../citywatch')"`.
--
-- What the ingester may do:
--   * time series and evidence are append-only: SELECT + INSERT on readings, events,
--     dead_letters, batches (no UPDATE, DELETE or TRUNCATE; dedup is ON CONFLICT DO NOTHING);
--   * derived state is upserted: INSERT + UPDATE on latest (newest value per series),
--     gateways and gaps; devices additionally DELETE (a birth message replaces the gateway's
--     device list). These four hold nothing that cannot be rebuilt from the messages;
--   * no DDL: new daily partitions of readings come from the SECURITY DEFINER function
--     citywatch_ensure_partitions(), owned by the schema owner;
--   * TEMPORARY on the database, for the per-connection COPY staging table.

\set ON_ERROR_STOP on

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cw_ingest') THEN
    CREATE ROLE cw_ingest LOGIN;
  END IF;
END $$;
-- ALTER ROLE cw_ingest PASSWORD :ingest_password;   -- set a password (or use peer/cert auth)

SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO cw_ingest', current_database()) \gexec
GRANT USAGE ON SCHEMA public TO cw_ingest;

GRANT SELECT ON schema_version TO cw_ingest;  -- start-up check that the schema is current
GRANT SELECT, INSERT ON readings, events, dead_letters, batches TO cw_ingest;
GRANT SELECT, INSERT, UPDATE ON latest, gateways, gaps TO cw_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON devices TO cw_ingest;
GRANT USAGE ON SEQUENCE dead_letters_id_seq TO cw_ingest;

-- partitions: only through the definer function
DO $$
BEGIN
  IF to_regproc('citywatch_ensure_partitions') IS NOT NULL THEN
    REVOKE ALL ON FUNCTION citywatch_ensure_partitions(int8, int8) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION citywatch_ensure_partitions(int8, int8) TO cw_ingest;
  END IF;
END $$;

-- Read-only role for the console / rule engine queries (latest, range, iter_readings, registry).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cw_reader') THEN
    CREATE ROLE cw_reader LOGIN;
  END IF;
END $$;
SELECT format('GRANT CONNECT ON DATABASE %I TO cw_reader', current_database()) \gexec
GRANT USAGE ON SCHEMA public TO cw_reader;
GRANT SELECT ON readings, latest, events, dead_letters, batches, gaps, gateways, devices, schema_version
  TO cw_reader;
