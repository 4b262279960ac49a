"""AlarmStore: rule state, alarms and their transitions, in SQLite (default) or PostgreSQL.

One interface for both (:class:`AlarmStore`); :func:`open_alarm_store` picks by URL
(``sqlite:///data/rules.db``, ``postgresql://...``). The runner commits the engine state
snapshot, the alarms and the new transitions **in one transaction** before it acknowledges
the MQTT messages that caused them, so a ``kill -9`` either loses the whole step (the broker
redelivers and the same ids come out again) or none of it. Transitions double as an outbox:
``published`` flips once the broker acknowledged the alarm message; a restart republishes the
rest.

Read API for the console (and anyone else):

* ``list(active_only=False, device=None, rule=None, since=None, limit=100)`` → ``list[AlarmRecord]``,
  newest first;
* ``get(alarm_id)`` → ``AlarmRecord | None``;
* ``transitions(alarm_id)`` → ``list[AlarmTransition]`` in order.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from rules.errors import AlarmStoreError
from rules.evaluate import fold_state_log
from sqlstore import Migration, SqlStoreError, connect_sqlite, migrate, pg_placeholders

DEFAULT_URL = "sqlite:///data/rules.db"

# Never edit a released migration; add a new one. Version 1 is the schema release d572fb5
# created with CREATE ... IF NOT EXISTS, so it also adopts a database from that release.
MIGRATIONS = (
    Migration(1, "rule state, alarms and transitions", (
        "CREATE TABLE IF NOT EXISTS rules_state ("
        " id INTEGER PRIMARY KEY, state TEXT NOT NULL, updated_t DOUBLE PRECISION)",
        "CREATE TABLE IF NOT EXISTS rules_device_state (device TEXT PRIMARY KEY, state TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS rules_alarms ("
        " alarm_id TEXT PRIMARY KEY, device TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,"
        " max_severity TEXT NOT NULL, active INTEGER NOT NULL, raised_t DOUBLE PRECISION NOT NULL,"
        " cleared_t DOUBLE PRECISION, acked_by TEXT, acked_t DOUBLE PRECISION, value DOUBLE PRECISION,"
        " evidence TEXT NOT NULL, updated_t DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rules_alarms_device ON rules_alarms (device, raised_t)",
        "CREATE INDEX IF NOT EXISTS rules_alarms_active ON rules_alarms (active, raised_t)",
        "CREATE TABLE IF NOT EXISTS rules_transitions ("
        " seq {SERIAL}, alarm_id TEXT NOT NULL, device TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,"
        " severity TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, value DOUBLE PRECISION, evidence TEXT NOT NULL,"
        " actor TEXT, published INTEGER NOT NULL DEFAULT 0, UNIQUE (alarm_id, kind, t))",
        "CREATE INDEX IF NOT EXISTS rules_transitions_unpub ON rules_transitions (published, seq)",
    )),
)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What one step changed in the engine state (:meth:`EngineState.take_checkpoint`).

    ``compact``: ``devices`` are whole parts that replace those devices' rows, and the state log is
    emptied. Otherwise ``devices`` (whole parts) and ``series`` (what readings alone changed) are
    appended to the state log as one record. Either way the write follows what changed since the
    last commit, not the size of the state (a 10 000-device state is ~10 MB of JSON).
    """

    global_part: dict[str, Any]
    devices: dict[str, dict[str, Any]]
    series: Sequence[Sequence[Any]] = ()
    compact: bool = True
    #: after appending this record, delete log records 1..n (n from the last time the log was emptied): a sliced
    #: compaction logged a whole part for every device they concern (EngineState.take_checkpoint_sliced)
    drop_log_through: int = 0


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """An alarm as stored: its current severity, the highest it reached, and its lifecycle times."""

    alarm_id: str
    device: str
    rule: str
    severity: Severity
    max_severity: Severity
    active: bool
    raised_t: float
    cleared_t: float | None
    acked_by: str | None
    acked_t: float | None
    value: float | None
    evidence: dict[str, Any]
    updated_t: float


class AlarmStore(Protocol):
    url: str

    def load_state(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None: ...

    def commit(self, state: StateDelta | None, transitions: Sequence[AlarmTransition]) -> None: ...

    def unpublished(self, limit: int = 1000) -> list[tuple[int, AlarmTransition]]: ...

    def mark_published(self, seqs: Sequence[int]) -> None: ...

    def list(
        self,
        active_only: bool = False,
        device: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AlarmRecord]: ...

    def get(self, alarm_id: str) -> AlarmRecord | None: ...

    def transitions(self, alarm_id: str) -> builtins.list[AlarmTransition]: ...

    def close(self) -> None: ...


def _tr_from_row(row: Sequence[Any]) -> AlarmTransition:
    alarm_id, device, rule, kind, severity, t, value, evidence, actor = row
    return AlarmTransition(
        alarm_id, device, rule, TransitionKind(kind), Severity(severity), float(t), value, orjson.loads(evidence), actor
    )


def _rec_from_row(row: Sequence[Any]) -> AlarmRecord:
    (aid, device, rule, sev, maxsev, active, raised, cleared, acked_by, acked_t, value, evidence, updated) = row
    return AlarmRecord(
        aid, device, rule, Severity(sev), Severity(maxsev), bool(active), float(raised), cleared, acked_by, acked_t,
        value, orjson.loads(evidence), float(updated),
    )


_ALARM_COLS = (
    "alarm_id, device, rule, severity, max_severity, active, raised_t, cleared_t, acked_by, acked_t, value, evidence, "
    "updated_t"
)
_TR_COLS = "alarm_id, device, rule, kind, severity, t, value, evidence, actor"


class _SqlStore:
    """SQL shared by both backends; ``?`` placeholders are rewritten for psycopg."""

    url: str
    _pg: bool = False

    def _execute(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return cur.execute(pg_placeholders(sql) if self._pg else sql, params)

    @contextmanager
    def _tx(self, what: str) -> Iterator[Any]:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any], what: str) -> list[Any]:
        with self._tx(what) as cur:
            return list(self._execute(cur, sql, params).fetchall())

    def load_state(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(global part, device parts) as committed, or None before the first commit.

        Folds the state log into the device rows first (one transaction), so a restarted runner
        starts with an empty log and knows nothing about what was logged before it.
        """
        with self._tx("load_state") as cur:
            rows = list(self._execute(cur, "SELECT id, state FROM rules_state ORDER BY id").fetchall())
            if not rows or rows[0][0] != 1:
                return None
            parts = {d: orjson.loads(s) for d, s in self._execute(cur, "SELECT device, state FROM rules_device_state")}
            if len(rows) > 1:
                touched = fold_state_log(parts, (orjson.loads(r[1]) for r in rows[1:]))
                self._write_parts(cur, {d: parts[d] for d in touched})
                self._execute(cur, "DELETE FROM rules_state WHERE id > 1")
        return orjson.loads(rows[0][1]), list(parts.values())

    def _write_parts(self, cur: Any, parts: dict[str, dict[str, Any]]) -> None:
        rows = [(d, orjson.dumps(part).decode()) for d, part in parts.items()]
        if rows:
            sql = (
                "INSERT INTO rules_device_state (device, state) VALUES (?, ?) "
                "ON CONFLICT (device) DO UPDATE SET state = excluded.state"
            )
            cur.executemany(pg_placeholders(sql) if self._pg else sql, rows)

    def commit(self, state: StateDelta | None, transitions: Sequence[AlarmTransition]) -> None:
        """State delta + alarms + transitions, atomically. Re-committing the same transitions is a no-op.

        ``rules_state`` row 1 is the global part; rows 2, 3, ... are the state log since the last
        compaction, one record per commit (``{"p": parts, "s": series entries}``), in order.
        """
        with self._tx("commit") as cur:
            if state is not None:
                updated_t = max((tr.t for tr in transitions), default=0.0)
                self._execute(
                    cur,
                    "INSERT INTO rules_state (id, state, updated_t) VALUES (1, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_t = excluded.updated_t",
                    (orjson.dumps(state.global_part).decode(), updated_t),
                )
                if state.compact:
                    self._write_parts(cur, state.devices)
                    self._execute(cur, "DELETE FROM rules_state WHERE id > 1")
                elif state.devices or state.series:
                    record = orjson.dumps({"p": state.devices, "s": state.series}).decode()
                    self._execute(
                        cur,
                        "INSERT INTO rules_state (id, state, updated_t) SELECT MAX(id) + 1, ?, ? FROM rules_state",
                        (record, updated_t),
                    )
                if not state.compact and state.drop_log_through > 0:  # record n is row id n + 1 (row 1: global)
                    self._execute(cur, "DELETE FROM rules_state WHERE id > 1 AND id <= ?",
                                  (state.drop_log_through + 1,))
            self._apply_all(cur, transitions)

    def _apply_all(self, cur: Any, transitions: Sequence[AlarmTransition]) -> None:
        for tr in transitions:
            self._apply(cur, tr)

    def _apply(self, cur: Any, tr: AlarmTransition) -> None:
        ev = orjson.dumps(tr.evidence).decode()
        row = self._execute(
            cur,
            f"INSERT INTO rules_transitions ({_TR_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (alarm_id, kind, t) DO NOTHING RETURNING seq",
            (tr.alarm_id, tr.device, tr.rule, tr.kind.value, tr.severity.value, tr.t, tr.value, ev, tr.actor),
        ).fetchone()
        if row is None:
            return  # already applied (a replayed step)
        if tr.kind is TransitionKind.RAISED:
            self._execute(
                cur,
                f"INSERT INTO rules_alarms ({_ALARM_COLS}) VALUES (?, ?, ?, ?, ?, 1, ?, NULL, NULL, NULL, ?, ?, ?) "
                "ON CONFLICT (alarm_id) DO NOTHING",
                (tr.alarm_id, tr.device, tr.rule, tr.severity.value, tr.severity.value, tr.t, tr.value, ev, tr.t),
            )
        elif tr.kind in (TransitionKind.ESCALATED, TransitionKind.DEESCALATED):
            self._execute(
                cur,
                "UPDATE rules_alarms SET severity = ?, value = ?, updated_t = ?, max_severity = CASE "
                "WHEN ? = 'critical' OR max_severity = 'critical' THEN 'critical' "
                "WHEN ? = 'major' OR max_severity = 'major' THEN 'major' ELSE 'minor' END WHERE alarm_id = ?",
                (tr.severity.value, tr.value, tr.t, tr.severity.value, tr.severity.value, tr.alarm_id),
            )
        elif tr.kind is TransitionKind.ACKNOWLEDGED:
            self._execute(
                cur,
                "UPDATE rules_alarms SET acked_by = ?, acked_t = ?, updated_t = ? "
                "WHERE alarm_id = ? AND acked_by IS NULL",
                (tr.actor, tr.t, tr.t, tr.alarm_id),
            )
        elif tr.kind is TransitionKind.CLEARED:
            self._execute(
                cur,
                "UPDATE rules_alarms SET active = 0, cleared_t = ?, updated_t = ? WHERE alarm_id = ?",
                (tr.t, tr.t, tr.alarm_id),
            )

    def unpublished(self, limit: int = 1000) -> list[tuple[int, AlarmTransition]]:
        rows = self._read(
            f"SELECT seq, {_TR_COLS} FROM rules_transitions WHERE published = 0 ORDER BY seq LIMIT ?",
            (limit,),
            "unpublished",
        )
        return [(int(r[0]), _tr_from_row(r[1:])) for r in rows]

    def mark_published(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._tx("mark_published") as cur:
            marks = ",".join("?" * len(seqs))
            self._execute(cur, f"UPDATE rules_transitions SET published = 1 WHERE seq IN ({marks})", list(seqs))

    def list(
        self,
        active_only: bool = False,
        device: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AlarmRecord]:
        """Alarms newest first; ``since`` filters on the last update time."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if active_only:
            where.append("active = 1")
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if rule is not None:
            where.append("rule = ?")
            params.append(rule)
        if since is not None:
            where.append("updated_t >= ?")
            params.append(since)
        sql = f"SELECT {_ALARM_COLS} FROM rules_alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY raised_t DESC, alarm_id LIMIT ?"
        params.append(limit)
        return [_rec_from_row(r) for r in self._read(sql, params, "list")]

    def get(self, alarm_id: str) -> AlarmRecord | None:
        rows = self._read(f"SELECT {_ALARM_COLS} FROM rules_alarms WHERE alarm_id = ?", (alarm_id,), "get")
        return _rec_from_row(rows[0]) if rows else None

    def transitions(self, alarm_id: str) -> builtins.list[AlarmTransition]:
        rows = self._read(
            f"SELECT {_TR_COLS} FROM rules_transitions WHERE alarm_id = ? ORDER BY seq", (alarm_id,), "transitions"
        )
        return [_tr_from_row(r) for r in rows]


class SqliteAlarmStore(_SqlStore):
    def __init__(self, path: str, url: str | None = None) -> None:
        self.url = url or f"sqlite:///{path}"
        self.path = path
        self._lock = threading.Lock()
        try:
            if path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._conn = connect_sqlite(path, synchronous="NORMAL", busy_timeout_ms=30_000)
            migrate(self._conn, "rules", MIGRATIONS)
        except (sqlite3.Error, OSError, SqlStoreError) as exc:
            raise AlarmStoreError(f"cannot open alarm store {self.url}: {exc}") from exc

    @contextmanager
    def _tx(self, what: str) -> Iterator[Any]:
        with self._lock:  # one connection, used from worker threads: one transaction at a time
            yield from self._tx_locked(what)

    def _tx_locked(self, what: str) -> Iterator[Any]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise AlarmStoreError(f"alarm store {what} failed ({self.url}): {exc}") from exc
        finally:
            cur.close()

    def close(self) -> None:
        self._conn.close()


# One self-contained statement per transition for PostgreSQL: the outbox row is inserted and, only if it is new
# (a replayed step inserts nothing), the alarm row is written, so no statement waits for another's result and a
# step's transitions go to the server pipelined, in order, instead of ~2 round trips each.
_PG_TR_INSERT = (
    f"WITH ins AS (INSERT INTO rules_transitions ({_TR_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (alarm_id, kind, t) DO NOTHING RETURNING seq) "
)
_PG_APPLY: dict[TransitionKind, tuple[str, str]] = {
    TransitionKind.RAISED: (
        _PG_TR_INSERT + f"INSERT INTO rules_alarms ({_ALARM_COLS}) SELECT ?::text, ?::text, ?::text, ?::text, "
        "?::text, 1, ?::double precision, NULL, NULL, NULL, ?::double precision, ?::text, ?::double precision "
        "FROM ins ON CONFLICT (alarm_id) DO NOTHING",
        "raised",
    ),
    TransitionKind.ESCALATED: (
        _PG_TR_INSERT + "UPDATE rules_alarms SET severity = ?, value = ?, updated_t = ?, max_severity = CASE "
        "WHEN ?::text = 'critical' OR max_severity = 'critical' THEN 'critical' "
        "WHEN ?::text = 'major' OR max_severity = 'major' THEN 'major' ELSE 'minor' END "
        "WHERE alarm_id = ? AND EXISTS (SELECT 1 FROM ins)",
        "severity",
    ),
    TransitionKind.ACKNOWLEDGED: (
        _PG_TR_INSERT + "UPDATE rules_alarms SET acked_by = ?, acked_t = ?, updated_t = ? "
        "WHERE alarm_id = ? AND acked_by IS NULL AND EXISTS (SELECT 1 FROM ins)",
        "acked",
    ),
    TransitionKind.CLEARED: (
        _PG_TR_INSERT + "UPDATE rules_alarms SET active = 0, cleared_t = ?, updated_t = ? "
        "WHERE alarm_id = ? AND EXISTS (SELECT 1 FROM ins)",
        "cleared",
    ),
}
_PG_APPLY[TransitionKind.DEESCALATED] = _PG_APPLY[TransitionKind.ESCALATED]


def _pg_apply_params(tr: AlarmTransition, ev: str) -> tuple[Any, ...]:
    """The parameters of ``_PG_APPLY[tr.kind]``: the outbox row's, then the alarm write's (as in ``_apply``)."""
    head = (tr.alarm_id, tr.device, tr.rule, tr.kind.value, tr.severity.value, tr.t, tr.value, ev, tr.actor)
    sev = tr.severity.value
    what = _PG_APPLY[tr.kind][1]
    if what == "raised":
        return (*head, tr.alarm_id, tr.device, tr.rule, sev, sev, tr.t, tr.value, ev, tr.t)
    if what == "severity":
        return (*head, sev, tr.value, tr.t, sev, sev, tr.alarm_id)
    if what == "acked":
        return (*head, tr.actor, tr.t, tr.t, tr.alarm_id)
    return (*head, tr.t, tr.t, tr.alarm_id)


class PostgresAlarmStore(_SqlStore):
    _pg = True

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        self._lock = threading.Lock()
        try:
            self._conn = psycopg.connect(url, autocommit=False)
            # an up-to-date schema is opened without DDL: a least-privilege role
            # (configs/postgres/service_roles.sql) has no CREATE on the schema
            migrate(self._conn, "rules", MIGRATIONS)
        except (psycopg.Error, SqlStoreError) as exc:
            raise AlarmStoreError(f"cannot open alarm store {_redact(url)}: {exc}") from exc

    @contextmanager
    def _tx(self, what: str) -> Iterator[Any]:
        with self._lock:
            yield from self._tx_locked(what)

    def _tx_locked(self, what: str) -> Iterator[Any]:
        import psycopg

        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise AlarmStoreError(f"alarm store {what} failed ({_redact(self.url)}): {exc}") from exc

    def _apply_all(self, cur: Any, transitions: Sequence[AlarmTransition]) -> None:
        """The step's transitions pipelined: one round trip for all of them (errors surface at the sync)."""
        if not transitions:
            return
        with self._conn.pipeline():
            for tr in transitions:
                sql = pg_placeholders(_PG_APPLY[tr.kind][0])
                cur.execute(sql, _pg_apply_params(tr, orjson.dumps(tr.evidence).decode()))

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_alarm_store(url: str = DEFAULT_URL) -> AlarmStore:
    """``sqlite:///relative.db``, ``sqlite:////abs.db``, ``sqlite:///:memory:`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        return SqliteAlarmStore(url[len("sqlite:///") :], url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresAlarmStore(url)
    raise AlarmStoreError(f"unknown alarm store URL {url!r}: use sqlite:///path.db or postgresql://...")
