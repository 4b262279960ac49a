"""The notification outbox and the escalation schedule, in the case store's database.

Implements :class:`case_bridge.notify.NotifyStore`: a notice is queued in the transaction that
deduplicates it, and a crashed sender's lease runs out, so a page is neither lost nor sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from case_bridge.db import PostgresDb, SqliteDb


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


class NoticeOutbox:
    """Outbox, dedup log and escalations (``CaseStore.notices``)."""

    def __init__(self, db: SqliteDb | PostgresDb) -> None:
        self.db = db

    def enqueue_notice(
        self,
        targets: Sequence[str],
        notice: dict[str, Any],
        now: float,
        window_s: float,
        escalation: tuple[str, float, dict[str, Any]] | None = None,
    ) -> list[str]:
        """Queue ``notice`` (a dict with ``key``) for each target not sent the same key within
        ``window_s``, and schedule ``escalation`` (alarm id, due time, notice) with it, in one
        transaction: a redelivered alarm neither pages twice nor loses the page. Returns the
        targets queued."""
        key = str(notice["key"])
        body = _dumps(notice)
        queued: list[str] = []
        with self.db.tx() as tx:
            for target in targets:
                dkey = f"{target}:{key}"
                rows = tx.execute("SELECT t FROM notify_log WHERE key = ?", (dkey,))
                if rows and now - float(rows[0][0]) < window_s:
                    continue
                if rows:
                    tx.execute("UPDATE notify_log SET t = ? WHERE key = ?", (now, dkey))
                else:
                    tx.execute("INSERT INTO notify_log (key, t) VALUES (?, ?)", (dkey, now))
                tx.execute(
                    "INSERT INTO notify_outbox (target, key, notice, attempts, next_t, created_t) "
                    "VALUES (?, ?, ?, 0, ?, ?)",
                    (target, key, body, now, now),
                )
                queued.append(target)
            if escalation is not None and (queued or not targets):
                alarm_id, due_t, esc = escalation
                tx.execute(
                    "INSERT INTO escalations (alarm_id, due_t, notice) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (alarm_id, due_t, _dumps(esc)),
                )
        return queued

    def take_notices(self, now: float, lease_s: float, limit: int = 20) -> list[tuple[int, str, dict[str, Any], int]]:
        """Claim up to ``limit`` due notices for ``lease_s`` (a crashed sender's claim runs out):
        (outbox id, target, notice, attempts so far)."""
        with self.db.tx() as tx:
            rows = tx.execute(
                "SELECT id, target, notice, attempts FROM notify_outbox WHERE next_t <= ? ORDER BY next_t, id LIMIT ?",
                (now, limit),
            )
            for r in rows:
                tx.execute("UPDATE notify_outbox SET next_t = ? WHERE id = ?", (now + lease_s, r[0]))
        return [(int(r[0]), str(r[1]), orjson.loads(r[2]), int(r[3])) for r in rows]

    def notice_done(self, outbox_id: int) -> None:
        with self.db.tx() as tx:
            tx.execute("DELETE FROM notify_outbox WHERE id = ?", (outbox_id,))

    def notice_retry(self, outbox_id: int, attempts: int, next_t: float) -> None:
        with self.db.tx() as tx:
            tx.execute("UPDATE notify_outbox SET attempts = ?, next_t = ? WHERE id = ?", (attempts, next_t, outbox_id))

    def pending_notices(self) -> int:
        with self.db.read() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM notify_outbox")[0][0])

    def cancel_escalation(self, alarm_id: str) -> None:
        with self.db.tx() as tx:
            tx.execute("DELETE FROM escalations WHERE alarm_id = ?", (alarm_id,))

    def take_due_escalations(self, now: float) -> list[dict[str, Any]]:
        """Remove and return the escalations due at ``now`` (one transaction: each fires once)."""
        with self.db.tx() as tx:
            rows = tx.execute("SELECT alarm_id, notice FROM escalations WHERE due_t <= ? ORDER BY due_t", (now,))
            for alarm_id, _n in rows:
                tx.execute("DELETE FROM escalations WHERE alarm_id = ?", (alarm_id,))
        return [orjson.loads(n) for _a, n in rows]
