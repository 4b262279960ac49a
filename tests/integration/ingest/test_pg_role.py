"""configs/postgres/ingest_role.sql is enough for the ingest store, and no more."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from cloud_ingest.store import DeadLetterIn, SeqMark, StatusUpdate, WriteBatch, open_store
from contracts.payloads import Status
from contracts.reading import DeviceInfo, Reading
from tests.support.services import missing, pg_database

pytestmark = pytest.mark.integration
SQL = Path(__file__).resolve().parents[3] / "configs/postgres/ingest_role.sql"


def test_ingest_role_can_ingest_but_not_alter(tmp_path: Path) -> None:
    psql = "/usr/bin/psql"
    if not Path(psql).exists():
        missing("psql not installed")
    with pg_database() as dsn:
        open_store(dsn).close()  # the owner creates the schema
        res = subprocess.run([psql, dsn, "-q", "-f", str(SQL)], check=False, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        role_dsn = dsn.replace("postgres@", "cw_ingest@", 1)
        store = open_store(role_dsn)
        now = time.time()
        try:
            res_w = store.write(
                WriteBatch(
                    readings=[Reading("wl-1", "depth", now, 1.0, "m"), Reading("wl-1", "depth", now - 86400, 2.0, "m")],
                    dead_letters=[DeadLetterIn(now, "citywatch/v1/gw/g/telemetry", "g", "not_json", "", b"x")],
                    seqs=[SeqMark("g", "b1", 1, "telemetry", 2)],
                    statuses=[
                        StatusUpdate("g", Status("online", "b1", "a", [DeviceInfo("wl-1", "p", "water_gauge")]), now)
                    ],
                )
            )
            assert res_w.readings_inserted == 2
            # partitions come from the definer function; the role cannot insert into them directly,
            # so a one-day batch also goes through the parent
            store.write(WriteBatch(readings=[Reading("wl-1", "depth", now + 1, 3.0, "m")]))
            assert store.committed_seqs("g", "b1", 0) == [1]
            assert store.latest()[0].value == 3.0
        finally:
            store.close()
        with psycopg.connect(role_dsn, autocommit=True) as conn:
            for sql in (
                "DELETE FROM readings",
                "UPDATE readings SET value = 0",
                "TRUNCATE batches",
                f"CREATE TABLE x_{uuid.uuid4().hex[:6]} (a int)",
                "DROP TABLE dead_letters",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
