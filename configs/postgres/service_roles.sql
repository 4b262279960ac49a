-- Least-privilege PostgreSQL roles for the rule engine, the case bridge and the console.
-- (The ingester's role and a read-only cw_reader are in ingest_role.sql.)
--
-- Run as the database owner AFTER the schemas exist (start each service once as the owner,
-- which creates or upgrades its tables): psql -d citywatch -f service_roles.sql
-- After an upgrade to a release with new migrations, start each service once as the owner
-- again (the roles cannot run DDL), then re-run this file for the grants on new tables.
-- No role gets DDL, TRUNCATE or DELETE on history: the case audit trail is append-only.

\set ON_ERROR_STOP on

DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['cw_rules', 'cw_cases', 'cw_console'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
  END LOOP;
END $$;
-- ALTER ROLE cw_rules PASSWORD '...';  (likewise cw_cases, cw_console; or peer/cert auth)

SELECT format('GRANT CONNECT ON DATABASE %I TO cw_rules, cw_cases, cw_console', current_database()) \gexec
GRANT USAGE ON SCHEMA public TO cw_rules, cw_cases, cw_console;

-- schema versions: read at start-up to see that the schema is current (only the owner migrates)
GRANT SELECT ON schema_version TO cw_rules, cw_cases, cw_console;

-- rule engine: its state and alarms (state rows are replaced, alarms upserted, transitions marked published);
-- reads history for backtests
GRANT SELECT, INSERT, UPDATE, DELETE ON rules_state, rules_device_state TO cw_rules;
GRANT SELECT, INSERT, UPDATE ON rules_alarms TO cw_rules;
GRANT SELECT, INSERT, UPDATE ON rules_transitions TO cw_rules;  -- UPDATE: the published mark
GRANT SELECT ON readings, latest, events, devices, gateways TO cw_rules;

-- case bridge: cases and their bookkeeping; the audit trail and alarm log are append-only
GRANT SELECT, INSERT, UPDATE ON cases, case_links, alarm_state, device_registry, escalations,
  notify_outbox, notify_log TO cw_cases;
GRANT SELECT, INSERT ON case_audit, alarm_events, case_dead_letters TO cw_cases;
GRANT DELETE ON notify_outbox, escalations TO cw_cases;  -- delivered notices, settled escalations

-- console: reads everything it shows; writes cases only through workflow transitions
-- (case rows and their audit rows) and Open311 reports; alarms are acknowledged over MQTT
GRANT SELECT ON readings, latest, events, devices, gateways, gaps, dead_letters TO cw_console;
GRANT SELECT ON rules_alarms, rules_transitions TO cw_console;
GRANT SELECT, INSERT, UPDATE ON cases, case_links TO cw_console;
GRANT SELECT, INSERT ON case_audit TO cw_console;
GRANT SELECT ON alarm_state, alarm_events, device_registry, escalations TO cw_console;

-- identity columns and serials
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cw_cases, cw_console, cw_rules;
