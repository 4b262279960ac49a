"""Services starting together on one new SQLite file all open it.

Switching a file to WAL fails with "database is locked" without SQLite calling its busy
handler while another connection is closing the file; before ``connect_sqlite`` retried it,
the six-starter race of test_store_upgrade.py failed about once in ten rounds.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sqlstore import connect_sqlite

pytestmark = pytest.mark.integration


def test_starters_racing_on_a_new_file_all_get_a_wal_connection(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for round_ in range(40):
        path = str(tmp_path / f"race-{round_}.db")
        start = threading.Barrier(6)

        def starter(path: str = path, start: threading.Barrier = start) -> None:
            try:
                start.wait()
                conn = connect_sqlite(path, busy_timeout_ms=10_000)
                try:
                    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                finally:
                    conn.close()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=starter) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert failures == []


def test_the_wait_is_bounded_and_other_errors_are_not_retried(tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal file locked by another connection
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            connect_sqlite(str(tmp_path / "held.db"), busy_timeout_ms=200)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with pytest.raises(ValueError, match="synchronous"):
        connect_sqlite(str(tmp_path / "x.db"), synchronous="SOMETIMES")
    with pytest.raises(sqlite3.OperationalError):
        connect_sqlite(str(tmp_path / "no-such-dir" / "x.db"))
