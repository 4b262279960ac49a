"""Read a backtest's history from the ingest store (``cloud_ingest.store``): the I/O edge of the backtest."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cloud_ingest.store import open_store
from contracts.errors import CitywatchError
from contracts.reading import Event
from rules.backtest import History, Series
from rules.errors import HistoryError


def history_from_chunks(
    chunks: Any,
    registry: dict[str, Any],
    start: float,
    end: float,
    progress: Callable[[float], None] | None = None,
) -> History:
    """Group column chunks (ordered by time, as ``iter_readings`` yields them) into per-series arrays."""
    parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)
    span = max(end - start, 1e-9)
    for ch in chunks:
        n = len(ch)
        if n == 0:
            continue
        keys = np.asarray(ch.device, dtype=object) + "\x1f" + np.asarray(ch.metric, dtype=object)
        uniq, inv = np.unique(keys.astype(str), return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.flatnonzero(np.diff(inv[order])) + 1
        for k, idx in zip(uniq.tolist(), np.split(order, bounds), strict=True):
            device, metric = k.split("\x1f", 1)
            parts[(device, metric)].append((ch.ts[idx], ch.value[idx], ch.quality[idx]))
        if progress is not None:
            progress(min(1.0, (float(ch.ts[-1]) - start) / span))
    series = {}
    for key, pieces in parts.items():
        t = np.concatenate([p[0] for p in pieces]).astype(np.float64)
        v = np.concatenate([p[1] for p in pieces]).astype(np.float64)
        q = np.concatenate([p[2] for p in pieces]).astype(np.int8)
        if t.size > 1 and np.any(np.diff(t) <= 0):
            order = np.argsort(t, kind="stable")
            t, v, q = t[order], v[order], q[order]
            keep = np.ones(t.size, dtype=bool)
            keep[1:] = t[1:] != t[:-1]
            t, v, q = t[keep], v[keep], q[keep]
        series[key] = Series(t, v, q)
    if progress is not None:
        progress(1.0)
    return History(series, registry, [], start, end)


def load_events(store: Any, start: float, end: float, devices: Sequence[str] | None = None,
                page: int = 5000) -> list[Event]:
    """Every event in ``[start, end)`` (WIM vehicles, cover interrupts), oldest first, read page by page.

    ``Store.events`` pages by time only, so a page ends before its last timestamp and the next
    starts at it (events sharing that time are read again whole); a page of one timestamp only
    is read again with a larger limit.
    """
    wanted = set(devices) if devices else None
    out: list[Event] = []
    t = start
    limit = page
    while True:
        got = store.events(t, end, limit=limit)
        if len(got) < limit:
            out.extend(got)
            break
        last_t = got[-1].ts
        head = [e for e in got if e.ts < last_t]
        if not head:  # the whole page is one timestamp: read it with room to spare
            limit *= 2
            continue
        out.extend(head)
        t = last_t
        limit = page
    return out if wanted is None else [e for e in out if e.device in wanted]


def load_history(
    store_url: str,
    start: float,
    end: float,
    devices: Sequence[str] | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    chunk: int = 200_000,
) -> History:
    """Readings and events in ``[start, end)`` and the device registry from the ingest store at ``store_url``."""
    try:
        store = open_store(store_url)
    except CitywatchError as exc:
        raise HistoryError(f"cannot open the ingest store {store_url}: {exc}") from exc
    try:
        registry = {d.info.id: d.info for d in store.devices()}
        chunks = store.iter_readings(start, end, list(devices) if devices else None, chunk=chunk)
        history = history_from_chunks(chunks, registry, start, end, progress)
        history.events = load_events(store, start, end, devices)
        return history
    except CitywatchError as exc:
        raise HistoryError(f"reading history from {store_url} failed: {exc}") from exc
    finally:
        store.close()
