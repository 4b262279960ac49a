"""InfluxDB 1.x backend through the 1.x HTTP API: line protocol to ``/write``, InfluxQL to ``/query``.

``influxdb1://[user:password@]host:8086/DATABASE`` (``influxdb1s://`` for https), with optional
query parameters ``raw_days`` (raw retention; absent: kept forever), ``resample_every_s`` (60)
and ``resample_for_s`` (7200) for the rollup continuous queries. For cities that already run
InfluxDB 1.x (Debian ships 1.6); InfluxDB 2 speaks Flux through :mod:`cloud_ingest.store.influx`.

Layout, one database and three retention policies:

* ``raw``: ``readings`` (tags device, metric; fields value, quality). InfluxDB drops whole shards
  past the policy's duration: its own retention, never point by point.
* ``rollups`` (forever): ``rollup_1m`` and ``rollup_1h`` (n, total, mn, mx, last_v) written by
  continuous queries. They recompute the last ``resample_for_s`` on every run, so data later
  than that window is not rolled up (InfluxDB's limit); the SQL stores roll up late data too.
* ``meta`` (forever): events and bookkeeping (batches at time = seq µs, dead letters keyed by
  digest, registry entries at time 0), as in the InfluxDB 2 store.

A point's identity is (measurement, tags, time) and a rewrite overwrites it, so ``write``
looks up which readings exist and sends only new ones (the first write wins, as in SQL).
No transactions: data first, the ``batches`` marks last.
"""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from cloud_ingest.errors import StoreError, StoreUnavailable
from cloud_ingest.rollup import ROLLUP_TABLES, Agg, rollup_for
from cloud_ingest.store.base import (
    DeadLetter,
    DeviceState,
    Gap,
    GatewayState,
    Point,
    ReadingChunk,
    WriteBatch,
    WriteResult,
    make_chunk,
)
from cloud_ingest.store.common import device_info_from_json, device_info_json
from cloud_ingest.store.influx import line, reading_line
from contracts.metrics import METRIC_UNITS
from contracts.payloads import Status, ts_ms
from contracts.reading import Event, Quality, Reading

Row = dict[str, Any]


def q_str(s: str) -> str:
    """An InfluxQL string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def q_ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def any_of(tag: str, values: Sequence[str]) -> str:
    return "(" + " OR ".join(f"{q_ident(tag)} = {q_str(v)}" for v in values) + ")"


class Influx1Store:
    """InfluxDB 1.x store; stateless HTTP calls, so safe to share between threads."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        db = urllib.parse.unquote(parts.path.strip("/"))
        if parts.scheme not in ("influxdb1", "influxdb1s") or not parts.hostname or not db or "/" in db:
            raise StoreError(f"bad InfluxDB 1.x URL {url.rsplit('@', 1)[-1]!r}: expected influxdb1://host:8086/DB")
        self.url = url
        self.db = db
        http = "https" if parts.scheme == "influxdb1s" else "http"
        self._base = f"{http}://{parts.hostname}:{parts.port or 8086}"
        self._auth = {"u": urllib.parse.unquote(parts.username), "p": urllib.parse.unquote(parts.password or "")} \
            if parts.username else {}
        opts = dict(urllib.parse.parse_qsl(parts.query))
        unknown = set(opts) - {"raw_days", "resample_every_s", "resample_for_s"}
        if unknown:
            raise StoreError(f"unknown InfluxDB 1.x URL parameters {sorted(unknown)}")
        try:
            self.raw_days = int(opts["raw_days"]) if "raw_days" in opts else None
            self._every_s = int(opts.get("resample_every_s", "60"))
            self._for_s = int(opts.get("resample_for_s", "7200"))
        except ValueError as exc:
            raise StoreError(f"InfluxDB 1.x URL parameters must be integers: {exc}") from exc
        self._timeout_s = timeout_s
        self._setup()

    # ------------------------------------------------------------ HTTP

    def _http(self, path: str, params: dict[str, str], body: bytes) -> bytes:
        req = urllib.request.Request(
            f"{self._base}{path}?{urllib.parse.urlencode({**params, **self._auth})}", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code >= 500 or exc.code == 429:
                raise StoreUnavailable(f"InfluxDB {path}: HTTP {exc.code} {detail}") from exc
            raise StoreError(f"InfluxDB {path}: HTTP {exc.code} {detail}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"InfluxDB at {self._base} unreachable: {exc}") from exc

    def _query(self, q: str, epoch: str = "ms") -> list[list[Row]]:
        """Rows of each statement; a series' tags (GROUP BY) are merged into its rows, and its
        name is ``_series`` (``SHOW CONTINUOUS QUERIES`` names a series per database)."""
        raw = self._http("/query", {"db": self.db, "epoch": epoch}, urllib.parse.urlencode({"q": q}).encode())
        out: list[list[Row]] = []
        for res in orjson.loads(raw).get("results", []):
            if "error" in res:
                raise StoreError(f"InfluxQL {q[:200]!r}: {res['error']}")
            rows: list[Row] = []
            for s in res.get("series", []):
                tags = s.get("tags", {})
                rows.extend({"_series": s.get("name"), **tags, **dict(zip(s["columns"], v, strict=True))}
                            for v in s.get("values", []))
            out.append(rows)
        return out

    def _select(self, q: str, epoch: str = "ms") -> list[Row]:
        return self._query(q, epoch)[0]

    def _write(self, lines: list[str], precision: str, rp: str) -> None:
        if lines:
            self._http("/write", {"db": self.db, "rp": rp, "precision": precision}, "\n".join(lines).encode())

    def _setup(self) -> None:
        db = q_ident(self.db)
        raw = f"{self.raw_days}d" if self.raw_days else "INF"
        stmts = [f"CREATE DATABASE {db}"]
        for rp, duration in (("raw", raw), ("rollups", "INF"), ("meta", "INF")):
            stmts.append(f'CREATE RETENTION POLICY "{rp}" ON {db} DURATION {duration} REPLICATION 1')
            stmts.append(f'ALTER RETENTION POLICY "{rp}" ON {db} DURATION {duration}')  # the URL's raw_days rules
        self._query("; ".join(stmts))
        existing = {r["name"] for r in self._select("SHOW CONTINUOUS QUERIES") if r["_series"] == self.db}
        for res, table in ROLLUP_TABLES.items():
            name = f"cq_{table}"
            if name in existing:
                continue
            self._query(
                f"CREATE CONTINUOUS QUERY {q_ident(name)} ON {db} RESAMPLE EVERY {self._every_s}s FOR {self._for_s}s "
                'BEGIN SELECT count("value") AS "n", sum("value") AS "total", min("value") AS "mn", '
                f'max("value") AS "mx", last("value") AS "last_v" INTO {db}."rollups".{q_ident(table)} '
                f'FROM {db}."raw"."readings" GROUP BY time({res}s), "device", "metric" END'
            )

    def close(self) -> None:
        """Nothing to release: every call is its own HTTP request."""

    def clear(self) -> None:
        """Drop and recreate the database (tests only)."""
        self._query(f"DROP DATABASE {q_ident(self.db)}")
        self._setup()

    # ------------------------------------------------------------ write

    def _existing(self, keys: set[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        lo, hi = min(k[2] for k in keys), max(k[2] for k in keys)
        devices = sorted({k[0] for k in keys})
        rows = self._select(
            f'SELECT "value", "device", "metric" FROM "raw"."readings" WHERE time >= {lo}ms AND time <= {hi}ms '
            f"AND {any_of('device', devices)}"
        )
        return {(r["device"], r["metric"], int(r["time"])) for r in rows} & keys

    def write(self, batch: WriteBatch) -> WriteResult:
        rows = [(r.device, r.metric, ts_ms(r.ts), r.value, int(r.quality)) for r in batch.readings]
        rows.extend(batch.rows)
        fresh: dict[tuple[str, str, int], tuple[str, str, int, float, int]] = {}
        if rows:
            existing = self._existing({(d, m, t) for d, m, t, _, _ in rows})
            for row in rows:
                key = (row[0], row[1], row[2])
                if key not in existing and key not in fresh:
                    fresh[key] = row
        new_events = [(gw, e) for gw, e in batch.events if not self._event_exists(e)]
        digests = [hashlib.sha256(d.topic.encode() + b"\x00" + d.raw).hexdigest() for d in batch.dead_letters]
        known = self._known_digests(digests)
        self._write([reading_line(*row) for row in fresh.values()], "ms", "raw")
        self._write([line("events", {"device": e.device, "kind": e.kind, "id": e.id, "gw": gw},
                          {"body": orjson.dumps(e.body).decode()}, ts_ms(e.ts)) for gw, e in new_events], "ms", "meta")
        self._write([
            line("dead_letters", {"digest": h}, {
                "received_at": d.received_at, "topic": d.topic, "gw": d.gw or "", "reason": d.reason,
                "detail": d.detail, "raw": base64.b64encode(d.raw).decode()}, 1)
            for h, d in zip(digests, batch.dead_letters, strict=True) if h not in known
        ], "ns", "meta")
        for su in batch.statuses:
            self._apply_status(su.gw, su.status, su.received_at)
        now = time.time()
        self._write([line("batches", {"gw": s.gw, "boot": s.boot}, {"n": s.n, "kind": s.kind, "committed_at": now},
                          s.seq) for s in batch.seqs], "u", "meta")
        n_dead = len({h for h in digests if h not in known})
        return WriteResult(len(fresh), len(rows) - len(fresh), len(new_events), len(batch.events) - len(new_events),
                           n_dead)

    def _event_exists(self, e: Event) -> bool:
        t = ts_ms(e.ts)
        return bool(self._select(
            f'SELECT "body" FROM "meta"."events" WHERE time = {t}ms AND "device" = {q_str(e.device)} '
            f'AND "kind" = {q_str(e.kind)} AND "id" = {q_str(e.id)}'
        ))

    def _known_digests(self, digests: list[str]) -> set[str]:
        if not digests:
            return set()
        rows = self._select(f'SELECT "topic", "digest" FROM "meta"."dead_letters" WHERE {any_of("digest", digests)}')
        return {r["digest"] for r in rows}

    def _apply_status(self, gw: str, status: Status, received_at: float) -> None:
        if status.state == "online":
            self._write([line("gateways", {"gw": gw}, {
                "state": "online", "boot": status.boot, "agent": status.agent or "",
                "health": orjson.dumps(status.health).decode(), "updated_at": received_at}, 0)], "ns", "meta")
            ids = {d.id for d in status.devices}
            stale = [dev for dev, g in self._registry() if g == gw and dev not in ids]
            self._write(
                [line("devices", {"id": d.id}, {"gw": gw, "info": device_info_json(d), "updated_at": received_at,
                                                "active": True}, 0) for d in status.devices]
                + [line("devices", {"id": dev}, {"active": False, "updated_at": received_at}, 0) for dev in stale],
                "ns", "meta",
            )
            return
        current = {g.gw: g for g in self._gateways()}.get(gw)
        if current is None or current.boot == status.boot:
            self._write([line("gateways", {"gw": gw}, {"state": "offline", "boot": status.boot,
                                                       "updated_at": received_at}, 0)], "ns", "meta")

    # ------------------------------------------------------------ readings

    def latest(self, device: str | None = None) -> list[Reading]:
        where = f' WHERE "device" = {q_str(device)}' if device is not None else ""
        rows = self._select(
            f'SELECT "value", "quality" FROM "raw"."readings"{where} GROUP BY "device", "metric" '
            "ORDER BY time DESC LIMIT 1"
        )
        out = [Reading(r["device"], r["metric"], int(r["time"]) / 1000.0, float(r["value"]),
                       METRIC_UNITS.get(r["metric"], ""), Quality(int(r.get("quality") or 0))) for r in rows]
        return sorted(out, key=lambda x: (x.device, x.metric))

    def _series_where(self, device: str, metric: str, lo: int, hi: int) -> str:
        return f'WHERE "device" = {q_str(device)} AND "metric" = {q_str(metric)} AND time >= {lo}ms AND time < {hi}ms'

    def range(self, device: str, metric: str, start: float, end: float, bucket_s: float | None = None) -> list[Point]:
        lo, hi = ts_ms(start), ts_ms(end)
        where = self._series_where(device, metric, lo, hi)
        if bucket_s is None:
            rows = self._select(f'SELECT "value" FROM "raw"."readings" {where}')
            return [Point(int(r["time"]) / 1000.0, float(r["value"]), float(r["value"]), float(r["value"]), 1)
                    for r in rows]
        b_ms = max(1, round(bucket_s * 1000))
        res = rollup_for(bucket_s)
        raw_from = None if self.raw_days is None else time.time() - self.raw_days * 86_400
        if res is not None and raw_from is not None and start < raw_from:  # the raw data is gone: rollups
            acc: dict[int, list[float]] = {}
            for t, agg in self.rollups(device, metric, start, end, res):
                a = acc.setdefault(ts_ms(t) // b_ms * b_ms, [0.0, 0.0, float("inf"), float("-inf")])
                a[0] += agg.n
                a[1] += agg.total
                a[2] = min(a[2], agg.min)
                a[3] = max(a[3], agg.max)
            return [Point(k / 1000.0, a[1] / a[0], a[2], a[3], int(a[0])) for k, a in sorted(acc.items())]
        rows = self._select(
            f'SELECT mean("value"), min("value"), max("value"), count("value") FROM "raw"."readings" {where} '
            f"GROUP BY time({b_ms}ms)"
        )
        return [Point(int(r["time"]) / 1000.0, float(r["mean"]), float(r["min"]), float(r["max"]), int(r["count"]))
                for r in rows if r["count"]]

    def rollups(self, device: str, metric: str, start: float, end: float, resolution_s: int) -> list[tuple[float, Agg]]:
        """What the continuous queries wrote for one series, buckets starting in [start, end)."""
        rows = self._select(
            f'SELECT "n", "total", "mn", "mx", "last_v" FROM "rollups".{q_ident(ROLLUP_TABLES[resolution_s])} '
            + self._series_where(device, metric, ts_ms(start), ts_ms(end))
        )
        # a CQ's last() keeps no time of its own: the bucket start stands in for it
        return [(int(r["time"]) / 1000.0, Agg(int(r["n"]), float(r["total"]), float(r["mn"]), float(r["mx"]),
                                              int(r["time"]), float(r["last_v"]))) for r in rows]

    def iter_readings(
        self, start: float, end: float, devices: Sequence[str] | None = None, chunk: int = 50_000
    ) -> Iterator[ReadingChunk]:
        if devices is not None and not devices:
            return
        cond = f" AND {any_of('device', devices)}" if devices is not None else ""
        rows = self._select(
            f'SELECT "value", "quality", "device", "metric" FROM "raw"."readings" '
            f"WHERE time >= {ts_ms(start)}ms AND time < {ts_ms(end)}ms{cond}"
        )
        out = sorted((r["device"], r["metric"], int(r["time"]) / 1000.0, float(r["value"]), int(r.get("quality") or 0))
                     for r in rows)
        out.sort(key=lambda x: (x[2], x[0], x[1]))
        for i in range(0, len(out), chunk):
            yield make_chunk(out[i : i + chunk])

    def events(
        self, start: float, end: float, device: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Event]:
        cond = f"time >= {ts_ms(start)}ms AND time < {ts_ms(end)}ms"
        if device is not None:
            cond += f' AND "device" = {q_str(device)}'
        if kind is not None:
            cond += f' AND "kind" = {q_str(kind)}'
        rows = self._select(f'SELECT "body", "device", "kind", "id" FROM "meta"."events" WHERE {cond}')
        out = sorted((int(r["time"]), r["device"], r["kind"], r["id"], r["body"]) for r in rows)[:limit]
        return [Event(d, k, i, t / 1000.0, orjson.loads(b)) for t, d, k, i, b in out]

    # ------------------------------------------------------------ registry and bookkeeping

    def _registry(self) -> list[tuple[str, str]]:
        return [(r["id"], str(r.get("gw") or "")) for r in self._select('SELECT * FROM "meta"."devices"')
                if r.get("active")]

    def _gateways(self) -> list[GatewayState]:
        return [
            GatewayState(r["gw"], r.get("state") == "online", str(r.get("boot") or ""), r.get("agent") or None,
                         orjson.loads(r.get("health") or "{}"), float(r.get("updated_at") or 0.0), 0)
            for r in self._select('SELECT * FROM "meta"."gateways"')
        ]

    def devices(self) -> list[DeviceState]:
        gws = {g.gw: g for g in self._gateways()}
        seen: dict[str, float] = {}
        for reading in self.latest():
            seen[reading.device] = max(seen.get(reading.device, 0.0), reading.ts)
        out = []
        for r in self._select('SELECT * FROM "meta"."devices"'):
            if not r.get("active"):
                continue
            gw = str(r.get("gw") or "")
            g = gws.get(gw)
            out.append(DeviceState(device_info_from_json(r["info"]), gw, bool(g and g.online), seen.get(r["id"]),
                                   float(r.get("updated_at") or 0.0)))
        return sorted(out, key=lambda d: d.info.id)

    def gateways(self) -> list[GatewayState]:
        counts: dict[str, int] = {}
        for _dev, gw in self._registry():
            counts[gw] = counts.get(gw, 0) + 1
        return sorted(
            (GatewayState(g.gw, g.online, g.boot, g.agent, g.health, g.updated_at, counts.get(g.gw, 0))
             for g in self._gateways()),
            key=lambda g: g.gw,
        )

    def dead_letters(self, limit: int = 100, since: float | None = None) -> list[DeadLetter]:
        rows = [r for r in self._select('SELECT * FROM "meta"."dead_letters"')
                if since is None or float(r["received_at"]) >= since]
        rows.sort(key=lambda r: float(r["received_at"]), reverse=True)
        return [DeadLetter(i, float(r["received_at"]), r["topic"], r.get("gw") or None, r["reason"],
                           r.get("detail") or "", base64.b64decode(r["raw"])) for i, r in enumerate(rows[:limit])]

    def dead_letter_count(self) -> int:
        return len(self._select('SELECT "topic" FROM "meta"."dead_letters"'))

    def gaps(self, gw: str | None = None, open_only: bool = False) -> list[Gap]:
        where = f' WHERE "gw" = {q_str(gw)}' if gw is not None else ""
        out = [
            Gap(r["gw"], r["boot"], int(r["first_seq"]), int(r["last_seq"]), float(r["detected_at"]),
                None if float(r["filled_at"]) < 0 else float(r["filled_at"]))
            for r in self._select(f'SELECT * FROM "meta"."gaps"{where}')
        ]
        if open_only:
            out = [g for g in out if g.filled_at is None]
        return sorted(out, key=lambda g: (g.gw, g.boot, g.first_seq))

    @staticmethod
    def _gap_line(g: Gap) -> str:
        return line("gaps", {"gw": g.gw, "boot": g.boot}, {
            "first_seq": g.first_seq, "last_seq": g.last_seq, "detected_at": g.detected_at,
            "filled_at": -1.0 if g.filled_at is None else g.filled_at}, g.first_seq)  # time in µs

    def record_gap(self, gap: Gap) -> None:
        current = {(g.boot, g.first_seq): g for g in self.gaps(gap.gw)}.get((gap.boot, gap.first_seq))
        if current is not None:  # a re-recorded gap only widens
            gap = Gap(gap.gw, gap.boot, gap.first_seq, max(gap.last_seq, current.last_seq), current.detected_at,
                      current.filled_at)
        self._write([self._gap_line(gap)], "u", "meta")

    def close_gaps(self, gw: str, boot: str, upto_seq: int, now: float) -> None:
        open_gaps = [g for g in self.gaps(gw, open_only=True) if g.boot == boot and g.last_seq <= upto_seq]
        self._write([self._gap_line(Gap(g.gw, g.boot, g.first_seq, g.last_seq, g.detected_at, now))
                     for g in open_gaps], "u", "meta")

    def committed_seqs(self, gw: str, boot: str, after_seq: int) -> list[int]:
        rows = self._select(
            f'SELECT "n" FROM "meta"."batches" WHERE "gw" = {q_str(gw)} AND "boot" = {q_str(boot)} '
            f"AND time > {max(after_seq, -1)}u",
            epoch="u",
        )
        return sorted({int(r["time"]) for r in rows})
