"""configs/postgres/service_roles.sql: each service can do its job as its own role, and no more."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.cases import GAUGE, T0, alarm
from tests.support.services import missing, pg_database

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def _as(dsn: str, role: str) -> str:
    head, db = dsn.rsplit("/", 1)
    return head.replace("postgres@", f"{role}@") + "/" + db


@pytest.fixture(scope="module")
def district_db() -> Iterator[str]:
    """A fresh database with every service's schema, created as the owner, then the role files applied."""
    if shutil.which("psql") is None:
        missing("psql not found (apt-get install postgresql-client)")
    from case_bridge.store import open_case_store
    from cloud_ingest.store import open_store
    from rules.store import open_alarm_store

    with pg_database() as dsn:
        open_store(dsn).close()
        open_alarm_store(dsn).close()
        open_case_store(dsn).close()
        for sql in ("ingest_role.sql", "service_roles.sql"):
            subprocess.run(["psql", "-q", "-d", dsn, "-f", str(REPO / "configs/postgres" / sql)], check=True,
                           capture_output=True)
        yield dsn


def test_case_bridge_and_console_work_as_their_roles(district_db: str) -> None:
    from case_bridge.store import open_case_store

    bridge = open_case_store(_as(district_db, "cw_cases"))  # as `citywatch cases` opens it
    try:
        outcome = bridge.apply_alarm(alarm("wl-0001", "road-water-depth", severity="critical"), GAUGE, T0)
        assert outcome.case_id is not None
    finally:
        bridge.close()
    console = open_case_store(_as(district_db, "cw_console"), migrate_schema=False)
    try:
        case = console.get(outcome.case_id)
        actions = console.allowed_actions(case, "supervisor")
        assert actions, case.state
        console.transition(case.id, actions[0], "sup", note="test", role="supervisor", now=T0 + 60)
        assert len(console.timeline(case.id)) > 1
    finally:
        console.close()


@pytest.mark.parametrize(
    ("role", "sql"),
    [
        ("cw_console", "DELETE FROM case_audit"),
        ("cw_console", "UPDATE case_audit SET note = 'x'"),
        ("cw_console", "INSERT INTO readings SELECT * FROM readings LIMIT 0"),
        ("cw_cases", "DELETE FROM case_audit"),
        ("cw_cases", "TRUNCATE cases"),
        ("cw_rules", "DELETE FROM readings"),
        ("cw_rules", "UPDATE cases SET state = 'closed'"),
        ("cw_ingest", "DELETE FROM readings"),
        ("cw_rules", "CREATE TABLE x (i int)"),
    ],
)
def test_what_a_role_may_not_do_is_refused(district_db: str, role: str, sql: str) -> None:
    with psycopg.connect(_as(district_db, role), autocommit=True) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        conn.execute(sql)


def test_rule_engine_works_as_its_role(district_db: str) -> None:
    from contracts.alarms import AlarmTransition, Severity, TransitionKind
    from rules.store import open_alarm_store

    store = open_alarm_store(_as(district_db, "cw_rules"))
    try:
        tr = AlarmTransition("wl-0001.road-water-depth.1", "wl-0001", "road-water-depth", TransitionKind.RAISED,
                             Severity.MAJOR, T0, 0.3)
        store.commit(None, [tr])
        pending = store.unpublished()
        assert [t.alarm_id for _, t in pending] == [tr.alarm_id]
        store.mark_published([seq for seq, _ in pending])
        assert store.unpublished() == []
        assert store.get(tr.alarm_id) is not None
    finally:
        store.close()
