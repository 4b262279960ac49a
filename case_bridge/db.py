"""A thin transaction layer over sqlite3 and psycopg 3, and the case-store schema migrations.

One SQL text serves both databases: statements are written with ``?`` placeholders and
rewritten to ``%s`` for PostgreSQL; the few dialect differences (identity column, real and
integer types) are the template tokens of :mod:`sqlstore.dialect`; schema versions are
applied by :func:`sqlstore.migrate`. SQLite runs in WAL with ``BEGIN IMMEDIATE``
write transactions so two processes (bridge and console) never deadlock on lock upgrade.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from case_bridge.errors import StoreConflict, StoreError
from sqlstore import Migration, Sql, SqlStoreError, connect_sqlite, pg_placeholders
from sqlstore import migrate as migrate_store

Row = tuple[Any, ...]


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def execute_rowcount(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def write(self, sql: str, params: Sequence[Any] = ()) -> None: ...


class Database(Protocol):
    dialect: str

    def tx(self) -> Any: ...  # context manager yielding Tx

    def read(self) -> Any: ...  # context manager yielding Tx (no write lock)

    def close(self) -> None: ...


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def execute_rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, tuple(params)).rowcount

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(sql, tuple(params))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement whose result nobody reads (PostgreSQL may pipeline it)."""
        self.conn.execute(sql, tuple(params))


class SqliteDb:
    dialect = "sqlite"
    driver_error: type[Exception] = sqlite3.Error

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = connect_sqlite(path, synchronous=synchronous, busy_timeout_ms=30_000)
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite case store {path!r}: {exc}") from exc
        self._lock = threading.RLock()  # one connection, callers may come from a thread pool

    @contextmanager
    def tx(self, pipeline: bool = False) -> Iterator[_SqliteTx]:
        """A write transaction (``pipeline`` is PostgreSQL's; an embedded database has no round trips)."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a write transaction: {exc}") from exc
            try:
                yield _SqliteTx(self.conn)
            except BaseException as exc:
                self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise StoreConflict(f"constraint violated: {exc}") from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite statement failed: {exc}") from exc
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise StoreError(f"commit failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[_SqliteTx]:
        with self._lock:
            try:
                self.conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a read: {exc}") from exc
            try:
                yield _SqliteTx(self.conn)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite query failed: {exc}") from exc
            finally:
                self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


_TUPLES_OK = 2  # libpq PGRES_TUPLES_OK (psycopg.pq.ExecStatus.TUPLES_OK): a statement that returned rows


class _PgTx:
    """In pipeline mode (``PostgresDb.tx(pipeline=True)``) :meth:`write` statements are only queued; the
    next statement whose result is read sends them with it, so a transaction's writes cost no round
    trip of their own."""

    def __init__(self, conn: Any, pipeline: Any = None) -> None:
        self.conn = conn
        self.pipeline = pipeline

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.conn.execute(pg_placeholders(sql), tuple(params))
        if self.pipeline is not None:
            self.pipeline.sync()  # the result is needed now
        res = cur.pgresult  # its status, not ``cur.description``: that builds a Column per field on every call
        return list(cur.fetchall()) if res is not None and res.status == _TUPLES_OK else []

    def execute_rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.execute(pg_placeholders(sql), tuple(params))
        if self.pipeline is not None:
            self.pipeline.sync()
        return int(cur.rowcount)

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(pg_placeholders(sql), tuple(params))

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.conn.execute(pg_placeholders(sql) + " RETURNING id", tuple(params)).fetchone()
        return int(row[0])


class PostgresDb:
    """One psycopg connection (autocommit, explicit transactions); reconnects after a lost server."""

    dialect = "postgresql"

    def __init__(self, dsn: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.driver_error: type[Exception] = psycopg.Error
        self._dsn = dsn
        self.conn = self._connect()
        self._lock = threading.RLock()

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._dsn, autocommit=True)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL case store: {exc}") from exc

    def _ensure(self) -> None:
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()

    @contextmanager
    def tx(self, pipeline: bool = False) -> Iterator[_PgTx]:
        """A write transaction; ``pipeline`` queues :meth:`_PgTx.write` statements (one round trip fewer each)."""
        with self._lock:
            self._ensure()
            try:
                with self.conn.transaction():
                    if pipeline:
                        with self.conn.pipeline() as pipe:
                            yield _PgTx(self.conn, pipe)
                    else:
                        yield _PgTx(self.conn)
            except self._psycopg.errors.IntegrityError as exc:
                raise StoreConflict(f"constraint violated: {exc}") from exc
            except self._psycopg.Error as exc:
                raise StoreError(f"PostgreSQL transaction failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[_PgTx]:
        """Reads run in autocommit: one round trip per statement instead of BEGIN/SELECT/COMMIT."""
        with self._lock:
            self._ensure()
            try:
                yield _PgTx(self.conn)
            except self._psycopg.Error as exc:
                raise StoreError(f"PostgreSQL query failed: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


def connect(url: str) -> SqliteDb | PostgresDb:
    """``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``, ``sqlite://:memory:`` or ``postgresql://...``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDb(url)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if rest in (":memory:", "/:memory:"):
            return SqliteDb(":memory:")
        path = unquote(urlsplit("sqlite://" + rest).path)
        if not path or path == "/":
            raise StoreError(f"no file in SQLite URL {url!r}")
        return SqliteDb(path[1:] if path.startswith("/") else path)
    raise StoreError(f"unsupported case store URL {url!r} (use sqlite:///path.db or postgresql://...)")


# ---------------------------------------------------------------- schema

# Each migration is applied once, in one transaction with its version row. Never edit an
# applied migration; add a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "cases, links, alarms, audit",
        (
            """CREATE TABLE cases (
                id {PK},
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
                lat {REAL},
                lon {REAL},
                address TEXT,
                description TEXT NOT NULL DEFAULT '',
                reporter TEXT,
                created_at {REAL} NOT NULL,
                filed_at {REAL},
                dispatched_at {REAL},
                handled_at {REAL},
                verified_at {REAL},
                closed_at {REAL},
                deadline {REAL} NOT NULL,
                due_at {REAL},
                updated_at {REAL} NOT NULL,
                version INTEGER NOT NULL DEFAULT 1,
                data TEXT NOT NULL DEFAULT '{}'
            )""",
            # the worklist: filter by unit (and state), sort by deadline, page
            "CREATE INDEX cases_unit_open_deadline ON cases (unit, is_open, deadline, id)",
            "CREATE INDEX cases_unit_state_deadline ON cases (unit, state, deadline, id)",
            "CREATE INDEX cases_open_deadline ON cases (is_open, deadline, id)",
            "CREATE INDEX cases_state_deadline ON cases (state, deadline, id)",
            "CREATE INDEX cases_created ON cases (created_at)",
            "CREATE INDEX cases_updated ON cases (updated_at)",
            # one open case per correlation key: (device, condition) or a circuit
            "CREATE UNIQUE INDEX cases_open_corr ON cases (corr_key) WHERE is_open = 1 AND corr_key IS NOT NULL",
            """CREATE TABLE case_links (
                alarm_id TEXT PRIMARY KEY,
                case_id {BIGINT} NOT NULL REFERENCES cases (id),
                device TEXT NOT NULL,
                rule TEXT NOT NULL,
                t {REAL} NOT NULL
            )""",
            "CREATE INDEX case_links_case ON case_links (case_id)",
            "CREATE INDEX case_links_device ON case_links (device, case_id)",
            """CREATE TABLE alarm_state (
                alarm_id TEXT PRIMARY KEY,
                device TEXT NOT NULL,
                rule TEXT NOT NULL,
                active INTEGER NOT NULL,
                acked INTEGER NOT NULL DEFAULT 0,
                severity TEXT NOT NULL,
                raised_at {REAL},
                cleared_at {REAL},
                last_kind TEXT NOT NULL,
                last_t {REAL} NOT NULL,
                value {REAL},
                evidence TEXT NOT NULL DEFAULT '{}'
            )""",
            """CREATE TABLE alarm_events (
                alarm_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                t_ms {BIGINT} NOT NULL,
                received_at {REAL} NOT NULL,
                PRIMARY KEY (alarm_id, kind, t_ms)
            )""",
            """CREATE TABLE case_audit (
                id {PK},
                case_id {BIGINT} NOT NULL REFERENCES cases (id),
                t {REAL} NOT NULL,
                actor TEXT NOT NULL,
                role TEXT,
                action TEXT NOT NULL,
                from_state TEXT,
                to_state TEXT NOT NULL,
                note TEXT NOT NULL DEFAULT '',
                request_id TEXT,
                data TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX case_audit_case ON case_audit (case_id, id)",
            "CREATE UNIQUE INDEX case_audit_request ON case_audit (case_id, request_id) WHERE request_id IS NOT NULL",
            """CREATE TABLE notify_log (
                key TEXT PRIMARY KEY,
                t {REAL} NOT NULL
            )""",
            # the device registry learnt from retained birth messages, so a restarted bridge
            # maps alarms that arrive before the births correctly
            # messages the bridge could not use, with the reason: acknowledged, never silently lost
            """CREATE TABLE case_dead_letters (
                id {PK},
                t {REAL} NOT NULL,
                topic TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '',
                payload TEXT NOT NULL
            )""",
            """CREATE TABLE device_registry (
                device TEXT PRIMARY KEY,
                info TEXT NOT NULL,
                updated_at {REAL} NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "notification outbox and pending escalations survive a restart",
        (
            """CREATE TABLE escalations (
                alarm_id TEXT PRIMARY KEY,
                due_t {REAL} NOT NULL,
                notice TEXT NOT NULL
            )""",
            "CREATE INDEX escalations_due ON escalations (due_t)",
            # notifications to send: written in one transaction with their dedup record (and the
            # escalation), sent by the notifier, deleted when delivered or given up
            """CREATE TABLE notify_outbox (
                id {PK},
                target TEXT NOT NULL,
                key TEXT NOT NULL,
                notice TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_t {REAL} NOT NULL,
                created_t {REAL} NOT NULL
            )""",
            "CREATE INDEX notify_outbox_due ON notify_outbox (next_t)",
        ),
    ),
    Migration(
        3,
        "versions move to the shared schema_version table",
        ("DROP TABLE IF EXISTS schema_migrations",),
    ),
    Migration(
        4,
        "a supervisor's override of the sensor at verify/close is counted apart",
        ("ALTER TABLE cases ADD COLUMN overridden INTEGER NOT NULL DEFAULT 0",),
    ),
)


def _adopt(sql: Sql) -> list[int]:
    """A database from before ``schema_version`` recorded its versions in ``schema_migrations``."""
    if not sql.has_table("schema_migrations"):
        return []
    return [int(r[0]) for r in sql.execute("SELECT version FROM schema_migrations")]


def migrate(db: SqliteDb | PostgresDb) -> int:
    """Apply pending migrations; returns the schema version. Safe to run from two processes.

    An up-to-date schema needs no DDL and no lock: a least-privilege role
    (configs/postgres/service_roles.sql) opens it without CREATE on the schema.
    """
    with db._lock:
        if isinstance(db, PostgresDb):
            db._ensure()
        try:
            migrate_store(db.conn, "cases", MIGRATIONS, adopt=_adopt)
        except (db.driver_error, SqlStoreError) as exc:
            raise StoreError(f"cannot migrate the case store schema: {exc}") from exc
    return len(MIGRATIONS)



