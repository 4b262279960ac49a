"""Queries whose SQL is the same on SQLite and PostgreSQL, written once with ``?`` placeholders.

The backends differ where it pays (how readings are keyed and written, time columns); the
bookkeeping tables (dead letters, batches, gaps, gateways) are queried the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from cloud_ingest.store.base import DeadLetter, Gap, GatewayState
from sqlstore import Dialect, pg_placeholders


def digest(raw: bytes) -> bytes:
    """Dead-letter identity with the topic: a redelivered bad payload is stored once."""
    return hashlib.sha256(raw).digest()


class SharedQueries:
    """Mixed into both SQL backends, which provide ``_query`` and ``_exec`` in their own placeholders."""

    dialect: Dialect

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return pg_placeholders(sql) if self.dialect == "postgresql" else sql

    def gateways(self) -> list[GatewayState]:
        rows = self._query(
            "SELECT g.gw, g.state, g.boot, g.agent, g.health, g.updated_at, "
            "(SELECT count(*) FROM devices d WHERE d.gw = g.gw) FROM gateways g ORDER BY g.gw"
        )
        return [
            GatewayState(gw, st == "online", boot, agent, h if isinstance(h, dict) else orjson.loads(h), upd, int(n))
            for gw, st, boot, agent, h, upd, n in rows
        ]

    def dead_letters(self, limit: int = 100, since: float | None = None) -> list[DeadLetter]:
        rows = self._query(
            self._sql(
                "SELECT id, received_at, topic, gw, reason, detail, raw FROM dead_letters "
                "WHERE received_at >= ? ORDER BY id DESC LIMIT ?"
            ),
            (since if since is not None else float("-inf"), limit),
        )
        return [DeadLetter(int(i), t, tp, gw, r, d, bytes(raw)) for i, t, tp, gw, r, d, raw in rows]

    def dead_letter_count(self) -> int:
        return int(self._query("SELECT count(*) FROM dead_letters")[0][0])

    def gaps(self, gw: str | None = None, open_only: bool = False) -> list[Gap]:
        sql = "SELECT gw, boot, first_seq, last_seq, detected_at, filled_at FROM gaps WHERE 1 = 1"
        params: list[Any] = []
        if gw is not None:
            sql += " AND gw = ?"
            params.append(gw)
        if open_only:
            sql += " AND filled_at IS NULL"
        return [Gap(*row) for row in self._query(self._sql(sql + " ORDER BY gw, boot, first_seq"), params)]

    def record_gap(self, gap: Gap) -> None:
        self._exec(
            self._sql(
                "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gw, boot, first_seq) DO UPDATE SET "
                "last_seq = CASE WHEN excluded.last_seq > gaps.last_seq THEN excluded.last_seq ELSE gaps.last_seq END"
            ),
            (gap.gw, gap.boot, gap.first_seq, gap.last_seq, gap.detected_at, gap.filled_at),
        )

    def close_gaps(self, gw: str, boot: str, upto_seq: int, now: float) -> None:
        self._exec(
            self._sql(
                "UPDATE gaps SET filled_at = ? WHERE gw = ? AND boot = ? AND last_seq <= ? AND filled_at IS NULL"
            ),
            (now, gw, boot, upto_seq),
        )

    def committed_seqs(self, gw: str, boot: str, after_seq: int) -> list[int]:
        sql = "SELECT seq FROM batches WHERE gw = ? AND boot = ? AND seq > ? ORDER BY seq"
        rows = self._query(self._sql(sql), (gw, boot, after_seq))
        return [int(r[0]) for r in rows]
