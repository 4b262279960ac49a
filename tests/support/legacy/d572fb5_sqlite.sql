-- The schema and sample data of ingest, rules and case stores as release d572fb5 created them
-- (generated once by opening each store with that code and dumping; never edit).
CREATE TABLE alarm_events (
                alarm_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                t_ms INTEGER NOT NULL,
                received_at REAL NOT NULL,
                PRIMARY KEY (alarm_id, kind, t_ms)
            );
INSERT INTO "alarm_events" VALUES('wl-0001:road-water-depth:1','raised',1795572000000,1795572005.0);
CREATE TABLE alarm_state (
                alarm_id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                rule TEXT NOT NULL,
                active INTEGER NOT NULL,
                acked INTEGER NOT NULL DEFAULT 0,
                severity TEXT NOT NULL,
                raised_at REAL,
                cleared_at REAL,
                last_kind TEXT NOT NULL,
                last_t REAL NOT NULL,
                value REAL,
                evidence TEXT NOT NULL DEFAULT '{}'
            );
INSERT INTO "alarm_state" VALUES('wl-0001:road-water-depth:1','wl-0001','road-water-depth',1,0,'critical',1795572000.0,NULL,'raised',1795572000.0,1.0,'{}');
CREATE TABLE batches (
    gw TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    n INTEGER NOT NULL, committed_at REAL NOT NULL,
    PRIMARY KEY (gw, boot, seq)) WITHOUT ROWID;
INSERT INTO "batches" VALUES('gw-01','boot-a',1,'readings',5,1.79629389421229052545e+09);
CREATE TABLE case_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                case_id INTEGER NOT NULL REFERENCES cases (id),
                t REAL NOT NULL,
                actor TEXT NOT NULL,
                role TEXT,
                action TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL,
                note TEXT NOT NULL DEFAULT '',
                request_id TEXT,
                data TEXT NOT NULL DEFAULT '{}'
            );
INSERT INTO "case_audit" VALUES(1,1,1795572005.0,'system','system','report',NULL,'reported','raised by alarm wl-0001:road-water-depth:1',NULL,'{"alarm_id":"wl-0001:road-water-depth:1","device":"wl-0001","rule":"road-water-depth","kind":"raised","severity":"critical","t":1795572000.0,"value":1.0,"evidence":{}}');
INSERT INTO "case_audit" VALUES(2,1,1795572005.0,'system','system','file','reported','filed','auto: critical road-water-depth',NULL,'{}');
INSERT INTO "case_audit" VALUES(3,1,1795572005.0,'system','system','dispatch','filed','dispatched','auto: critical road-water-depth',NULL,'{}');
CREATE TABLE case_dead_letters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                t REAL NOT NULL,
                topic TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '',
                payload TEXT NOT NULL
            );
CREATE TABLE case_links (
                alarm_id TEXT PRIMARY KEY,
                case_id INTEGER NOT NULL REFERENCES cases (id),
                device TEXT NOT NULL,
                rule TEXT NOT NULL,
                t REAL NOT NULL
            );
INSERT INTO "case_links" VALUES('wl-0001:road-water-depth:1',1,'wl-0001','road-water-depth',1795572000.0);
CREATE TABLE cases (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                source TEXT NOT NULL,
                source_key TEXT UNIQUE,
                kind TEXT NOT NULL,
                category_code TEXT NOT NULL,
                service_code TEXT NOT NULL,
                category_name TEXT NOT NULL,
                urgency TEXT NOT NULL,
                state TEXT NOT NULL,
                is_open INTEGER NOT NULL,
                extension_pending INTEGER NOT NULL DEFAULT 0,
                extensions INTEGER NOT NULL DEFAULT 0,
                unit TEXT NOT NULL,
                grid TEXT,
                street TEXT,
                district TEXT,
                device TEXT,
                rule TEXT,
                severity TEXT,
                corr_key TEXT,
                auto_close INTEGER NOT NULL DEFAULT 0,
                lat REAL,
                lon REAL,
                address TEXT,
                description TEXT NOT NULL DEFAULT '',
                reporter TEXT,
                created_at REAL NOT NULL,
                filed_at REAL,
                dispatched_at REAL,
                handled_at REAL,
                verified_at REAL,
                closed_at REAL,
                deadline REAL NOT NULL,
                due_at REAL,
                updated_at REAL NOT NULL,
                version INTEGER NOT NULL DEFAULT 1,
                data TEXT NOT NULL DEFAULT '{}'
            );
INSERT INTO "cases" VALUES(1,'iot','alarm:wl-0001:road-water-depth:1','event','0111','S0111','道路积水','very_urgent','dispatched',1,0,0,'lingyin-street','330106001001','lingyin-street','xihu','wl-0001','road-water-depth','critical','device:wl-0001:road-water-depth',1,30.25,120.13,NULL,'[IoT] 道路积水: road-water-depth on wl-0001 (critical) value=1','iot',1795572005.0,1795572005.0,1795572005.0,NULL,NULL,NULL,1795575605.0,1795575605.0,1795572005.0,3,'{"alarm":{"alarm_id":"wl-0001:road-water-depth:1","device":"wl-0001","rule":"road-water-depth","kind":"raised","severity":"critical","t":1795572000.0,"value":1.0,"evidence":{}}}');
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, topic TEXT NOT NULL,
    gw TEXT, reason TEXT NOT NULL, detail TEXT NOT NULL, raw BLOB NOT NULL, digest BLOB NOT NULL,
    UNIQUE (topic, digest));
INSERT INTO "dead_letters" VALUES(1,1795572000.0,'citywatch/gw-01/up','gw-01','bad_json','line 1',X'FF7B',X'B26F99543485CAB0666A50160ED4281D01669A10FEB99985525B10DD791F1E9D');
CREATE TABLE device_registry (
                device TEXT PRIMARY KEY,
                info TEXT NOT NULL,
                updated_at REAL NOT NULL
            );
CREATE TABLE devices (
    id TEXT PRIMARY KEY, gw TEXT NOT NULL, info TEXT NOT NULL, updated_at REAL NOT NULL);
INSERT INTO "devices" VALUES('wl-0001','gw-01','{"id":"wl-0001","profile":"radar-level","kind":"water_gauge","lat":30.25,"lon":120.13,"grid":"330106001001"}',1795572000.0);
CREATE TABLE escalations (
                alarm_id TEXT PRIMARY KEY,
                due_t REAL NOT NULL,
                notice TEXT NOT NULL
            );
CREATE TABLE events (
    device TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    gw TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (device, kind, id)) WITHOUT ROWID;
INSERT INTO "events" VALUES('mh-0002','cover_opened','ev-1',1795572002000,'gw-01','{"angle_deg":31.5}');
CREATE TABLE gaps (
    gw TEXT NOT NULL, boot TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    detected_at REAL NOT NULL, filled_at REAL,
    PRIMARY KEY (gw, boot, first_seq)) WITHOUT ROWID;
INSERT INTO "gaps" VALUES('gw-01','boot-a',7,9,1795572003.0,NULL);
CREATE TABLE gateways (
    gw TEXT PRIMARY KEY, state TEXT NOT NULL, boot TEXT NOT NULL, agent TEXT,
    health TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL);
INSERT INTO "gateways" VALUES('gw-01','online','boot-a','agent/1','{"cpu":3}',1795572000.0);
CREATE TABLE latest (
    device TEXT NOT NULL, metric TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, metric)) WITHOUT ROWID;
INSERT INTO "latest" VALUES('wl-0001','water_depth_m',1795572004000,0.4,0);
CREATE TABLE notify_log (
                key TEXT PRIMARY KEY,
                t REAL NOT NULL
            );
CREATE TABLE notify_outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                target TEXT NOT NULL,
                key TEXT NOT NULL,
                notice TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_t REAL NOT NULL,
                created_t REAL NOT NULL
            );
CREATE TABLE readings (
    device TEXT NOT NULL, metric TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value REAL NOT NULL, quality INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device, metric, ts_ms)) WITHOUT ROWID;
INSERT INTO "readings" VALUES('wl-0001','water_depth_m',1795572000000,0.0,0);
INSERT INTO "readings" VALUES('wl-0001','water_depth_m',1795572001000,0.1,0);
INSERT INTO "readings" VALUES('wl-0001','water_depth_m',1795572002000,0.2,0);
INSERT INTO "readings" VALUES('wl-0001','water_depth_m',1795572003000,3.00000000000000044408e-01,0);
INSERT INTO "readings" VALUES('wl-0001','water_depth_m',1795572004000,0.4,0);
CREATE TABLE rules_alarms ( alarm_id TEXT PRIMARY KEY, device TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, max_severity TEXT NOT NULL, active INTEGER NOT NULL, raised_t DOUBLE PRECISION NOT NULL, cleared_t DOUBLE PRECISION, acked_by TEXT, acked_t DOUBLE PRECISION, value DOUBLE PRECISION, evidence TEXT NOT NULL, updated_t DOUBLE PRECISION NOT NULL);
INSERT INTO "rules_alarms" VALUES('wl-0001/road-water-depth','wl-0001','road-water-depth','major','major',1,1795572004.0,NULL,NULL,NULL,0.4,'{"depth_m":0.4}',1795572004.0);
CREATE TABLE rules_device_state (device TEXT PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO "rules_device_state" VALUES('wl-0001','{"above":true}');
CREATE TABLE rules_state (id INTEGER PRIMARY KEY, state TEXT NOT NULL, updated_t DOUBLE PRECISION);
INSERT INTO "rules_state" VALUES(1,'{"t":1795572004.0}',1795572004.0);
CREATE TABLE rules_transitions ( seq INTEGER PRIMARY KEY AUTOINCREMENT, alarm_id TEXT NOT NULL, device TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION, evidence TEXT NOT NULL, actor TEXT, published INTEGER NOT NULL DEFAULT 0, UNIQUE (alarm_id, kind, t));
INSERT INTO "rules_transitions" VALUES(1,'wl-0001/road-water-depth','wl-0001','road-water-depth','raised','major',1795572004.0,0.4,'{"depth_m":0.4}',NULL,0);
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,'cases, links, alarms, audit');
INSERT INTO "schema_migrations" VALUES(2,'notification outbox and pending escalations survive a restart');
CREATE INDEX rules_alarms_device ON rules_alarms (device, raised_t);
CREATE INDEX rules_alarms_active ON rules_alarms (active, raised_t);
CREATE INDEX rules_transitions_unpub ON rules_transitions (published, seq);
CREATE INDEX cases_unit_open_deadline ON cases (unit, is_open, deadline, id);
CREATE INDEX cases_unit_state_deadline ON cases (unit, state, deadline, id);
CREATE INDEX cases_open_deadline ON cases (is_open, deadline, id);
CREATE INDEX cases_state_deadline ON cases (state, deadline, id);
CREATE INDEX cases_created ON cases (created_at);
CREATE INDEX cases_updated ON cases (updated_at);
CREATE UNIQUE INDEX cases_open_corr ON cases (corr_key) WHERE is_open = 1 AND corr_key IS NOT NULL;
CREATE INDEX case_links_case ON case_links (case_id);
CREATE INDEX case_links_device ON case_links (device, case_id);
CREATE INDEX case_audit_case ON case_audit (case_id, id);
CREATE UNIQUE INDEX case_audit_request ON case_audit (case_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX escalations_due ON escalations (due_t);
CREATE INDEX notify_outbox_due ON notify_outbox (next_t);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('dead_letters',1);
INSERT INTO "sqlite_sequence" VALUES('rules_transitions',1);
INSERT INTO "sqlite_sequence" VALUES('cases',1);
INSERT INTO "sqlite_sequence" VALUES('case_audit',3);
