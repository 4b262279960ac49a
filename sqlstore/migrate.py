"""Versioned schema migrations for every SQL store, on SQLite and PostgreSQL.

Each store (``ingest``, ``rules``, ``cases``) has a numbered list of :class:`Migration`.
The versions applied are rows of one ``schema_version`` table keyed by store name. Opening
a store runs :func:`migrate`:

* an up-to-date schema is detected with reads only, so a least-privilege role
  (``configs/postgres/*.sql``) opens it without DDL rights and without taking a lock;
* otherwise the pending migrations run in order, in ONE transaction with their version rows,
  under a lock that serialises concurrent starters (several ingesters): a transaction-scoped
  advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` (the database write lock) on SQLite.
  The loser of the race waits, then finds nothing left to do.

Never edit a released migration; add a new one. Driver errors propagate unchanged: each
store translates them into its own error tree where it opens the database.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlstore.dialect import Dialect, dialect_of, pg_placeholders, render


class SqlStoreError(Exception):
    """Root of this package's errors."""


class SchemaError(SqlStoreError):
    """The migration list or the database's recorded versions are inconsistent."""


class Sql:
    """A connection seen through ``?`` placeholders; what Python steps and ``adopt`` receive."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.dialect: Dialect = dialect_of(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders). Without parameters the text goes unchanged to the server."""
        if self.dialect == "sqlite":
            return list(self.conn.execute(sql, tuple(params)).fetchall())
        cur = self.conn.execute(pg_placeholders(sql), tuple(params)) if params else self.conn.execute(sql)
        return list(cur.fetchall()) if cur.description is not None else []

    def has_table(self, name: str) -> bool:
        sql = ("SELECT to_regclass(?) IS NOT NULL" if self.dialect == "postgresql"
               else "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
        return bool(self.execute(sql, (name,))[0][0])


PyStep = Callable[[Sql], None]


@dataclass(frozen=True, slots=True)
class Variant:
    """One step spelt per dialect, where the SQL really differs (SQL text or a Python step each)."""

    sqlite: str | PyStep
    postgresql: str | PyStep

    def for_dialect(self, dialect: Dialect) -> str | PyStep:
        return self.sqlite if dialect == "sqlite" else self.postgresql


Step = str | Variant | PyStep
"""SQL text with type tokens (both dialects), a :class:`Variant`, or a Python step."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    steps: tuple[Step, ...]


VERSION_TABLE = "schema_version"
# One advisory lock for every store, not one per store: the stores share schema_version, and two
# concurrent CREATE TABLE IF NOT EXISTS of it collide in PostgreSQL's catalog.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"citywatch.schema_version").digest()[:8], "big", signed=True)
CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (store TEXT NOT NULL, version INTEGER NOT NULL, "
    "name TEXT NOT NULL, applied_at {REAL} NOT NULL, PRIMARY KEY (store, version))"
)


# ---------------------------------------------------------------- pure


def check(migrations: Sequence[Migration]) -> None:
    """Versions must be 1, 2, 3, ... in order: a gap or a duplicate is a programming error."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migration versions must be 1..n in order, got {versions}")


def plan(migrations: Sequence[Migration], applied: Iterable[int]) -> list[Migration]:
    """The migrations still to run, in order. A version the code does not know means the
    database was upgraded by a newer release: refuse rather than run old code on it."""
    done = set(applied)
    unknown = done - {m.version for m in migrations}
    if unknown:
        raise SchemaError(
            f"database has schema versions {sorted(unknown)} that this release does not know "
            f"(it knows 1..{len(migrations)}): upgrade the software"
        )
    return [m for m in migrations if m.version not in done]


def resolve(step: Step, dialect: Dialect) -> str | PyStep:
    """What ``step`` means on ``dialect``: rendered SQL text, or a Python step to call."""
    chosen = step.for_dialect(dialect) if isinstance(step, Variant) else step
    return render(chosen, dialect) if isinstance(chosen, str) else chosen


# ---------------------------------------------------------------- I/O


def mark_applied(sql: Sql, store: str, migration: Migration, t: float) -> None:
    sql.execute("INSERT INTO schema_version VALUES (?, ?, ?, ?)", (store, migration.version, migration.name, t))


def applied_versions(sql: Sql, store: str) -> set[int]:
    if not sql.has_table(VERSION_TABLE):
        return set()
    return {int(r[0]) for r in sql.execute("SELECT version FROM schema_version WHERE store = ?", (store,))}


@contextmanager
def _transaction(sql: Sql, lock: int | None) -> Iterator[None]:
    """A transaction; with ``lock``, one that excludes other migrating processes until it ends."""
    if sql.dialect == "postgresql":
        with sql.conn.transaction():
            if lock is not None:
                sql.execute("SELECT pg_advisory_xact_lock(?)", (lock,))
            yield
        return
    sql.conn.execute("BEGIN IMMEDIATE" if lock is not None else "BEGIN")
    try:
        yield
    except BaseException:
        sql.conn.execute("ROLLBACK")
        raise
    sql.conn.execute("COMMIT")


def migrate(
    conn: Any,
    store: str,
    migrations: Sequence[Migration],
    adopt: Callable[[Sql], Iterable[int]] | None = None,
    now: Callable[[], float] = time.time,
) -> list[int]:
    """Bring ``store``'s schema up to date; returns the versions applied now (``[]``: it was current).

    ``conn`` is an idle sqlite3 connection in autocommit mode (``isolation_level=None``) or
    an idle psycopg connection. ``adopt`` maps a database that predates ``schema_version``
    to the versions it already has (called once, under the lock, when the store has no rows).
    """
    check(migrations)
    sql = Sql(conn)
    with _transaction(sql, lock=None):
        if not plan(migrations, applied_versions(sql, store)):
            return []
    with _transaction(sql, lock=LOCK_KEY):
        sql.execute(render(CREATE_VERSION_TABLE, sql.dialect))
        applied = applied_versions(sql, store)
        if not applied and adopt is not None:
            adopted = set(adopt(sql))
            plan(migrations, adopted)  # refuses versions this release does not know
            for migration in migrations:
                if migration.version in adopted:
                    mark_applied(sql, store, migration, now())
            applied = adopted
        todo = plan(migrations, applied)
        for migration in todo:
            for step in migration.steps:
                action = resolve(step, sql.dialect)
                if isinstance(action, str):
                    sql.execute(action)
                else:
                    action(sql)
            mark_applied(sql, store, migration, now())
    return [m.version for m in todo]
