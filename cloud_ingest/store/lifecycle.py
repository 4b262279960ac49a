"""Raw day partitions, compacted blocks and rollups, read and maintained the same way on SQLite and PostgreSQL.

Storage of one reading over its life:

* hot: a row in the day table ``readings_d<day>`` (a PostgreSQL partition of ``readings``; an
  ordinary table in SQLite, which has no partitioning: per-day tables make dropping a day one
  ``DROP TABLE``, never a row-by-row ``DELETE``, and a day is small enough to compact in one go);
* compacted: once the day is older than the late limit, one row per (device, metric, hour) in
  ``packed_<class>_d<day>`` holding a :mod:`cloud_ingest.compact` block; the day table is dropped
  in the same transaction. One table per metric class and day, so each class keeps its own
  retention and still drops whole tables;
* rolled up from the moment it is inserted (``rollup_1m``, ``rollup_1h``: see :mod:`cloud_ingest.rollup`),
  which outlive the raw data; the 1-minute rollups are kept by day too (``rollup_1m_d<day>``) and
  expire by whole days, the hourly ones are kept.

Every read (``range``, ``iter_readings``) merges hot rows and compacted blocks, so callers such
as the backtest do not know which they got. The backends supply the few statements that differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from cloud_ingest.compact import decode, encode
from cloud_ingest.rollup import ROLLUP_TABLES, Agg, rollup_for
from cloud_ingest.store.base import Point, ReadingChunk, make_chunk
from cloud_ingest.store.common import in_placeholders
from cloud_ingest.store.queries import SharedQueries
from contracts.payloads import ts_ms
from sqlstore import Sql

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEFAULT_CLASS = "default"
CLASS_NAME = re.compile(r"^[a-z][a-z0-9]{0,30}$")  # used in table names, so no '_' (the '_d<day>' suffix)
_RAW = re.compile(r"^readings_d(\d+)$")
_ROLLUP = re.compile(r"^rollup_1m_d(\d+)$")
_PACKED = re.compile(r"^packed_([a-z][a-z0-9]{0,30})_d(\d+)$")

T = TypeVar("T")
Row = tuple[str, str, int, float, int]  # device, metric, ts_ms, value, quality


@dataclass(frozen=True, slots=True)
class Partitions:
    """What is stored where: raw day tables, (class, day) compacted tables, 1-minute rollup days."""

    raw_days: frozenset[int]
    packed: frozenset[tuple[str, int]]
    rollup_days: frozenset[int] = frozenset()


def parse_partitions(names: Iterable[str]) -> Partitions:
    raw: set[int] = set()
    packed: set[tuple[str, int]] = set()
    rollup: set[int] = set()
    for name in names:
        if m := _RAW.match(name):
            raw.add(int(m.group(1)))
        elif m := _PACKED.match(name):
            packed.add((m.group(1), int(m.group(2))))
        elif m := _ROLLUP.match(name):
            rollup.add(int(m.group(1)))
    return Partitions(frozenset(raw), frozenset(packed), frozenset(rollup))


def class_of(metric: str, classes: Mapping[str, Sequence[str]]) -> str:
    for cls, metrics in classes.items():
        if metric in metrics:
            return cls
    return DEFAULT_CLASS


def bucket_points(ts: np.ndarray, values: np.ndarray, bucket_ms: int) -> list[Point]:
    """avg/min/max/count per epoch-aligned bucket of sorted points."""
    if ts.size == 0:
        return []
    b = ts // bucket_ms * bucket_ms
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    out = []
    for i, j in zip(starts, [*starts[1:], ts.size], strict=True):
        v = values[i:j]
        out.append(Point(int(b[i]) / 1000.0, float(v.mean()), float(v.min()), float(v.max()), int(j - i)))
    return out


def rechunk(parts: Iterable[list[tuple[str, str, float, float, int]]], size: int) -> Iterator[ReadingChunk]:
    """Chunks of exactly ``size`` rows (the last may be shorter) from row lists of any length."""
    buf: list[tuple[str, str, float, float, int]] = []
    for part in parts:
        buf.extend(part)
        while len(buf) >= size:
            yield make_chunk(buf[:size])
            del buf[:size]
    if buf:
        yield make_chunk(buf)


def encode_rows(rows: Sequence[Row]) -> list[tuple[str, str, int, int, bytes]]:
    """(device, metric, hour_ms, n, block) per (device, metric, hour) of rows sorted by (device, metric, ts)."""
    out: list[tuple[str, str, int, int, bytes]] = []
    i = 0
    while i < len(rows):
        d, m, t0 = rows[i][0], rows[i][1], rows[i][2]
        hour = t0 // HOUR_MS * HOUR_MS
        j = i
        while j < len(rows) and rows[j][0] == d and rows[j][1] == m and rows[j][2] < hour + HOUR_MS:
            j += 1
        part = rows[i:j]
        block = encode(
            np.fromiter((r[2] for r in part), np.int64, len(part)),
            np.fromiter((r[3] for r in part), np.float64, len(part)),
            np.fromiter((r[4] for r in part), np.int8, len(part)),
        )
        out.append((d, m, hour, len(part), block))
        i = j
    return out


def decode_blocks(blocks: Iterable[tuple[str, str, bytes]], lo: int, hi: int) -> list[Row]:
    """Rows of compacted blocks with ``lo <= ts_ms < hi``."""
    rows: list[Row] = []
    for d, m, blob in blocks:
        t, v, q = decode(bytes(blob))
        keep = (t >= lo) & (t < hi)
        rows.extend((d, m, int(a), float(b), int(c)) for a, b, c in zip(t[keep], v[keep], q[keep], strict=True))
    return rows


class Lifecycle(SharedQueries):
    """Mixed into both SQL backends; they supply the methods that raise NotImplementedError."""

    ts_ms_expr = "ts_ms"  # a raw day table's time in milliseconds

    # ------------------------------------------------------------ backend hooks

    def _tx(self, fn: Callable[[Sql], T]) -> T:
        """Run ``fn`` in one write transaction (``?`` placeholders)."""
        raise NotImplementedError

    def _table_names(self) -> list[str]:
        raise NotImplementedError

    def _raw_series(self, device: str, metric: str, lo: int, hi: int) -> list[tuple[int, float]]:
        raise NotImplementedError

    def _raw_rows(self, lo: int, hi: int, devices: Sequence[str] | None, chunk: int) -> Iterator[list[Row]]:
        """Hot rows with ``lo <= ts_ms < hi`` ordered by (ts, device, metric), in lists of up to ``chunk``."""
        raise NotImplementedError

    def _create_packed(self, sql: Sql, cls: str, day: int) -> str:
        """Create (if needed) the compacted table of ``cls`` and ``day``; returns its name."""
        raise NotImplementedError

    def _packed_source(self, lo_day: int, hi_day: int) -> str | None:
        """A FROM item with (device, metric, hour_ms, n, block) of the compacted tables of those days."""
        raise NotImplementedError

    def _rollup_source(self, table: str, lo_day: int, hi_day: int) -> str | None:
        """A FROM item with the rollup rows of ``table`` for those days (None: there are none)."""
        raise NotImplementedError

    # ------------------------------------------------------------ reads

    def partitions(self) -> Partitions:
        return parse_partitions(self._table_names())

    def _packed(self, lo: int, hi: int, where: str, params: Sequence[Any]) -> list[Row]:
        src = self._packed_source(lo // DAY_MS, (hi - 1) // DAY_MS)
        if src is None:
            return []
        blocks = self._query(
            self._sql(f"SELECT device, metric, block FROM {src} WHERE hour_ms >= ? AND hour_ms < ?{where}"),
            (lo // HOUR_MS * HOUR_MS, hi, *params),
        )
        return decode_blocks(blocks, lo, hi)

    def range(self, device: str, metric: str, start: float, end: float, bucket_s: float | None = None) -> list[Point]:
        lo, hi = ts_ms(start), ts_ms(end)
        res = rollup_for(bucket_s)
        if bucket_s is not None and res is not None:
            return self._rollup_range(ROLLUP_TABLES[res], (device, metric), lo, hi, round(bucket_s * 1000))
        raw = self._raw_series(device, metric, lo, hi)
        packed = self._packed(lo, hi, " AND device = ? AND metric = ?", (device, metric))
        if packed:
            merged = dict(raw)
            merged.update((t, v) for _, _, t, v, _ in packed)  # an identity in both: the compacted (first) row
            raw = sorted(merged.items())
        ts = np.fromiter((r[0] for r in raw), np.int64, len(raw))
        vs = np.fromiter((r[1] for r in raw), np.float64, len(raw))
        if bucket_s is None:
            return [Point(t / 1000.0, v, v, v, 1) for t, v in zip(ts.tolist(), vs.tolist(), strict=True)]
        return bucket_points(ts, vs, max(1, round(bucket_s * 1000)))

    def _rollup_range(self, table: str, series: tuple[str, str], lo: int, hi: int, bucket_ms: int) -> list[Point]:
        """Buckets whose rollup rows start inside [lo, hi): read from rollups, so raw data may be gone."""
        src = self._rollup_source(table, lo // DAY_MS, (hi - 1) // DAY_MS)
        if src is None:
            return []
        rows = self._query(
            self._sql(
                f"SELECT (bucket_ms / ?) * ? AS b, sum(total) / sum(n), min(mn), max(mx), sum(n) FROM {src} "
                "WHERE device = ? AND metric = ? AND bucket_ms >= ? AND bucket_ms < ? GROUP BY b ORDER BY b"
            ),
            (bucket_ms, bucket_ms, *series, lo, hi),
        )
        return [Point(int(b) / 1000.0, float(a), float(mn), float(mx), int(n)) for b, a, mn, mx, n in rows]

    def rollups(self, device: str, metric: str, start: float, end: float, resolution_s: int) -> list[tuple[float, Agg]]:
        """The stored rollup rows (bucket start, aggregate) of one series with buckets starting in [start, end)."""
        lo, hi = ts_ms(start), ts_ms(end)
        src = self._rollup_source(ROLLUP_TABLES[resolution_s], lo // DAY_MS, (hi - 1) // DAY_MS)
        if src is None:
            return []
        rows = self._query(
            self._sql(
                f"SELECT bucket_ms, n, total, mn, mx, last_ts_ms, last_v FROM {src} "
                "WHERE device = ? AND metric = ? AND bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms"
            ),
            (device, metric, lo, hi),
        )
        return [(int(b) / 1000.0, Agg(int(n), float(t), float(mn), float(mx), int(lt), float(lv)))
                for b, n, t, mn, mx, lt, lv in rows]

    def iter_readings(
        self, start: float, end: float, devices: Sequence[str] | None = None, chunk: int = 50_000
    ) -> Iterator[ReadingChunk]:
        if devices is not None and not devices:
            return iter(())
        return rechunk(self._day_parts(ts_ms(start), ts_ms(end), devices, chunk), chunk)

    def _day_parts(
        self, lo: int, hi: int, devices: Sequence[str] | None, chunk: int
    ) -> Iterator[list[tuple[str, str, float, float, int]]]:
        """Day by day: hot rows streamed, or merged in memory with the day's compacted blocks."""
        parts = self.partitions()
        packed_days = {d for _, d in parts.packed if lo // DAY_MS <= d <= (hi - 1) // DAY_MS}
        if not packed_days:
            for rows in self._raw_rows(lo, hi, devices, chunk):
                yield [(d, m, t / 1000.0, v, q) for d, m, t, v, q in rows]
            return
        days = sorted(packed_days | {d for d in parts.raw_days if lo // DAY_MS <= d <= (hi - 1) // DAY_MS})
        where, params = "", []
        if devices is not None:
            where = f" AND device IN ({in_placeholders(len(devices))})"
            params = list(devices)
        for day in days:
            a, b = max(lo, day * DAY_MS), min(hi, (day + 1) * DAY_MS)
            hot = [r for rows in self._raw_rows(a, b, devices, chunk) for r in rows]
            if day not in packed_days:
                merged = hot
            else:
                merged = self._packed(a, b, where, params) + hot
                merged.sort(key=lambda r: (r[2], r[0], r[1]))
            yield [(d, m, t / 1000.0, v, q) for d, m, t, v, q in merged]

    # ------------------------------------------------------------ maintenance

    def compact_day(self, day: int, classes: Mapping[str, Sequence[str]], devices_per_pass: int = 200) -> int:
        """Move the hot day ``day`` into compacted blocks per metric class and drop its table.

        Works through ``devices_per_pass`` devices at a time, so memory is bounded by that many
        devices' day, not by the city's. A day compacted before (late data re-created its hot
        table) has those devices' blocks merged with the new rows; an identity already compacted
        wins, as the first write does. Returns the readings moved. One transaction: a crash
        leaves either the hot table or the blocks.
        """

        def run(sql: Sql) -> int:
            raw = f"readings_d{day}"
            if not sql.has_table(raw):
                return 0
            devices = [r[0] for r in sql.execute(f"SELECT DISTINCT device FROM {raw} ORDER BY device")]
            moved = 0
            for i in range(0, len(devices), devices_per_pass):
                span = (devices[i], devices[min(i + devices_per_pass, len(devices)) - 1])
                moved += self._compact_devices(sql, raw, day, span, classes)
            sql.execute(f"DROP TABLE {raw}")
            return moved

        return self._tx(run)

    def _compact_devices(
        self, sql: Sql, raw: str, day: int, span: tuple[str, str], classes: Mapping[str, Sequence[str]]
    ) -> int:
        """Compact the rows of devices ``span[0] <= device <= span[1]`` of one hot day."""
        between = "device >= ? AND device <= ?"
        rows: list[Row] = [
            (d, m, int(t), float(v), int(q))
            for d, m, t, v, q in sql.execute(
                f"SELECT device, metric, {self.ts_ms_expr} AS t, value, quality FROM {raw} WHERE {between} "
                "ORDER BY device, metric, t",
                span,
            )
        ]
        by_class: dict[str, list[Row]] = {}
        for row in rows:
            by_class.setdefault(class_of(row[1], classes), []).append(row)
        for cls, fresh in by_class.items():
            part = fresh
            table = self._create_packed(sql, cls, day)
            old = sql.execute(f"SELECT device, metric, block FROM {table} WHERE {between}", span)
            if old:  # late rows of a day compacted before: rewrite these blocks, the compacted row wins
                merged = decode_blocks(old, day * DAY_MS, (day + 1) * DAY_MS) + part
                merged.sort(key=lambda r: r[:3])  # stable: the compacted row comes first
                part = [r for i, r in enumerate(merged) if i == 0 or merged[i - 1][:3] != r[:3]]
                sql.execute(f"DELETE FROM {table} WHERE {between}", span)
            for d, m, hour, n, block in encode_rows(part):
                sql.execute(
                    f"INSERT INTO {table} (cls, device, metric, hour_ms, n, block) VALUES (?, ?, ?, ?, ?, ?)",
                    (cls, d, m, hour, n, block),
                )
        return len(rows)

    def drop_rollup_day(self, day: int) -> None:
        """Expire one day of 1-minute rollups (the hourly ones stay)."""
        self._tx(lambda sql: sql.execute(f"DROP TABLE IF EXISTS rollup_1m_d{day}"))

    def drop_packed(self, cls: str, day: int) -> None:
        if not CLASS_NAME.match(cls):
            raise ValueError(f"bad metric class name {cls!r}")
        self._tx(lambda sql: sql.execute(f"DROP TABLE IF EXISTS packed_{cls}_d{day}"))

    def day_counts(self, cls: str, day: int, classes: Mapping[str, Sequence[str]]) -> tuple[int, int]:
        """(readings counted by the 1-minute rollups, readings stored) for one class and day."""
        if cls == DEFAULT_CLASS:
            others = [m for c, ms in classes.items() if c != DEFAULT_CLASS for m in ms]
            cond, params = (f" AND metric NOT IN ({in_placeholders(len(others))})", others) if others else ("", [])
        else:
            metrics = list(classes.get(cls, ()))
            cond, params = f" AND metric IN ({in_placeholders(len(metrics))})", metrics
        src = self._rollup_source("rollup_1m", day, day)
        rolled = 0 if src is None else self._query(
            self._sql(f"SELECT coalesce(sum(n), 0) FROM {src} WHERE bucket_ms >= ? AND bucket_ms < ?{cond}"),
            (day * DAY_MS, (day + 1) * DAY_MS, *params),
        )[0][0]
        stored = 0
        parts = self.partitions()
        if (cls, day) in parts.packed:
            stored += int(self._query(f"SELECT coalesce(sum(n), 0) FROM packed_{cls}_d{day}")[0][0])
        if day in parts.raw_days:
            raw = self._query(self._sql(f"SELECT count(*) FROM readings_d{day} WHERE 1 = 1{cond}"), params)
            stored += int(raw[0][0])
        return int(rolled), stored
