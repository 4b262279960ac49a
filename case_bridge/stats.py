"""Case statistics: 及时解决率 (on time / due) and 结案率 (closed / reported) per unit and category,
high-incidence hours and grids, and the median time per workflow stage, over SQLite or PostgreSQL.

Read-only over the case store's ``cases`` table; one pass over the period per report.
"""

from __future__ import annotations

import statistics as pystats
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from case_bridge.db import PostgresDb, SqliteDb, Tx
from case_bridge.workflow import State


@dataclass(frozen=True, slots=True)
class RateRow:
    key: str
    total: int  # cases reported in the period (rejected and cancelled excluded)
    closed: int
    due: int  # cases whose handling limit has run out or that were handled
    on_time: int  # handled within the limit, and not verified/closed over an active alarm
    on_time_rate: float | None  # 及时解决率 = on_time / due
    closure_rate: float | None  # 结案率 = closed / total
    overridden: int = 0  # verified or closed by a supervisor over an active alarm (never on time)


@dataclass(frozen=True, slots=True)
class Statistics:
    since: float
    until: float
    by_unit: list[RateRow]
    by_category: list[RateRow]
    by_hour_category: list[tuple[int, str, int]]  # (local hour, service code, count)
    by_grid: list[tuple[str, int]]
    stage_median_s: dict[str, float | None]
    total: RateRow = field(default_factory=lambda: RateRow("all", 0, 0, 0, 0, None, None))




class CaseStatistics:
    """Statistics over the case store's database (``CaseStore.stats``)."""

    def __init__(self, db: SqliteDb | PostgresDb, utc_offset_s: int) -> None:
        self.db = db
        self.utc_offset_s = utc_offset_s  # local hours of the working calendar

    def report(self, since: float, until: float, now: float | None = None, unit: str | None = None) -> Statistics:
        """Cases reported in [since, until): 及时解决率 / closure rate per unit and category,
        counts by local hour × category and by grid (high-incidence time/place/type), and the
        median time per workflow stage."""
        now = time.time() if now is None else now
        excluded = f"'{State.REJECTED.value}', '{State.CANCELLED.value}'"  # never reached the city's books
        base = f"created_at >= ? AND created_at < ? AND state NOT IN ({excluded})"
        params: list[Any] = [since, until]
        if unit is not None:
            base += " AND unit = ?"
            params.append(unit)
        off = self.utc_offset_s
        # SQLite would rather walk a (unit, ...) index to avoid a sort for GROUP BY unit, which
        # reads the whole table; the period's created_at range is the selective part
        src = "cases" if self.db.dialect == "postgresql" else "cases INDEXED BY cases_created"
        if self.db.dialect == "postgresql":
            hour = "CAST(FLOOR((created_at + ?) / 3600.0) AS BIGINT) % 24"
        else:
            hour = "CAST((created_at + ?) / 3600 AS INTEGER) % 24"
        # one pass over the period, grouped finely, rolled up here: each extra GROUP BY query
        # would walk the period's rows again
        sums = (
            f"COUNT(*), SUM(CASE WHEN state = '{State.CLOSED.value}' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN due_at IS NOT NULL AND (handled_at IS NOT NULL OR due_at < ?) THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN handled_at IS NOT NULL AND due_at IS NOT NULL AND handled_at <= due_at AND overridden = 0 "
            "THEN 1 ELSE 0 END), SUM(overridden)"
        )
        with self.db.read() as tx:
            rows = tx.execute(
                f"SELECT unit, service_code, grid, {hour} AS h, {sums} FROM {src} WHERE {base} "
                "GROUP BY unit, service_code, grid, h",
                [off, now, *params],
            )
            medians = self._stage_medians(tx, src, base, params)
        acc: dict[tuple[str, str], list[int]] = {}
        hours: dict[tuple[int, str], int] = {}
        grids: dict[str, int] = {}
        for unit_id, sc, grid, h, n, closed, due, on_time, overridden in rows:
            vals = (int(n), int(closed or 0), int(due or 0), int(on_time or 0), int(overridden or 0))
            for key in (("unit", str(unit_id)), ("cat", str(sc)), ("all", "all")):
                a = acc.setdefault(key, [0, 0, 0, 0, 0])
                for k in range(5):
                    a[k] += vals[k]
            hours[(int(h), str(sc))] = hours.get((int(h), str(sc)), 0) + vals[0]
            if grid is not None:
                grids[str(grid)] = grids.get(str(grid), 0) + vals[0]

        def rows_of(kind: str) -> list[RateRow]:
            return [self._rate((key, *v)) for (k, key), v in sorted(acc.items()) if k == kind]

        total = rows_of("all")
        return Statistics(
            since, until, rows_of("unit"), rows_of("cat"),
            [(h, sc, n) for (h, sc), n in sorted(hours.items())],
            sorted(grids.items(), key=lambda kv: (-kv[1], kv[0]))[:100],
            medians,
            total[0] if total else RateRow("all", 0, 0, 0, 0, None, None),
        )

    _STAGES = (
        ("file", "filed_at", "created_at"),
        ("dispatch", "dispatched_at", "filed_at"),
        ("handle", "handled_at", "dispatched_at"),
        ("verify", "verified_at", "handled_at"),
        ("close", "closed_at", "verified_at"),
    )

    def _stage_medians(self, tx: Tx, src: str, base: str, params: list[Any]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if self.db.dialect == "postgresql":
            cols = ", ".join(
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {end} - {start})" for _n, end, start in self._STAGES
            )
            row = tx.execute(f"SELECT {cols} FROM {src} WHERE {base}", params)[0]
            for (name, _e, _s), v in zip(self._STAGES, row, strict=True):
                out[name] = None if v is None else float(v)
            return out
        rows = tx.execute(
            f"SELECT filed_at - created_at, dispatched_at - filed_at, handled_at - dispatched_at, "
            f"verified_at - handled_at, closed_at - verified_at FROM {src} WHERE {base}",
            params,
        )
        for i, (name, _e, _s) in enumerate(self._STAGES):
            vals = [r[i] for r in rows if r[i] is not None]
            out[name] = float(pystats.median(vals)) if vals else None
        return out

    @staticmethod
    def _rate(r: Sequence[Any]) -> RateRow:
        total, closed, due, on_time, overridden = (int(x or 0) for x in r[1:6])
        return RateRow(str(r[0]), total, closed, due, on_time,
                       on_time / due if due else None, closed / total if total else None, overridden)

