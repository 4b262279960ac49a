"""Pure helpers shared by the backends: row shaping, status merging, URL parsing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from contracts.payloads import ts_ms
from contracts.reading import DeviceInfo, Reading


def reading_rows(readings: Iterable[Reading]) -> list[tuple[str, str, int, float, int]]:
    """(device, metric, ts_ms, value, quality) rows, deduplicated inside the batch (first wins).

    A batch may carry the same identity twice (a resend merged with the original); the first
    occurrence wins, as ``ON CONFLICT DO NOTHING`` would across batches.
    """
    seen: dict[tuple[str, str, int], tuple[str, str, int, float, int]] = {}
    for r in readings:
        key = (r.device, r.metric, ts_ms(r.ts))
        if key not in seen:
            seen[key] = (r.device, r.metric, key[2], r.value, int(r.quality))
    return list(seen.values())


def latest_rows(rows: Iterable[tuple[str, str, int, float, int]]) -> list[tuple[str, str, int, float, int]]:
    """The newest row per (device, metric) of a batch, sorted by key (stable lock order)."""
    best: dict[tuple[str, str], tuple[str, str, int, float, int]] = {}
    for row in rows:
        key = (row[0], row[1])
        cur = best.get(key)
        if cur is None or row[2] > cur[2]:
            best[key] = row
    return [best[k] for k in sorted(best)]


def device_info_json(info: DeviceInfo) -> str:
    return orjson.dumps(info.to_json()).decode()


def device_info_from_json(text: str | bytes | dict[str, Any]) -> DeviceInfo:
    obj: dict[str, Any] = text if isinstance(text, dict) else orjson.loads(text)
    tags = obj.get("tags") or []
    return DeviceInfo(
        id=str(obj["id"]),
        profile=str(obj.get("profile", "")),
        kind=str(obj.get("kind", "")),
        lat=obj.get("lat"),
        lon=obj.get("lon"),
        grid=obj.get("grid"),
        component_id=obj.get("component_id"),
        owner=obj.get("owner"),
        circuit=obj.get("circuit"),
        tags=tuple(str(t) for t in tags),
        interval_s=obj.get("interval_s"),
    )


def in_placeholders(n: int, mark: str = "?") -> str:
    return ",".join([mark] * n)
