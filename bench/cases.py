"""Case-store figures at 1 000 000 cases, in SQLite and in PostgreSQL.

Per backend:
* bulk-load N cases generated inside the database (a year of history: ~5 % open, the rest
  closed or rejected, 17 units with one busy street office taking ~20 %), then the schema's
  own indexes are built and the planner statistics gathered (ANALYZE);
* worklist p95: ``CaseStore.worklist(unit=..., state=..., sort="deadline", limit=50)`` — the
  handler's query, including the total count — over 200 calls with varying unit (busiest street
  office, any unit, all units), state (one, two, all open) and every fifth call overdue-only;
* statistics (worst of 5): ``CaseStore.stats.report`` over the last 30 days (~80 000 cases);
* creation rate: ``CaseStore.apply_alarm`` for 1 000 new critical alarms (case + link + file
  + dispatch + 3 audit rows per transaction) on the loaded table;
* storm: a minute's worth of alarms (``--storm-alarms``, default 10 000 = 10 000 alarms/min)
  from a city in a storm — lamps of dead feeders (correlated per circuit), overloaded vehicles
  on weigh-in-motion scales (a case each), water gauges raising and escalating — correlated and attached
  through the real store, once one alarm per transaction (``apply_alarm``, a bridge keeping
  up) and once as a backlog in transactions of ``--storm-batch`` (``apply_alarms``, a bridge
  behind; its batches alternate with PostgreSQL's pipelining on and off); alarms/s absorbed and
  p50/p95 per alarm (batched: the wait for its batch's commit).

Baselines measured in the same run: a primary-key ``CaseStore.get`` (p95), against which the
worklist is compared, and a bare single-row INSERT per transaction, against which case
creation and the storm are compared. Goals: worklist p95 < 50 ms at 1 000 000 cases; the storm
absorbed at >= 167 alarms/s (10 000/min).

    .venv/bin/python bench/cases.py [--cases 1000000] [--backends sqlite,postgresql] [--storm-alarms 10000]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from case_bridge.bridge import BACKLOG_BATCH  # noqa: E402
from case_bridge.db import MIGRATIONS, PostgresDb, SqliteDb  # noqa: E402
from case_bridge.lifecycle import NO_DEADLINE  # noqa: E402
from case_bridge.store import CaseStore, open_case_store  # noqa: E402
from contracts.alarms import AlarmTransition, Severity, TransitionKind  # noqa: E402
from contracts.reading import DeviceInfo  # noqa: E402

NOW = 1_764_057_600.0  # 2025-11-25 08:00 UTC
YEAR = 365 * 86400.0
UNITS = [
    "lingyin-street", "beishan-street", "hubin-street", "xihu", "shangcheng", "water-supply", "drainage",
    "power-grid", "street-lighting", "telecom", "heating", "gas", "public-security", "fire-service", "bridges",
    "transport-enforcement", "city-command",
]
CATS = [("event", "0111", "S0111", "道路积水"), ("component", "0101", "B0101", "上水井盖"),
        ("component", "0111", "B0111", "燃气井盖"), ("component", "0118", "B0118", "路灯"),
        ("event", "9901", "S9901", "车辆超限超载"), ("component", "0208", "B0208", "跨河桥")]
GRIDS = ["330106001001", "330106001002", "330106002001", "330102001001", "330106900001"]
OPEN_STATES = ["reported", "filed", "dispatched", "in_handling", "handled", "returned", "parked", "verified"]


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 20 else max(xs)


def _sql_list(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def generate_sql(dialect: str, n: int) -> list[str]:
    """INSERT ... SELECT that makes ``n`` cases inside the database (no Python row building)."""
    if dialect == "sqlite":
        seq = f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) "
        src = "seq"
        rnd = "(abs(random()) % 1000000) / 1000000.0"
        pick = "(abs(random()) % {k})"
        arr = "(CASE {idx} {whens} END)"
    else:
        seq = ""
        src = f"generate_series(1, {n}) AS seq(i)"
        rnd = "random()"
        pick = "floor(random() * {k})::int"
        arr = "(CASE {idx} {whens} END)"

    def choose(values: list[str], idx: str) -> str:
        whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
        return arr.format(idx=idx, whens=whens)

    # one busy street office gets ~20 % of cases: map 0..20 -> unit index with 0 repeated
    unit_pool = [UNITS[0]] * 4 + UNITS[1:]
    inner = (
        f"SELECT i, {NOW} - {YEAR} * (1.0 - i * 1.0 / {n}) - 600 * {rnd} AS created, {rnd} AS r_state, "
        f"{pick.format(k=len(unit_pool))} AS u, "
        f"{pick.format(k=len(CATS))} AS c, {pick.format(k=len(GRIDS))} AS g, {pick.format(k=len(OPEN_STATES))} AS s, "
        f"{rnd} AS r1, {rnd} AS r2 FROM {src}"
    )
    cat_kind = choose([c[0] for c in CATS], "c")
    cat_code = choose([c[1] for c in CATS], "c")
    cat_sc = choose([c[2] for c in CATS], "c")
    cat_name = choose([c[3] for c in CATS], "c")
    # only recent cases are open: 30 % of the last 60 days (~5 % of all), the rest closed or rejected
    state = (f"(CASE WHEN r_state < 0.3 AND created > {NOW - 60 * 86400} THEN {choose(OPEN_STATES, 's')} "
             f"WHEN r_state < 0.07 THEN 'rejected' ELSE 'closed' END)")
    sql = (
        f"{seq}INSERT INTO cases (source, kind, category_code, service_code, category_name, urgency, state, is_open, "
        "unit, grid, description, created_at, filed_at, dispatched_at, handled_at, verified_at, closed_at, deadline, "
        "due_at, updated_at) "
        f"SELECT CASE WHEN r1 < 0.7 THEN 'iot' ELSE 'citizen' END, {cat_kind}, {cat_code}, {cat_sc}, {cat_name}, "
        f"CASE WHEN r2 < 0.8 THEN 'normal' WHEN r2 < 0.95 THEN 'urgent' ELSE 'very_urgent' END, st, "
        "CASE WHEN st IN ('closed', 'rejected') THEN 0 ELSE 1 END, "
        f"{choose(unit_pool, 'u')}, {choose(GRIDS, 'g')}, 'bench', created, created + 600, created + 1200, "
        "created + 1200 + 86400 * r1 * 2, created + 1300 + 86400 * r1 * 2, "
        "CASE WHEN st = 'closed' THEN created + 1400 + 86400 * r1 * 2 END, "
        f"CASE WHEN st IN ('closed', 'rejected', 'parked') THEN {NO_DEADLINE} ELSE created + 86400 * (0.5 + r2) END, "
        "created + 1200 + 86400, created "
        f"FROM (SELECT *, {state} AS st FROM ({inner}) AS a) AS b"
    )
    return [sql]


def create_schema_without_indexes(db: SqliteDb | PostgresDb) -> list[str]:
    """Apply the case migrations' tables, defer their indexes (bulk load first, index after: the usual way)."""
    from sqlstore import CREATE_VERSION_TABLE, Sql, mark_applied, render, resolve

    deferred: list[str] = []
    with db.tx() as tx:
        sql = Sql(db.conn)
        tx.execute(render(CREATE_VERSION_TABLE, db.dialect))
        for migration in MIGRATIONS:
            for step in migration.steps:
                stmt = resolve(step, db.dialect)
                assert isinstance(stmt, str), "the case migrations are SQL only"
                if stmt.lstrip().upper().startswith("CREATE") and " INDEX " in stmt.upper():
                    deferred.append(stmt)
                else:
                    tx.execute(stmt)
            mark_applied(sql, "cases", migration, time.time())
    return deferred


def load(store_url: str, db: SqliteDb | PostgresDb, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    deferred = create_schema_without_indexes(db)
    with db.tx() as tx:
        for sql in generate_sql(db.dialect, n):
            tx.execute(sql)
    t1 = time.perf_counter()
    with db.tx() as tx:
        for stmt in deferred:
            tx.execute(stmt)
    if db.dialect == "sqlite":
        db.conn.execute("ANALYZE")
    else:  # what autovacuum would have done on a live table: visibility map + planner statistics
        db.conn.execute("VACUUM ANALYZE cases")
    t2 = time.perf_counter()
    return {"load_s": round(t1 - t0, 1), "index_s": round(t2 - t1, 1)}


STORM_GOAL_PER_S = 10_000 / 60.0


def storm_stream(n: int, run: str) -> list[tuple[AlarmTransition, DeviceInfo]]:
    """``n`` alarm transitions of one storm minute, time-ordered, with the device each comes from.

    Per 10 alarms: 6 from lamps (2 000 lamps on 40 circuits: ``lampFailure`` then ``supplyVoltage``;
    the circuit key correlates them), 2 overloaded vehicles on 40 scales (each vehicle its own
    enforcement case under the category table's ``correlate: vehicle``), 2 from 400 water gauges
    (raised minor, escalated to major, then critical: the case's urgency rises and it is dispatched).
    """
    lamps = [DeviceInfo(f"lamp-{run}-{i}", "lamp", "lamp", grid=GRIDS[i % len(GRIDS)], circuit=f"c-{run}-{i % 40}")
             for i in range(2000)]
    scales = [DeviceInfo(f"wim-{run}-{i}", "wim", "wim", grid=GRIDS[i % len(GRIDS)]) for i in range(40)]
    gauges = [DeviceInfo(f"wl-{run}-{i}", "radar", "water_gauge", grid=GRIDS[i % len(GRIDS)]) for i in range(400)]
    out: list[tuple[AlarmTransition, DeviceInfo]] = []
    lamp_i = wim_i = gauge_i = 0
    for i in range(n):
        t = NOW + 60.0 * i / n
        slot = i % 10
        if slot < 6:
            d = lamps[lamp_i % len(lamps)]
            rule = "lampFailure" if lamp_i < len(lamps) else "supplyVoltage"
            tr = AlarmTransition(f"{d.id}:{rule}", d.id, rule, TransitionKind.RAISED, Severity.MAJOR, t, 0.0)
            lamp_i += 1
        elif slot < 8:
            d = scales[wim_i % len(scales)]
            tr = AlarmTransition(f"{d.id}:v{wim_i}", d.id, "wim-overload", TransitionKind.RAISED, Severity.MAJOR, t,
                                 60_000.0, {"record": {"event_id": f"v{wim_i}", "gross_kg": 60_000}})
            wim_i += 1
        else:
            d = gauges[gauge_i % len(gauges)]
            step = gauge_i // len(gauges)
            kind = TransitionKind.RAISED if step == 0 else TransitionKind.ESCALATED
            sev = [Severity.MINOR, Severity.MAJOR, Severity.CRITICAL][min(step, 2)]
            tr = AlarmTransition(f"{d.id}:depth:{step // 3}", d.id, "road-water-depth", kind, sev, t,
                                 0.15 + 0.1 * step)
            gauge_i += 1
        out.append((tr, d))
    return out


def storm(store: CaseStore, n: int, batch: int) -> dict[str, Any]:
    """The storm through the store one alarm per transaction and as a backlog; bare inserts as the baseline.

    The backlog's batches alternate between PostgreSQL's pipelined writes and plain ones, so the two
    see the same load (on SQLite both are the same code: their ratio shows the run's noise).
    """
    figures: dict[str, Any] = {"storm_alarms": n, "storm_batch": batch}
    effects: dict[str, int] = {}
    pipelined_tx = store.db.tx

    def unpipelined_tx(pipeline: bool = False) -> Any:
        return pipelined_tx(False)

    for mode in ("single", "batched"):
        stream = storm_stream(n, f"{mode[0]}{uuid.uuid4().hex[:6]}")
        if mode == "single":
            lat: list[float] = []
            t0 = time.perf_counter()
            for tr, d in stream:
                t = time.perf_counter()
                out = store.apply_alarm(tr, d, tr.t)
                lat.append((time.perf_counter() - t) * 1000)
                effects[out.effect] = effects.get(out.effect, 0) + 1
            runs = {"single": (n, time.perf_counter() - t0, lat)}
        else:
            spent = {True: 0.0, False: 0.0}
            done = {True: 0, False: 0}
            lats: dict[bool, list[float]] = {True: [], False: []}
            for j, k in enumerate(range(0, n, batch)):
                piped = j % 2 == 0
                store.db.tx = pipelined_tx if piped else unpipelined_tx  # type: ignore[method-assign]
                part = stream[k : k + batch]
                t = time.perf_counter()
                store.apply_alarms(part, part[-1][0].t)
                dt = time.perf_counter() - t
                spent[piped] += dt
                done[piped] += len(part)
                lats[piped] += [dt * 1000] * len(part)  # each alarm waits for its batch's commit
            store.db.tx = pipelined_tx  # type: ignore[method-assign]
            runs = {"batched": (done[True], spent[True], lats[True]),
                    "batched_unpipelined": (done[False], spent[False], lats[False])}
        for name, (count, wall, lat) in runs.items():
            figures[f"storm_{name}_per_s"] = round(count / wall, 0)
            figures[f"storm_{name}_p50_ms"] = round(statistics.median(lat), 2)
            figures[f"storm_{name}_p95_ms"] = round(p95(lat), 2)
    figures["storm_effects"] = effects
    figures["storm_pipelined_vs_unpipelined"] = round(
        figures["storm_batched_per_s"] / figures["storm_batched_unpipelined_per_s"], 2)
    # baseline: a bare one-row INSERT per transaction, as many as the storm has alarms (at most 2 000)
    m = min(n, 2000)
    with store.db.tx() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS bench_storm (id INTEGER PRIMARY KEY, a TEXT, b REAL)")
        tx.execute("DELETE FROM bench_storm")
    t0 = time.perf_counter()
    for i in range(m):
        with store.db.tx() as tx:
            tx.execute("INSERT INTO bench_storm (id, a, b) VALUES (?, ?, ?)", (i, "x", float(i)))
    base = m / (time.perf_counter() - t0)
    figures["storm_bare_insert_per_s"] = round(base, 0)
    figures["storm_single_vs_bare_insert"] = round(figures["storm_single_per_s"] / base, 2)
    figures["storm_batched_vs_bare_insert"] = round(figures["storm_batched_per_s"] / base, 2)
    figures["storm_goal_per_s"] = round(STORM_GOAL_PER_S, 1)
    return figures


def measure(store: CaseStore, n_loaded: int, storm_alarms: int = 10_000, storm_batch: int = BACKLOG_BATCH
            ) -> dict[str, Any]:
    rng = random.Random(1)
    with store.db.read() as tx:
        total = int(tx.execute("SELECT COUNT(*) FROM cases")[0][0])
        max_id = int(tx.execute("SELECT MAX(id) FROM cases")[0][0])
        open_n = int(tx.execute("SELECT COUNT(*) FROM cases WHERE is_open = 1")[0][0])
    assert total >= n_loaded
    # warm-up
    for _ in range(5):
        store.worklist(unit=UNITS[0], state="dispatched", now=NOW)
    wl: list[float] = []
    sizes: list[int] = []
    for i in range(200):
        # the busiest street office, any unit, or the command centre's all-units view
        unit = [UNITS[0], rng.choice(UNITS), None][i % 5 % 3]
        state: str | list[str] | None = rng.choice([
            "dispatched", "in_handling", "reported", "handled", ["dispatched", "in_handling"], None])
        overdue = True if i % 5 == 4 else None
        t = time.perf_counter()
        page = store.worklist(unit=unit, state=state, overdue=overdue, sort="deadline", limit=50, offset=0, now=NOW)
        wl.append((time.perf_counter() - t) * 1000)
        sizes.append(page.total)
    pk: list[float] = []
    for _ in range(200):
        t = time.perf_counter()
        store.get(rng.randint(1, max_id), now=NOW)
        pk.append((time.perf_counter() - t) * 1000)
    st: list[float] = []
    for i in range(5):
        t = time.perf_counter()
        s = store.stats.report(NOW - 30 * 86400 - i * 3600, NOW, now=NOW)
        st.append((time.perf_counter() - t) * 1000)
    period_cases = s.total.total
    # creation: 1 000 critical road-water alarms, each a new case auto-filed and dispatched
    gauge = DeviceInfo("wl-bench", "radar", "water_gauge", grid=GRIDS[0])
    n_create = 1000
    run = uuid.uuid4().hex[:8]
    t = time.perf_counter()
    for i in range(n_create):
        tr = AlarmTransition(f"bench-{run}-{i}", f"wl-b{i}", "road-water-depth", TransitionKind.RAISED,
                             Severity.CRITICAL, NOW + i, 0.5)
        out = store.apply_alarm(tr, gauge, NOW + i)
        assert out.effect == "created"
    create_rate = n_create / (time.perf_counter() - t)
    # baseline: a bare one-row INSERT per transaction into a scratch table
    with store.db.tx() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS bench_scratch (id INTEGER PRIMARY KEY, a TEXT, b REAL)")
    t = time.perf_counter()
    for i in range(n_create):
        with store.db.tx() as tx:
            tx.execute("INSERT INTO bench_scratch (id, a, b) VALUES (?, ?, ?)", (i, "x", float(i)))
    base_rate = n_create / (time.perf_counter() - t)
    storm_figures = storm(store, storm_alarms, storm_batch) if storm_alarms > 0 else {}
    return {
        "cases": total,
        "open_cases": open_n,
        "worklist_p95_ms": round(p95(wl), 2),
        "worklist_median_ms": round(statistics.median(wl), 2),
        "worklist_median_total": int(statistics.median(sizes)),
        "pk_get_p95_ms": round(p95(pk), 3),
        "worklist_vs_pk_get": round(p95(wl) / p95(pk), 1),
        "statistics_p95_ms": round(max(st), 1),
        "statistics_period_cases": period_cases,
        "create_per_s": round(create_rate, 0),
        "bare_insert_per_s": round(base_rate, 0),
        "create_vs_bare_insert": round(create_rate / base_rate, 2),
        **storm_figures,
    }


def bench_sqlite(n: int, storm_alarms: int, storm_batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/cases.db"
        db = SqliteDb(f"{tmp}/cases.db")
        timing = load(url, db, n)
        db.close()
        store = open_case_store(url)
        try:
            out = measure(store, n, storm_alarms, storm_batch)
        finally:
            store.close()
        return {**timing, **out}


def bench_postgres(n: int, admin: str, storm_alarms: int, storm_batch: int) -> dict[str, Any]:
    import psycopg

    name = f"cw_bench_cases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        db = PostgresDb(dsn)
        timing = load(dsn, db, n)
        db.close()
        store = open_case_store(dsn)
        try:
            out = measure(store, n, storm_alarms, storm_batch)
        finally:
            store.close()
        return {**timing, **out}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--storm-alarms", type=int, default=10_000, help="alarms in the storm minute (0: no storm)")
    ap.add_argument("--storm-batch", type=int, default=BACKLOG_BATCH,
                    help="transitions per transaction for a backlog (default: the bridge's BACKLOG_BATCH)")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    result: dict[str, Any] = {"bench": "cases", "goal_worklist_p95_ms": 50}
    started = time.perf_counter()
    for backend in args.backends.split(","):
        t = time.perf_counter()
        if backend == "sqlite":
            r = bench_sqlite(args.cases, args.storm_alarms, args.storm_batch)
        elif backend == "postgresql":
            try:
                r = bench_postgres(args.cases, args.pg_admin, args.storm_alarms, args.storm_batch)
            except Exception as exc:  # a missing server is reported, not hidden
                r = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            raise SystemExit(f"unknown backend {backend!r}")
        r["wall_s"] = round(time.perf_counter() - t, 1)
        result[backend] = r
        if "worklist_p95_ms" in r:
            print(f"{backend}: {r['cases']} cases; worklist p95 {r['worklist_p95_ms']} ms "
                  f"({r['worklist_vs_pk_get']}x a primary-key get); statistics {r['statistics_p95_ms']} ms over "
                  f"{r['statistics_period_cases']} cases; create {r['create_per_s']}/s "
                  f"({r['create_vs_bare_insert']}x a bare insert); load {r['load_s']} s + index {r['index_s']} s",
                  flush=True)
            if "storm_single_per_s" in r:
                print(f"{backend}: storm of {r['storm_alarms']} alarms: one per transaction "
                      f"{r['storm_single_per_s']}/s "
                      f"(p50 {r['storm_single_p50_ms']} ms, p95 {r['storm_single_p95_ms']} ms, "
                      f"{r['storm_single_vs_bare_insert']}x a bare insert); backlog in transactions of "
                      f"{r['storm_batch']} {r['storm_batched_per_s']}/s (p50 {r['storm_batched_p50_ms']} ms, "
                      f"p95 {r['storm_batched_p95_ms']} ms; {r['storm_pipelined_vs_unpipelined']}x unpipelined); "
                      f"bare insert {r['storm_bare_insert_per_s']}/s; "
                      f"goal {r['storm_goal_per_s']}/s; effects {r['storm_effects']}", flush=True)
        else:
            print(f"{backend}: {r}", flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    ok = [result[b] for b in args.backends.split(",") if "error" not in result[b]]
    result["goal_met"] = all(r.get("worklist_p95_ms", 1e9) < 50 for r in ok)
    if args.storm_alarms > 0:
        result["storm_goal_met"] = all(r.get("storm_single_per_s", 0) >= STORM_GOAL_PER_S for r in ok)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
