"""The migration runner: planning is pure; the runner is checked on in-memory SQLite (no sockets)."""

from __future__ import annotations

import sqlite3

import pytest

from sqlstore import Migration, SchemaError, Sql, Variant, applied_versions, migrate, pg_placeholders, plan, render
from sqlstore.migrate import check, resolve

M1 = Migration(1, "items", ("CREATE TABLE items (id {SERIAL}, price {REAL} NOT NULL)",))
M2 = Migration(2, "item names", ("ALTER TABLE items ADD COLUMN name TEXT NOT NULL DEFAULT ''",))
M3 = Migration(3, "index", ("CREATE INDEX items_name ON items (name)",))


def memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}


# ---------------------------------------------------------------- pure


def test_plan_returns_the_pending_migrations_in_order() -> None:
    assert plan([M1, M2, M3], []) == [M1, M2, M3]
    assert plan([M1, M2, M3], [1]) == [M2, M3]
    assert plan([M1, M2, M3], [1, 3]) == [M2]
    assert plan([M1, M2, M3], [1, 2, 3]) == []


def test_plan_refuses_a_database_from_a_newer_release() -> None:
    with pytest.raises(SchemaError, match=r"\[4\].*knows 1\.\.3"):
        plan([M1, M2, M3], [1, 2, 3, 4])


@pytest.mark.parametrize("versions", [[2], [1, 1], [1, 3], [2, 1]])
def test_versions_must_be_one_to_n_in_order(versions: list[int]) -> None:
    with pytest.raises(SchemaError, match=r"1\.\.n"):
        check([Migration(v, "x", ()) for v in versions])


def test_tokens_and_variants_render_per_dialect() -> None:
    sql = "CREATE TABLE t (id {SERIAL}, v {REAL}, b {BLOB}, j {JSON} DEFAULT '{}', n {BIGINT}){WITHOUT_ROWID}"
    assert render(sql, "sqlite") == (
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v REAL, b BLOB, j TEXT DEFAULT '{}', n INTEGER)"
        " WITHOUT ROWID"
    )
    assert render(sql, "postgresql") == (
        "CREATE TABLE t (id bigserial PRIMARY KEY, v float8, b bytea, j jsonb DEFAULT '{}', n int8)"
    )
    step = Variant(sqlite="SELECT {REAL}", postgresql="SELECT 2")
    assert resolve(step, "sqlite") == "SELECT REAL"
    assert resolve(step, "postgresql") == "SELECT 2"


def test_pg_placeholders_double_a_literal_percent() -> None:
    got = pg_placeholders("SELECT a % 2 FROM t WHERE b = ? AND c = ?")
    assert got == "SELECT a %% 2 FROM t WHERE b = %s AND c = %s"


# ---------------------------------------------------------------- runner on in-memory SQLite


def test_migrations_apply_in_order_and_a_second_run_is_a_no_op() -> None:
    conn = memory()
    assert migrate(conn, "shop", [M1, M2], now=lambda: 10.0) == [1, 2]
    conn.execute("INSERT INTO items (price, name) VALUES (1.5, 'tea')")
    assert migrate(conn, "shop", [M1, M2, M3], now=lambda: 20.0) == [3]
    assert "items_name" in tables(conn)
    assert migrate(conn, "shop", [M1, M2, M3]) == []
    rows = conn.execute("SELECT store, version, name, applied_at FROM schema_version ORDER BY version").fetchall()
    assert rows == [("shop", 1, "items", 10.0), ("shop", 2, "item names", 10.0), ("shop", 3, "index", 20.0)]
    assert conn.execute("SELECT price, name FROM items").fetchall() == [(1.5, "tea")]


def test_stores_keep_their_own_versions_in_one_table() -> None:
    conn = memory()
    migrate(conn, "shop", [M1])
    other = Migration(1, "notes", ("CREATE TABLE notes (t TEXT)",))
    assert migrate(conn, "notes", [other]) == [1]
    sql = Sql(conn)
    assert applied_versions(sql, "shop") == {1}
    assert applied_versions(sql, "notes") == {1}
    assert applied_versions(sql, "absent") == set()


def test_a_failing_step_rolls_back_every_pending_migration() -> None:
    conn = memory()
    broken = Migration(2, "broken", ("CREATE TABLE more (a INTEGER)", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "shop", [M1, broken])
    assert tables(conn) == set()  # neither migration 1 nor the version table survived
    assert not conn.in_transaction
    assert migrate(conn, "shop", [M1]) == [1]


def test_python_steps_and_variants_run_with_the_connection() -> None:
    seen: list[str] = []

    def step(sql: Sql) -> None:
        seen.append(sql.dialect)
        sql.execute("INSERT INTO items (price) VALUES (?)", (2.0,))

    m2 = Migration(2, "seed", (Variant(sqlite=step, postgresql="SELECT 1"), step))
    conn = memory()
    assert migrate(conn, "shop", [M1, m2]) == [1, 2]
    assert seen == ["sqlite", "sqlite"]
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (2,)


def test_a_database_from_before_schema_version_is_adopted_once() -> None:
    conn = memory()
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, price REAL NOT NULL)")
    conn.execute("INSERT INTO items (price) VALUES (3.0)")
    calls: list[int] = []

    def adopt(sql: Sql) -> list[int]:
        calls.append(1)
        return [1] if sql.has_table("items") else []

    assert migrate(conn, "shop", [M1, M2], adopt=adopt) == [2]
    assert migrate(conn, "shop", [M1, M2], adopt=adopt) == []
    assert calls == [1]
    assert conn.execute("SELECT price, name FROM items").fetchall() == [(3.0, "")]


def test_adopting_versions_this_release_does_not_know_is_refused() -> None:
    conn = memory()
    with pytest.raises(SchemaError, match="upgrade the software"):
        migrate(conn, "shop", [M1], adopt=lambda _sql: [1, 2])
    assert tables(conn) == set()


def test_a_newer_database_is_refused_without_changes() -> None:
    conn = memory()
    migrate(conn, "shop", [M1, M2])
    with pytest.raises(SchemaError, match=r"\[2\]"):
        migrate(conn, "shop", [M1])
    assert applied_versions(Sql(conn), "shop") == {1, 2}
