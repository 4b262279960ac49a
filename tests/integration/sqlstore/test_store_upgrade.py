"""A database written by release d572fb5 upgrades in place, on SQLite and PostgreSQL.

The fixtures under tests/support/legacy/ are that release's schema and data for the ingest,
rules and case stores (dumped from its code). Opening them with this release must keep every
row, leave the schema exactly as a fresh database gets it, and a second open changes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from case_bridge.db import MIGRATIONS as CASE_MIGRATIONS
from case_bridge.store import open_case_store
from cloud_ingest.store import WriteBatch, open_store
from cloud_ingest.store.schema import MIGRATIONS as INGEST_MIGRATIONS
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import Reading
from rules.store import MIGRATIONS as RULES_MIGRATIONS
from rules.store import open_alarm_store
from sqlstore import migrate
from tests.support.cases import GAUGE, T0, alarm
from tests.support.services import pg_database

pytestmark = pytest.mark.integration

LEGACY = Path(__file__).resolve().parents[2] / "support" / "legacy"
STORES = {"ingest": INGEST_MIGRATIONS, "rules": RULES_MIGRATIONS, "cases": CASE_MIGRATIONS}
CURRENT = {store: list(range(1, len(m) + 1)) for store, m in STORES.items()}
ALARM = "wl-0001/road-water-depth"


@contextmanager
def connection(url: str) -> Iterator[Any]:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def database(dialect: str, tmp: Path, name: str) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{tmp / name}.db"
    else:
        with pg_database() as dsn:
            yield dsn


def load_legacy(url: str, dialect: str) -> None:
    text = (LEGACY / f"d572fb5_{dialect}.sql").read_text()
    with connection(url) as conn:
        if dialect == "sqlite":
            conn.executescript(text)
        else:
            conn.execute(text)


def user_tables(conn: Any, dialect: str, days: bool = False) -> list[str]:
    """Tables; day tables of readings (PostgreSQL partitions, SQLite tables) only with ``days``:
    they are data (one per day), not schema."""
    if dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    return [r[0] for r in conn.execute(sql).fetchall()
            if days or not r[0].startswith(("readings_d", "rollup_1m_d"))]


def shape(url: str, dialect: str) -> dict[str, Any]:
    """Tables with their columns (type, null, default, key) and indexes: what a fresh database gets."""
    with connection(url) as conn:
        out: dict[str, Any] = {}
        for t in user_tables(conn, dialect):
            if dialect == "sqlite":
                cols = conn.execute(f"PRAGMA table_info({t})").fetchall()
                idx = sorted((r[1], r[2], r[3]) for r in conn.execute(f"PRAGMA index_list({t})").fetchall())
                without_rowid = conn.execute(
                    "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE name = ?", (t,)
                ).fetchone()
                out[t] = (cols, idx, without_rowid)
            else:
                cols = conn.execute(
                    "SELECT column_name, data_type, is_nullable, column_default, is_identity "
                    "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
                    "ORDER BY ordinal_position",
                    (t,),
                ).fetchall()
                idx = sorted(r[0] for r in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s", (t,)
                ).fetchall())
                out[t] = (cols, idx)
        if dialect == "postgresql":
            out["functions"] = sorted(r[0] for r in conn.execute(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            ).fetchall())
        return out


LIFECYCLE_TABLES = ("rollup_1m", "rollup_1h", "packed")  # ingest schema version 2: derived from readings


def rows(url: str, dialect: str, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row by table; SQLite's day tables (schema version 2) count as ``readings``, as
    PostgreSQL's partitions do (read through the parent there). With ``columns`` (a table's
    columns before the upgrade), only those are read: columns a migration added are new data."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with connection(url) as conn:
        for t in user_tables(conn, dialect, days=dialect == "sqlite"):
            if t in ("schema_version", "schema_migrations", *LIFECYCLE_TABLES) or t.startswith("rollup_1m_d"):
                continue
            key = "readings" if t.startswith("readings_d") else t
            cols = ", ".join(columns[t]) if columns and t in columns else "*"
            out.setdefault(key, []).extend(tuple(str(v) for v in r) for r in conn.execute(f"SELECT {cols} FROM {t}"))
    return {t: sorted(v) for t, v in out.items()}


def column_names(url: str, dialect: str) -> dict[str, list[str]]:
    with connection(url) as conn:
        out = {}
        for t in user_tables(conn, dialect, days=dialect == "sqlite"):
            cur = conn.execute(f"SELECT * FROM {t} LIMIT 0")
            out[t] = [d[0] for d in cur.description]
        return out


def versions(url: str) -> dict[str, list[tuple[int, float]]]:
    with connection(url) as conn:
        got: dict[str, list[tuple[int, float]]] = {}
        for store, version, applied_at in conn.execute(
            "SELECT store, version, applied_at FROM schema_version ORDER BY store, version"
        ).fetchall():
            got.setdefault(store, []).append((version, applied_at))
        return got


def open_all(url: str) -> None:
    open_store(url).close()
    open_alarm_store(url).close()
    open_case_store(url).close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_previous_release_database_upgrades_in_place(dialect: str, tmp_path: Path) -> None:
    with database(dialect, tmp_path, "legacy") as url, database(dialect, tmp_path, "fresh") as fresh:
        load_legacy(url, dialect)
        before = rows(url, dialect)
        legacy_columns = column_names(url, dialect)
        assert len(before["readings"]) == 5, "the fixture holds readings"

        open_all(url)

        assert rows(url, dialect, legacy_columns) == before  # every row kept, byte for byte
        with connection(url) as conn:  # the readings already stored are rolled up by the upgrade
            minute = [t for t in user_tables(conn, dialect, days=True) if t.startswith("rollup_1m_d")]
            assert minute, "1-minute rollups are kept by day"
            for table in ("rollup_1h", *([] if dialect == "sqlite" else ["rollup_1m"]), *minute):
                assert conn.execute(f"SELECT sum(n) FROM {table}").fetchone()[0] == 5
        applied = versions(url)
        assert {s: [v for v, _t in vs] for s, vs in applied.items()} == CURRENT
        open_all(fresh)
        assert shape(url, dialect) == shape(fresh, dialect)  # the schema is the current one
        with connection(url) as conn:
            assert "schema_migrations" not in user_tables(conn, dialect)

        # a second open changes nothing: no migration runs, no version row is rewritten
        open_all(url)
        assert versions(url) == applied
        for store, migrations in STORES.items():
            with connection(url) as conn:
                if dialect == "postgresql":
                    conn.autocommit = False
                assert migrate(conn, store, migrations) == []

        # the data reads back through the stores, and new rows continue the old sequences
        ingest = open_store(url)
        try:
            assert [(r.device, r.value) for r in ingest.latest()] == [("wl-0001", 0.4)]
            assert len(ingest.range("wl-0001", "water_depth_m", T0, T0 + 10)) == 5
            assert [e.id for e in ingest.events(T0, T0 + 10)] == ["ev-1"]
            assert ingest.dead_letter_count() == 1
            assert [g.last_seq for g in ingest.gaps("gw-01")] == [9]
            assert [d.info.id for d in ingest.devices()] == ["wl-0001"]
            assert ingest.committed_seqs("gw-01", "boot-a", 0) == [1]
            written = ingest.write(WriteBatch(readings=[Reading("wl-0001", "water_depth_m", T0 + 6, 0.5, "m")]))
            assert written.readings_inserted == 1
        finally:
            ingest.close()
        rules = open_alarm_store(url)
        try:
            rec = rules.get(ALARM)
            assert rec is not None and rec.active and rec.evidence == {"depth_m": 0.4}
            state = rules.load_state()
            assert state == ({"t": T0 + 4}, [{"above": True}])
            rules.commit(None, [AlarmTransition(ALARM, "wl-0001", "road-water-depth", TransitionKind.CLEARED,
                                                Severity("major"), T0 + 7, 0.1, {}, None)])
            assert [seq for seq, _tr in rules.unpublished()] == [1, 2]
        finally:
            rules.close()
        cases = open_case_store(url)
        try:
            case = cases.get(1)
            assert (case.state, case.device) == ("dispatched", "wl-0001")
            assert [a.action for a in cases.timeline(1)] == ["report", "file", "dispatch"]
            out = cases.apply_alarm(alarm("mh-0009", "road-water-depth", severity="critical"), GAUGE, T0 + 8)
            assert out.case_id == 2
        finally:
            cases.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_concurrent_starters_migrate_once(dialect: str, tmp_path: Path) -> None:
    """Several ingesters (and the other services) starting together on an empty database."""
    with database(dialect, tmp_path, "race") as url:
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def starter(opener: Any) -> None:
            try:
                start.wait()
                opener(url).close()
            except BaseException as exc:
                errors.append(exc)

        openers = [open_store, open_store, open_store, open_alarm_store, open_alarm_store, open_case_store]
        threads = [threading.Thread(target=starter, args=(o,)) for o in openers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert {s: [v for v, _t in vs] for s, vs in versions(url).items()} == CURRENT
