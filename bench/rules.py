"""Rule engine throughput: live evaluation and backtest, all rule kinds loaded, 10 000 devices.

Live: time-ordered readings in batches of 500 (as the runner receives them) through
``rules.evaluate.evaluate``; baseline: decoding the same readings from v1 telemetry payloads
(the work every reading already costs before it reaches the rules).
Backtest: 12 h of history for every device through ``rules.backtest.backtest`` (vectorised);
baseline: the live evaluator replaying a sample of the same history reading by reading.
Live with persistence: the same readings again from a fresh state, checkpointing as the runner does
(``EngineState.take_checkpoint`` + ``AlarmStore.commit``: state log records, compactions, transitions) every N
messages to a temporary SQLite store, or with ``--db postgresql://...`` to a throwaway PostgreSQL database (created
and dropped); ratio against evaluation alone in the same pass (goal: keep up with it), and the design before the
state log (one row per changed device at every commit) in the same run.
Like the runner's step, the live passes run without automatic garbage collection (a full pass over the state
stalls for seconds); a pass with a store settles the heap at every checkpoint as the runner does after each step
(``rules.runner.settle_heap``), and that counts as persistence.
Each live figure is also given by this process's CPU time (less moved by other load on a shared box; it
leaves out a PostgreSQL server's work). Restart: a store whose state log is at its limit (just before a compaction)
is loaded as a restarted runner loads it; baseline: the same state loaded again once folded. Loopback only; finishes
in about two minutes on a quiet box. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.alarms import AlarmTransition
from contracts.metrics import METRIC_UNITS
from contracts.payloads import decode_telemetry, encode_telemetry
from contracts.reading import DeviceInfo, Event, Quality, Reading
from rules.backtest import History, Series, backtest
from rules.config import RulesSettings
from rules.evaluate import LOG_ENTRIES_PER_DEVICE, EngineState, GatewayStatus, RuleSet, evaluate
from rules.runner import collector_paused, settle_heap
from rules.specs import Rule, load_rules
from rules.store import AlarmStore, SqliteAlarmStore, StateDelta, open_alarm_store

# A live batch stands for one edge-agent telemetry message (publish.batch_max_readings = 500 under a backlog).
# The runner commits once per step, and a step takes every queued message up to receive_maximum: a runner
# that keeps up commits every few messages, one that is behind commits rarely. Checkpoints every 10, 100
# and receive_maximum messages cover that range.
CHECKPOINT_BATCHES = (10, 100, RulesSettings().receive_maximum)
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC (08:00 in Hangzhou)
RULES = Path(__file__).resolve().parents[1] / "configs" / "rules" / "default.yaml"
KINDS = {"water_gauge": 4000, "manhole": 3500, "lamp": 2300, "wim": 200}
METRICS = {
    "water_gauge": (("depth", 300.0), ("distance", 300.0), ("battery", 3600.0)),
    "manhole": (("tilt", 600.0), ("cover_open", 600.0), ("battery", 3600.0)),
    "lamp": (("voltage", 300.0), ("current", 300.0), ("relay", 300.0), ("power", 300.0)),
    "wim": (("record_count", 60.0),),
}


def registry() -> dict[str, DeviceInfo]:
    out = {}
    rng = np.random.default_rng(7)
    for kind, n in KINDS.items():
        for i in range(n):
            dev = f"{kind.replace('_', '')[:5]}-{i:05d}"
            lat, lon = 30.2 + rng.uniform(0, 0.2), 120.1 + rng.uniform(0, 0.2)
            out[dev] = DeviceInfo(dev, kind, kind, lat=lat, lon=lon, interval_s=300.0)
    return out


def series_for(info: DeviceInfo, hours: float, rng: np.random.Generator) -> dict[str, Series]:
    out = {}
    for metric, step in METRICS[info.kind]:
        t = T0 + rng.uniform(0, step) + np.arange(0.0, hours * 3600.0, step)
        n = t.size
        if metric == "depth":
            storm = rng.random() < 0.1
            v = np.clip(rng.normal(0, 0.003, n) + (0.5 * np.sin(np.linspace(0, np.pi, n)) if storm else 0.0), 0, None)
        elif metric == "distance":
            v = 2.0 - rng.normal(0, 0.003, n)
        elif metric == "battery":
            v = 3.6 - rng.uniform(0, 0.5) * np.linspace(0, 1, n)
        elif metric == "tilt":
            v = np.abs(rng.normal(1, 0.5, n)) + (np.arange(n) > n // 2) * (rng.random() < 0.02) * 30
        elif metric == "cover_open":
            v = ((np.arange(n) % 50) == 0).astype(float) * (rng.random() < 0.02)
        elif metric == "voltage":
            v = rng.normal(225, 4, n)
        elif metric in ("current", "power", "relay"):
            hour = ((t - T0) / 3600.0 + 8.0) % 24.0  # local time in China
            night = (hour >= 17.5) | (hour < 6.5)
            broken = rng.random() < 0.03
            if metric == "relay":
                v = night.astype(float)
            else:
                scale = 0.5 if metric == "current" else 110.0
                v = night * scale * (0.0 if broken else 1.0) + rng.normal(0, 0.001, n)
        else:
            v = np.arange(n, dtype=float)
        q = (rng.random(n) < 0.001).astype(np.int8) * 2
        out[metric] = Series(t, v.astype(np.float64), q)
    return out


class Persisted(NamedTuple):
    transitions: int
    eval_s: float  # with a store this includes building the state-log entries (done as readings are evaluated)
    persist_s: float
    device_parts: int  # whole device parts serialised (log records and compactions)
    series_entries: int  # small per-series entries logged
    compactions: int
    cpu_s: float  # this process's CPU time over the timed parts (SQLite's work included, a PostgreSQL server's not)


def live_run(
    rules: list[Rule], births: list[GatewayStatus], batches: list[list[Reading]], store: AlarmStore | None, every: int,
    max_log_entries: int = 0,
) -> Persisted:
    """Evaluate ``batches`` from a fresh state; with a store, checkpoint every ``every`` batches as the runner does
    (``take_checkpoint`` + ``commit``: state delta + transitions in one transaction). ``max_log_entries`` 0 writes
    one row per changed device at every commit (the design before the state log); the runner's value logs."""
    rs = RuleSet(rules)
    st, _ = evaluate(rs, EngineState(checkpoints=store is not None), births, T0)  # alone: no log entries built
    st.take_dirty()
    settle_heap(full=True)
    gc.disable()  # as in RuleRunner.step
    try:
        return _live_loop(rs, st, batches, store, every, max_log_entries)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


def _live_loop(
    rs: RuleSet, st: EngineState, batches: list[list[Reading]], store: AlarmStore | None, every: int,
    max_log_entries: int,
) -> Persisted:
    n_tr = parts_n = series_n = compactions = 0
    eval_s = persist_s = cpu_s = 0.0
    pending: list[AlarmTransition] = []
    for i, b in enumerate(batches):
        c0 = time.process_time()
        t0 = time.perf_counter()
        st, trs = evaluate(rs, st, b, b[-1].ts)
        eval_s += time.perf_counter() - t0
        n_tr += len(trs)
        pending += trs
        if store is not None and (i % every == every - 1 or i == len(batches) - 1):
            t0 = time.perf_counter()
            parts, series, compact = st.take_checkpoint(rs.condition_names, max_log_entries)
            store.commit(StateDelta(st.global_json(), parts, series, compact), pending)
            parts_n += len(parts)
            series_n += len(series)
            compactions += compact
            del parts, series  # committed: garbage (the runner drops them too)
            settle_heap()  # the runner's step ends so
            persist_s += time.perf_counter() - t0
            pending = []
        cpu_s += time.process_time() - c0
    return Persisted(n_tr, eval_s, persist_s, parts_n, series_n, compactions, cpu_s)


def restart_s(store: AlarmStore) -> float:
    """What a restarted runner spends loading ``store``'s state (folding its log first), as RuleRunner.run does."""
    with collector_paused():
        t0 = time.perf_counter()
        saved = store.load_state()
        assert saved is not None
        EngineState.from_parts(*saved)
        return time.perf_counter() - t0


@contextmanager
def bench_store(db: str | None, name: str) -> Iterator[AlarmStore]:
    """A fresh store: a temporary SQLite file, or a throwaway database on the PostgreSQL server ``db``."""
    if db is None:
        with tempfile.TemporaryDirectory() as tmp:
            store: AlarmStore = SqliteAlarmStore(str(Path(tmp) / f"{name}.db"))
            try:
                yield store
            finally:
                store.close()
        return
    import psycopg

    dbname = f"citywatch_bench_rules_{os.getpid()}_{name}"
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        store = open_alarm_store(urlsplit(db)._replace(path=f"/{dbname}").geturl())
        try:
            yield store
        finally:
            store.close()
    finally:
        with psycopg.connect(db, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="PostgreSQL server URL for the persistence passes (a throwaway database is created "
                    "and dropped); default a temporary SQLite file")
    args = ap.parse_args()
    rules = load_rules([RULES])
    kinds = sorted({r.kind for r in rules})
    reg = registry()
    rng = np.random.default_rng(42)

    # ---------------------------------------------------------------- backtest
    hours = 12.0
    series: dict[tuple[str, str], Series] = {}
    for dev, info in reg.items():
        for metric, s in series_for(info, hours, rng).items():
            series[(dev, metric)] = s
    events = []
    for dev, info in reg.items():
        if info.kind == "wim":
            for k, t in enumerate(np.sort(T0 + rng.uniform(0, hours * 3600, 120)).tolist()):
                axles = int(rng.integers(2, 7))
                gross = int(rng.normal(0.8, 0.25) * {2: 18, 3: 25, 4: 31, 5: 43, 6: 49}[axles] * 1000)
                body = {"lane": 1, "axles": axles, "gross_kg": gross, "axle_kg": [gross // axles] * axles}
                events.append(Event(dev, "vehicle", str(k), round(t, 3), body))
    hist = History(series, reg, events, T0, T0 + hours * 3600)
    n_bt = hist.readings
    t0 = time.perf_counter()
    report = backtest(rules, hist)
    bt_s = time.perf_counter() - t0
    bt_rate = n_bt / bt_s
    raised = sum(s.raised for s in report.rules.values())

    # baseline: the live evaluator replaying a sample of the same history, reading by reading
    sample_devs = [d for i, d in enumerate(reg) if i % 50 == 0]
    readings: list[Reading] = []
    for d in sample_devs:
        for (dev, metric), s in series.items():
            if dev == d:
                readings.extend(
                    Reading(dev, metric, t, v, "", Quality(q))
                    for t, v, q in zip(s.t.tolist(), s.v.tolist(), s.q.tolist(), strict=True)
                )
    readings.sort(key=lambda r: r.ts)
    rs = RuleSet(rules)
    st = EngineState(next_tick_t=float("inf"), checkpoints=False)
    evaluate(rs, st, [GatewayStatus("gw-1", "online", T0, tuple(reg[d] for d in sample_devs))], T0)
    t0 = time.perf_counter()
    evaluate(rs, st, readings, T0)
    base_bt_rate = len(readings) / (time.perf_counter() - t0)

    # ---------------------------------------------------------------- live
    # one hour of every device, time-ordered, in batches of 500
    live: list[Reading] = []
    for (dev, metric), s in series.items():
        sel = s.t < T0 + 3600
        unit = METRIC_UNITS[metric]
        live.extend(
            Reading(dev, metric, t, v, unit, Quality(q))
            for t, v, q in zip(s.t[sel].tolist(), s.v[sel].tolist(), s.q[sel].tolist(), strict=True)
        )
    live.sort(key=lambda r: r.ts)
    batches = [live[i : i + 500] for i in range(0, len(live), 500)]
    by_gw: dict[str, list[DeviceInfo]] = {}
    for i, info in enumerate(reg.values()):
        by_gw.setdefault(f"gw-{i // 50:04d}", []).append(info)
    births = [GatewayStatus(gw, "online", T0, tuple(d)) for gw, d in by_gw.items()]
    live_pass = live_run(rules, births, batches, None, 0)
    n_tr, live_s = live_pass.transitions, live_pass.eval_s
    live_rate = len(live) / live_s
    # (design, checkpoint readings) -> (pass with persistence, evaluation alone just before it): the ratio compares
    # the two adjacent passes, so load on a shared machine shifts both alike. "log": the runner's state log;
    # "rows": one row per changed device at every commit (the design before the log), at the most frequent
    # checkpoint only. A pass with a store builds the log entries as it evaluates: that counts as persistence.
    max_log = LOG_ENTRIES_PER_DEVICE * max(len(reg), 1000)
    persisted: dict[tuple[str, int], tuple[Persisted, float]] = {}
    alone_cpu_s: dict[tuple[str, int], float] = {}  # a shared box's load moves CPU time less than wall time
    passes = [*(("log", e, max_log) for e in CHECKPOINT_BATCHES), ("rows", CHECKPOINT_BATCHES[0], 0)]
    for design, every, limit in passes:
        alone = live_run(rules, births, batches, None, 0)
        alone_s, alone_cpu_s[(design, every * 500)] = alone.eval_s, alone.cpu_s
        with bench_store(args.db, f"{design}{every}") as store:
            persisted[(design, every * 500)] = (live_run(rules, births, batches, store, every, limit), alone_s)
    backend = "SQLite" if args.db is None else "PostgreSQL"

    def rate(p: tuple[Persisted, float]) -> float:
        return len(live) / (p[0].eval_s + p[0].persist_s)

    def ratio(p: tuple[Persisted, float]) -> float:
        """Readings/s with persistence over evaluation alone (adjacent passes)."""
        return p[1] / (p[0].eval_s + p[0].persist_s)

    def overhead(p: tuple[Persisted, float]) -> float:
        """CPU spent persisting per unit spent evaluating."""
        return (p[0].eval_s + p[0].persist_s - p[1]) / p[1]

    with_state = persisted[("log", CHECKPOINT_BATCHES[0] * 500)]
    before = persisted[("rows", CHECKPOINT_BATCHES[0] * 500)]
    # restart: the state log at its longest (max_log entries, just before a compaction would empty it) folded by a
    # restarted runner, against loading the same state once folded (the same store opened again)
    logged_per_batch = (with_state[0].device_parts + with_state[0].series_entries) / len(batches)
    full_log = batches[: min(len(batches), math.ceil(max_log / logged_per_batch))]
    with bench_store(args.db, "restart") as store:
        restart_log = live_run(rules, births, full_log, store, CHECKPOINT_BATCHES[0], 10**12)
        restart_full_s = restart_s(store)
        restart_folded_s = restart_s(store)
    # baseline: decoding the same readings from telemetry payloads
    payloads = [encode_telemetry("gw-0001", "b1", i, b) for i, b in enumerate(batches)]
    t0 = time.perf_counter()
    for p in payloads:
        decode_telemetry(p)
    decode_rate = len(live) / (time.perf_counter() - t0)

    print(f"rule kinds loaded: {', '.join(kinds)}; devices: {len(reg)}")
    print(f"backtest: {n_bt:,} readings + {len(events):,} WIM events in {bt_s:.2f} s = {bt_rate:,.0f} readings/s "
          f"({raised} alarms raised); live evaluator replaying history: {base_bt_rate:,.0f} readings/s; "
          f"ratio {bt_rate / base_bt_rate:.1f}x")
    print(f"live: {len(live):,} readings in {len(batches)} batches in {live_s:.2f} s = {live_rate:,.0f} readings/s "
          f"({len(live) / live_pass.cpu_s:,.0f} by CPU time; {n_tr} transitions); "
          f"decoding the same from v1 payloads: {decode_rate:,.0f} readings/s; "
          f"evaluation/decoding speed ratio {live_rate / decode_rate:.2f}")
    for (design, n), pa in persisted.items():
        p = pa[0]
        what = "state log" if design == "log" else "one row per changed device (before the state log)"
        print(f"live with state committed to {backend} every {n:,} readings (at most), {what}: "
              f"{rate(pa):,.0f} readings/s ({p.device_parts:,} device parts + {p.series_entries:,} series entries, "
              f"{p.compactions} compactions); evaluation alone just before: {len(live) / pa[1]:,.0f} readings/s; "
              f"ratio {ratio(pa):.2f}; persisting costs {overhead(pa):.2f}x the evaluation time; "
              f"by this process's CPU time {len(live) / p.cpu_s:,.0f} vs {len(live) / alone_cpu_s[(design, n)]:,.0f} "
              f"readings/s, ratio {alone_cpu_s[(design, n)] / p.cpu_s:.2f}")
    print(f"restart with {restart_log.device_parts + restart_log.series_entries:,} logged entries to fold "
          f"(the log's limit: {LOG_ENTRIES_PER_DEVICE} per device): {restart_full_s:.2f} s; the same state once "
          f"folded: {restart_folded_s:.2f} s; ratio {restart_full_s / restart_folded_s:.1f}x")
    print(f"every {CHECKPOINT_BATCHES[0] * 500:,} readings, persisting costs {overhead(with_state):.2f}x the "
          f"evaluation time with the state log vs {overhead(before):.2f}x with one row per changed device "
          f"({overhead(before) / overhead(with_state):.1f}x less); readings/s {rate(with_state) / rate(before):.2f}x "
          f"(passes at different times: load-sensitive)")
    print(json.dumps({
        "bench": "rules",
        "devices": len(reg),
        "rule_kinds": kinds,
        "backtest_readings": n_bt,
        "backtest_readings_per_s": round(bt_rate),
        "backtest_baseline_live_replay_readings_per_s": round(base_bt_rate),
        "backtest_speedup": round(bt_rate / base_bt_rate, 2),
        "backtest_alarms_raised": raised,
        "live_readings": len(live),
        "live_readings_per_s": round(live_rate),
        "live_cpu_readings_per_s": round(len(live) / live_pass.cpu_s),
        "live_baseline_decode_readings_per_s": round(decode_rate),
        "live_vs_decode_ratio": round(live_rate / decode_rate, 3),
        "store": backend,
        "live_with_state_delta_readings_per_s": round(rate(with_state)),
        "live_with_state_ratio_to_evaluation": round(ratio(with_state), 3),
        "live_with_state_persist_over_eval": round(overhead(with_state), 3),
        "live_with_state_rows_design_readings_per_s": round(rate(before)),
        "rows_design_persist_over_eval": round(overhead(before), 3),
        "persistence_cost_reduction": round(overhead(before) / overhead(with_state), 2),
        "restart_logged_entries": restart_log.device_parts + restart_log.series_entries,
        "restart_load_s": round(restart_full_s, 3),
        "restart_load_folded_s": round(restart_folded_s, 3),
        "live_with_state_by_checkpoint_readings": {
            f"{design}:{n}": {
                "readings_per_s": round(rate(pa)), "evaluation_alone_readings_per_s": round(len(live) / pa[1]),
                "ratio_to_evaluation": round(ratio(pa), 3), "persist_over_eval": round(overhead(pa), 3),
                "device_parts": pa[0].device_parts, "series_entries": pa[0].series_entries,
                "compactions": pa[0].compactions,
                "cpu_readings_per_s": round(len(live) / pa[0].cpu_s),
                "cpu_evaluation_alone_readings_per_s": round(len(live) / alone_cpu_s[(design, n)]),
                "cpu_ratio_to_evaluation": round(alone_cpu_s[(design, n)] / pa[0].cpu_s, 3),
            }
            for (design, n), pa in persisted.items()
        },
    }))


if __name__ == "__main__":
    main()
