"""InfluxDB 2 backend via influxdb-client: line protocol in, Flux out.

``influxdb://TOKEN@host:8086/ORG/BUCKET`` (``influxdbs://`` for https).

Idempotency comes from InfluxDB's point identity (measurement, tag set, timestamp): writing
the same reading twice overwrites it with identical fields. Readings are
``readings,device=..,metric=.. value=<float>,quality=<int>i <ts_ms>``. Bookkeeping uses
the same trick with synthetic timestamps: a committed message is a ``batches`` point at
``time = seq`` µs (tags gw, boot); a dead letter is keyed by the sha256 of its bytes; gateway
and device registry entries live at ``time = 0`` so the newest write replaces the entry.

InfluxDB has no transactions: ``write`` sends readings, events and dead letters first and
the ``batches`` marks last, so a committed mark always implies its data was written (a crash
in between leaves data without a mark, which the redelivery rewrites idempotently). Status
updates are read-modify-write and not atomic. ``range(bucket_s=...)`` aggregates in Python
over the raw points; fine for console-sized windows, not for years of data.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from cloud_ingest.errors import StoreError, StoreUnavailable
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
from contracts.metrics import METRIC_UNITS
from contracts.payloads import Status, ts_ms
from contracts.reading import Event, Quality, Reading

# ------------------------------------------------------------ line protocol (pure)

_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_MEAS_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})


def escape_tag(value: str) -> str:
    """Tag keys, tag values and field keys: escape comma, equals sign and space."""
    return value.replace("\\", "\\\\").translate(_TAG_ESCAPES)


def escape_measurement(value: str) -> str:
    return value.replace("\\", "\\\\").translate(_MEAS_ESCAPES)


def field_value(value: object) -> str:
    """A field value: float, ``<int>i``, boolean, or a double-quoted string (newlines become spaces)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("line protocol cannot carry NaN or infinity")
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{text}"'


def line(measurement: str, tags: dict[str, str], fields: dict[str, object], ts: int) -> str:
    """One line-protocol point; tags sorted (InfluxDB's canonical order), ``ts`` in the write precision."""
    tag_part = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != "")
    field_part = ",".join(f"{escape_tag(k)}={field_value(v)}" for k, v in fields.items())
    return f"{escape_measurement(measurement)}{tag_part} {field_part} {ts}"


def reading_line(device: str, metric: str, t_ms: int, value: float, quality: int) -> str:
    return line(
        "readings", {"device": device, "metric": metric}, {"value": float(value), "quality": int(quality)}, t_ms
    )


def parse_url(url: str) -> tuple[str, str, str, str]:
    """(http url, token, org, bucket) of ``influxdb[s]://TOKEN@host:port/ORG/BUCKET``."""
    parts = urlsplit(url)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if parts.scheme not in ("influxdb", "influxdbs") or not parts.hostname or len(path) != 2 or not parts.username:
        raise StoreError(
            f"bad InfluxDB URL {url.rsplit('@', maxsplit=1)[-1]!r}: expected influxdb://TOKEN@host:8086/ORG/BUCKET"
        )
    http = "https" if parts.scheme == "influxdbs" else "http"
    return f"{http}://{parts.hostname}:{parts.port or 8086}", unquote(parts.username), path[0], path[1]


def _flux_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------ the store


class InfluxStore:
    """InfluxDB 2 store. Thread-safe through one lock around the client."""

    def __init__(self, url: str) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.url = url
        http, token, self.org, self.bucket = parse_url(url)
        self._lock = threading.Lock()
        self._client = InfluxDBClient(url=http, token=token, org=self.org, timeout=30_000)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()
        try:
            if not self._client.ping():
                raise StoreUnavailable(f"InfluxDB at {http} does not answer ping")
        except StoreError:
            raise
        except Exception as exc:  # urllib3/requests errors: translated once, here
            raise StoreUnavailable(f"InfluxDB at {http} unreachable: {exc}") from exc

    # ------------------------------------------------------------ plumbing

    def _write(self, lines: list[str], precision: str) -> None:
        if not lines:
            return
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=precision)  # type: ignore[arg-type]
        except Exception as exc:
            raise self._translate(exc, "write") from exc

    def _query(self, flux: str) -> list[dict[str, Any]]:
        try:
            tables = self._query_api.query(flux, org=self.org)
        except Exception as exc:
            raise self._translate(exc, "query") from exc
        return [rec.values for table in tables for rec in table.records]

    @staticmethod
    def _translate(exc: Exception, what: str) -> StoreError:
        status = getattr(exc, "status", None)
        if status is None or status >= 500 or status == 429:
            return StoreUnavailable(f"InfluxDB {what}: {exc}")
        return StoreError(f"InfluxDB {what}: {exc}")

    def _from(self, measurement: str, start: str = "0", stop: str | None = None) -> str:
        rng = f"start: {start}" + (f", stop: {stop}" if stop else "")
        return (
            f"from(bucket: {_flux_str(self.bucket)}) |> range({rng}) "
            f"|> filter(fn: (r) => r._measurement == {_flux_str(measurement)})"
        )

    def close(self) -> None:
        with self._lock:
            self._client.close()  # type: ignore[no-untyped-call]

    def clear(self) -> None:
        """Delete everything in the bucket (tests only)."""
        with self._lock:
            try:
                self._client.delete_api().delete(
                    "1970-01-01T00:00:00Z", "2200-01-01T00:00:00Z", "", self.bucket, self.org
                )
            except Exception as exc:
                raise self._translate(exc, "delete") from exc

    # ------------------------------------------------------------ write

    def write(self, batch: WriteBatch) -> WriteResult:
        rows = [(r.device, r.metric, ts_ms(r.ts), r.value, int(r.quality)) for r in batch.readings]
        rows.extend(batch.rows)
        with self._lock:
            new_readings = self._count_new_readings(rows)
            new_events = self._count_new(
                "events", [(e.device, e.kind, e.id) for _, e in batch.events], ("device", "kind", "id")
            )
            digests = [hashlib.sha256(d.topic.encode() + b"\x00" + d.raw).hexdigest() for d in batch.dead_letters]
            new_dead = self._count_new("dead_letters", [(h,) for h in digests], ("digest",))
            self._write([reading_line(*row) for row in rows], "ms")
            self._write(
                [
                    line(
                        "events",
                        {"device": e.device, "kind": e.kind, "id": e.id, "gw": gw},
                        {"body": orjson.dumps(e.body).decode()},
                        ts_ms(e.ts),
                    )
                    for gw, e in batch.events
                ],
                "ms",
            )
            self._write(
                [
                    line(
                        "dead_letters",
                        {"digest": h},
                        {
                            "received_at": d.received_at,
                            "topic": d.topic,
                            "gw": d.gw or "",
                            "reason": d.reason,
                            "detail": d.detail,
                            "raw": base64.b64encode(d.raw).decode(),
                        },
                        1,
                    )
                    for h, d in zip(digests, batch.dead_letters, strict=True)
                ],
                "ns",
            )
            for su in batch.statuses:
                self._apply_status(su.gw, su.status, su.received_at)
            now = time.time()
            self._write(
                [
                    line(
                        "batches", {"gw": s.gw, "boot": s.boot}, {"n": s.n, "kind": s.kind, "committed_at": now}, s.seq
                    )
                    for s in batch.seqs
                ],
                "us",  # time = seq microseconds: Python datetimes (query results) resolve microseconds
            )
        return WriteResult(new_readings, len(rows) - new_readings, new_events, len(batch.events) - new_events, new_dead)

    def _count_new_readings(self, rows: Sequence[tuple[str, str, int, float, int]]) -> int:
        """Readings not yet stored (InfluxDB overwrites silently, so dedup is counted by a lookup)."""
        if not rows:
            return 0
        keys = {(d, m, t) for d, m, t, _, _ in rows}
        lo = min(t for _, _, t in keys)
        hi = max(t for _, _, t in keys) + 1
        devices = sorted({d for d, _, _ in keys})
        flux = (
            self._from("readings", f"time(v: {lo * 1_000_000})", f"time(v: {hi * 1_000_000})")
            + ' |> filter(fn: (r) => r._field == "value") '
            + f"|> filter(fn: (r) => contains(value: r.device, set: {orjson.dumps(devices).decode()})) "
            + '|> keep(columns: ["_time", "device", "metric"])'
        )
        existing = {(r["device"], r["metric"], round(r["_time"].timestamp() * 1000)) for r in self._query(flux)}
        return len(keys - existing)

    def _count_new(self, measurement: str, keys: list[tuple[str, ...]], tag_names: tuple[str, ...]) -> int:
        if not keys:
            return 0
        rows = self._query(
            self._from(measurement) + f" |> group(columns: {orjson.dumps(list(tag_names)).decode()}) |> first()"
        )
        existing = {tuple(str(r.get(t, "")) for t in tag_names) for r in rows}
        return len(set(keys) - existing)

    def _apply_status(self, gw: str, status: Status, received_at: float) -> None:
        if status.state == "online":
            self._write(
                [
                    line(
                        "gateways",
                        {"gw": gw},
                        {
                            "state": "online",
                            "boot": status.boot,
                            "agent": status.agent or "",
                            "health": orjson.dumps(status.health).decode(),
                            "updated_at": received_at,
                        },
                        0,
                    )
                ],
                "ns",
            )
            ids = {d.id for d in status.devices}
            stale = [d for d in self._registry() if d[1] == gw and d[0] not in ids]
            self._write(
                [
                    line(
                        "devices",
                        {"id": d.id},
                        {"gw": gw, "info": device_info_json(d), "updated_at": received_at, "active": True},
                        0,
                    )
                    for d in status.devices
                ]
                + [line("devices", {"id": dev}, {"active": False, "updated_at": received_at}, 0) for dev, _ in stale],
                "ns",
            )
            return
        current = {g.gw: g for g in self._gateways()}.get(gw)
        if current is None or current.boot == status.boot:
            self._write(
                [line("gateways", {"gw": gw}, {"state": "offline", "boot": status.boot, "updated_at": received_at}, 0)],
                "ns",
            )

    # ------------------------------------------------------------ queries

    def latest(self, device: str | None = None) -> list[Reading]:
        flux = self._from("readings")
        if device is not None:
            flux += f" |> filter(fn: (r) => r.device == {_flux_str(device)})"
        flux += (
            ' |> last() |> group(columns: ["device", "metric"]) '
            '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        )
        with self._lock:
            rows = self._query(flux)
        out = [
            Reading(
                r["device"],
                r["metric"],
                round(r["_time"].timestamp(), 3),
                float(r["value"]),
                METRIC_UNITS.get(r["metric"], ""),
                Quality(int(r.get("quality", 0))),
            )
            for r in rows
        ]
        return sorted(out, key=lambda x: (x.device, x.metric))

    def _raw(self, device: str, metric: str, start: float, end: float) -> list[tuple[float, float]]:
        flux = (
            self._from("readings", f"time(v: {ts_ms(start) * 1_000_000})", f"time(v: {ts_ms(end) * 1_000_000})")
            + f" |> filter(fn: (r) => r.device == {_flux_str(device)} and r.metric == {_flux_str(metric)}"
            + ' and r._field == "value") |> sort(columns: ["_time"])'
        )
        with self._lock:
            rows = self._query(flux)
        return [(round(r["_time"].timestamp(), 3), float(r["_value"])) for r in rows]

    def range(self, device: str, metric: str, start: float, end: float, bucket_s: float | None = None) -> list[Point]:
        raw = self._raw(device, metric, start, end)
        if bucket_s is None:
            return [Point(t, v, v, v, 1) for t, v in raw]
        b_ms = max(1, round(bucket_s * 1000))
        acc: dict[int, list[float]] = {}
        for t, v in raw:
            acc.setdefault(ts_ms(t) // b_ms * b_ms, []).append(v)
        return [Point(k / 1000.0, sum(vs) / len(vs), min(vs), max(vs), len(vs)) for k, vs in sorted(acc.items())]

    def iter_readings(
        self, start: float, end: float, devices: Sequence[str] | None = None, chunk: int = 50_000
    ) -> Iterator[ReadingChunk]:
        if devices is not None and not devices:
            return
        flux = self._from("readings", f"time(v: {ts_ms(start) * 1_000_000})", f"time(v: {ts_ms(end) * 1_000_000})")
        if devices is not None:
            flux += f" |> filter(fn: (r) => contains(value: r.device, set: {orjson.dumps(list(devices)).decode()}))"
        flux += (
            ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> group() '
            '|> sort(columns: ["_time", "device", "metric"])'
        )
        with self._lock:
            rows = self._query(flux)
        out = [
            (r["device"], r["metric"], round(r["_time"].timestamp(), 3), float(r["value"]), int(r.get("quality", 0)))
            for r in rows
        ]
        for i in range(0, len(out), chunk):
            yield make_chunk(out[i : i + chunk])

    def events(
        self, start: float, end: float, device: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Event]:
        flux = self._from("events", f"time(v: {ts_ms(start) * 1_000_000})", f"time(v: {ts_ms(end) * 1_000_000})")
        if device is not None:
            flux += f" |> filter(fn: (r) => r.device == {_flux_str(device)})"
        if kind is not None:
            flux += f" |> filter(fn: (r) => r.kind == {_flux_str(kind)})"
        flux += ' |> filter(fn: (r) => r._field == "body") |> group() |> sort(columns: ["_time"])'
        flux += f" |> limit(n: {int(limit)})"
        with self._lock:
            rows = self._query(flux)
        return [
            Event(r["device"], r["kind"], r["id"], round(r["_time"].timestamp(), 3), orjson.loads(r["_value"]))
            for r in rows
        ]

    def _registry(self) -> list[tuple[str, str]]:
        rows = self._query(
            self._from("devices") + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        )
        return [(r["id"], str(r.get("gw", ""))) for r in rows if r.get("active", False)]

    def _gateways(self) -> list[GatewayState]:
        rows = self._query(
            self._from("gateways") + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        )
        return [
            GatewayState(
                r["gw"],
                r.get("state") == "online",
                str(r.get("boot", "")),
                r.get("agent") or None,
                orjson.loads(r.get("health") or "{}"),
                float(r.get("updated_at", 0.0)),
                0,
            )
            for r in rows
        ]

    def devices(self) -> list[DeviceState]:
        with self._lock:
            rows = self._query(
                self._from("devices") + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
            )
            gws = {g.gw: g for g in self._gateways()}
        seen: dict[str, float] = {}
        for reading in self.latest():
            seen[reading.device] = max(seen.get(reading.device, 0.0), reading.ts)
        out = []
        for r in rows:
            if not r.get("active", False):
                continue
            gw = str(r.get("gw", ""))
            g = gws.get(gw)
            out.append(
                DeviceState(
                    device_info_from_json(r["info"]),
                    gw,
                    bool(g and g.online),
                    seen.get(r["id"]),
                    float(r.get("updated_at", 0.0)),
                )
            )
        return sorted(out, key=lambda d: d.info.id)

    def gateways(self) -> list[GatewayState]:
        with self._lock:
            gws = self._gateways()
            reg = self._registry()
        counts: dict[str, int] = {}
        for _dev, gw in reg:
            counts[gw] = counts.get(gw, 0) + 1
        return sorted(
            (GatewayState(g.gw, g.online, g.boot, g.agent, g.health, g.updated_at, counts.get(g.gw, 0)) for g in gws),
            key=lambda g: g.gw,
        )

    def _dead(self) -> list[dict[str, Any]]:
        return self._query(
            self._from("dead_letters") + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
        )

    def dead_letters(self, limit: int = 100, since: float | None = None) -> list[DeadLetter]:
        with self._lock:
            rows = self._dead()
        rows = [r for r in rows if since is None or float(r["received_at"]) >= since]
        rows.sort(key=lambda r: float(r["received_at"]), reverse=True)
        return [
            DeadLetter(
                i,
                float(r["received_at"]),
                r["topic"],
                r.get("gw") or None,
                r["reason"],
                r.get("detail", ""),
                base64.b64decode(r["raw"]),
            )
            for i, r in enumerate(rows[:limit])
        ]

    def dead_letter_count(self) -> int:
        with self._lock:
            return len(self._dead())

    def _gap_rows(self, gw: str | None) -> list[dict[str, Any]]:
        flux = self._from("gaps")
        if gw is not None:
            flux += f" |> filter(fn: (r) => r.gw == {_flux_str(gw)})"
        return self._query(flux + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')

    def gaps(self, gw: str | None = None, open_only: bool = False) -> list[Gap]:
        with self._lock:
            rows = self._gap_rows(gw)
        out = [
            Gap(
                r["gw"],
                r["boot"],
                int(r["first_seq"]),
                int(r["last_seq"]),
                float(r["detected_at"]),
                None if float(r["filled_at"]) < 0 else float(r["filled_at"]),
            )
            for r in rows
        ]
        if open_only:
            out = [g for g in out if g.filled_at is None]
        return sorted(out, key=lambda g: (g.gw, g.boot, g.first_seq))

    def _gap_line(self, g: Gap) -> str:
        return line(
            "gaps",
            {"gw": g.gw, "boot": g.boot},
            {
                "first_seq": g.first_seq,
                "last_seq": g.last_seq,
                "detected_at": g.detected_at,
                "filled_at": -1.0 if g.filled_at is None else g.filled_at,
            },
            g.first_seq,
        )  # time in us

    def record_gap(self, gap: Gap) -> None:
        with self._lock:
            self._write([self._gap_line(gap)], "us")

    def close_gaps(self, gw: str, boot: str, upto_seq: int, now: float) -> None:
        open_gaps = [g for g in self.gaps(gw, open_only=True) if g.boot == boot and g.last_seq <= upto_seq]
        with self._lock:
            self._write(
                [self._gap_line(Gap(g.gw, g.boot, g.first_seq, g.last_seq, g.detected_at, now)) for g in open_gaps],
                "us",
            )

    def committed_seqs(self, gw: str, boot: str, after_seq: int) -> list[int]:
        flux = (
            self._from("batches", f"time(v: {max(after_seq + 1, 0) * 1000})")
            + f' |> filter(fn: (r) => r.gw == {_flux_str(gw)} and r.boot == {_flux_str(boot)} and r._field == "n")'
        )
        with self._lock:
            rows = self._query(flux)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return sorted({(r["_time"] - epoch) // timedelta(microseconds=1) for r in rows})
