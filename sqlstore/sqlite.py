"""Opening an embedded (SQLite) store the same way in every service."""

from __future__ import annotations

import sqlite3
import time

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def connect_sqlite(path: str, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    """An autocommit connection in WAL mode that waits up to ``busy_timeout_ms`` for a lock.

    Switching to WAL, and the first read after another connection closed the file, can fail
    with "database is locked" WITHOUT SQLite calling its busy handler (sqlite.org/wal.html,
    "Sometimes queries return SQLITE_BUSY in WAL mode"): services starting together on one
    new file hit it. The switch is retried here until the same timeout the busy handler has.
    Driver errors propagate unchanged; each store translates them where it opens the file.
    """
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        deadline = time.monotonic() + busy_timeout_ms / 1000
        delay_s = 0.005
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.1)
        if str(mode).lower() not in ("wal", "memory"):  # ":memory:" has no journal file to switch
            raise sqlite3.OperationalError(f"cannot switch {path!r} to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn
