"""The console's own audit log and Open311 token table (SQLite, append-only, hash-chained).

Case transitions are audited by the case store in the same transaction as the change; this
log covers what only the console sees: logins (ok and failed), acknowledgements, Open311
reports, denied writes. Each row carries the SHA-256 of the previous row, so an edited or
deleted row breaks :meth:`AuditLog.verify`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from console.errors import StoreUnavailable
from sqlstore import connect_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_audit (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    result INTEGER NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_audit_object ON console_audit(object, t);
CREATE TABLE IF NOT EXISTS open311_tokens (
    token TEXT PRIMARY KEY,
    case_id TEXT NOT NULL,
    client TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    t: float
    actor: str
    action: str
    obj: str
    result: int  # HTTP status of the outcome
    detail: dict[str, object]


def _row_hash(prev: str, e: AuditEntry) -> str:
    body = orjson.dumps([prev, e.t, e.actor, e.action, e.obj, e.result, e.detail], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def _sqlite_path(url: str) -> str:
    if url in {"sqlite://:memory:", ":memory:"}:
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise StoreUnavailable(f"audit store must be sqlite:///path, got {url!r}")
    return url[len("sqlite:///") :]


class AuditLog:
    def __init__(self, url: str) -> None:
        path = _sqlite_path(url)
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = connect_sqlite(path, synchronous="FULL", busy_timeout_ms=5_000)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"audit store {url}: {exc}") from exc
        self._lock = threading.Lock()

    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            try:
                row = self._db.execute("SELECT hash FROM console_audit ORDER BY id DESC LIMIT 1").fetchone()
                prev = row[0] if row else ""
                self._db.execute(
                    "INSERT INTO console_audit(t, actor, action, object, result, detail, prev_hash, hash)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (entry.t, entry.actor, entry.action, entry.obj, entry.result,
                     orjson.dumps(entry.detail).decode(), prev, _row_hash(prev, entry)),
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit store: {exc}") from exc

    def entries(self, obj: str | None = None, limit: int = 100) -> list[AuditEntry]:
        sql = "SELECT t, actor, action, object, result, detail FROM console_audit"
        args: tuple[object, ...] = ()
        if obj is not None:
            sql += " WHERE object = ?"
            args = (obj,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    def verify(self) -> bool:
        prev = ""
        with self._lock:
            rows = self._db.execute(
                "SELECT t, actor, action, object, result, detail, prev_hash, hash FROM console_audit ORDER BY id"
            ).fetchall()
        for r in rows:
            entry = AuditEntry(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]))
            if r[6] != prev or r[7] != _row_hash(prev, entry):
                return False
            prev = r[7]
        return True

    def put_token(self, token: str, case_id: str, client: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO open311_tokens(token, case_id, client, created_at) VALUES (?,?,?,?)",
                (token, case_id, client, now),
            )

    def token(self, token: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT case_id FROM open311_tokens WHERE token = ?", (token,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
