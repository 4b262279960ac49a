"""Console HTTP figures: requests/s and p95 latency of the worklist and overview endpoints
with 1 000 000 cases and 10 000 devices, under concurrent clients on loopback.

* The case store (SQLite, the case bridge's own schema) is bulk-loaded with N cases made
  inside the database (a year of history, ~3 % open, 8 units), indexes built after the load
  and ANALYZEd; the time-series store gets 10 000 devices (a birth message) with 6 h of
  history. Loaded data is kept under ``data/bench/console-<N>-<D>/`` and reused by later runs.
* The console runs in its own process (uvicorn, one worker) on 127.0.0.1; the client is one
  asyncio process with ``--clients`` concurrent keep-alive connections (httpx), each looping
  for ``--seconds`` per endpoint.
* Endpoints: ``GET /api/v1/cases?open_only=true&limit=50`` as a supervisor (all units),
  the same as a case handler (one unit: the object-level scope), ``GET /api/v1/overview``
  as a duty officer (counts over all devices, the 40 deepest gauges with a 6 h trend each,
  active alarms), then worklist and overview again with a single client (latency without
  queueing). Baseline in the same run: ``GET /healthz`` (no store, no auth) — the cost of
  the HTTP stack itself; ratios are endpoint rps / baseline rps.

    .venv/bin/python bench/console.py [--cases 1000000] [--devices 10000] [--clients 16] [--seconds 6]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNITS = ["lingyin-street", "beishan-street", "hubin-street", "drainage", "water-supply", "street-lighting", "gas",
         "city-command"]
CATS = [("event", "0111", "S0111", "道路积水"), ("component", "0101", "B0101", "上水井盖"),
        ("component", "0118", "B0118", "路灯"), ("event", "9901", "S9901", "车辆超限超载")]
OPEN = ["reported", "filed", "dispatched", "in_handling", "handled"]


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 20 else max(xs)


def _case(values: list[str], idx: str) -> str:
    return "(CASE " + idx + " " + " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values)) + " END)"


def load_cases(path: Path, n: int, now: float) -> float:
    """Bulk-load n cases into the case bridge's schema: drop its indexes, INSERT ... SELECT, rebuild."""
    from case_bridge import open_case_store
    from case_bridge.lifecycle import NO_DEADLINE

    t0 = time.perf_counter()
    open_case_store(f"sqlite:///{path}").close()  # the bridge's own migrations make the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    idx = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='cases' AND sql IS NOT NULL"
                     ).fetchall()
    for name, _sql in idx:
        db.execute(f"DROP INDEX {name}")
    rnd = "(abs(random()) % 1000000) / 1000000.0"
    year = 365 * 86400
    inner = (f"SELECT i, {now} - {year} * {rnd} AS created, {rnd} AS r, abs(random()) % {len(UNITS)} AS u, "
             f"abs(random()) % {len(CATS)} AS c, abs(random()) % {len(OPEN)} AS s FROM seq")
    state = f"(CASE WHEN r < 0.3 AND created > {now - 36 * 86400} THEN {_case(OPEN, 's')} ELSE 'closed' END)"
    sql = (
        f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) "
        "INSERT INTO cases (source, kind, category_code, service_code, category_name, urgency, state, is_open, unit, "
        "device, rule, description, created_at, closed_at, deadline, due_at, updated_at) "
        f"SELECT 'iot', {_case([c[0] for c in CATS], 'c')}, {_case([c[1] for c in CATS], 'c')}, "
        f"{_case([c[2] for c in CATS], 'c')}, {_case([c[3] for c in CATS], 'c')}, 'normal', st, "
        f"CASE WHEN st = 'closed' THEN 0 ELSE 1 END, {_case(UNITS, 'u')}, 'wl-' || (i % 2500), 'road-water-depth', "
        "'bench', created, CASE WHEN st = 'closed' THEN created + 7200 * r END, "
        f"CASE WHEN st = 'closed' THEN {NO_DEADLINE} ELSE created + 86400 * (0.2 + 2 * r) END, "
        "created + 86400, created FROM (SELECT *, " + state + " AS st FROM (" + inner + ") AS a) AS b"
    )
    db.execute("BEGIN")
    db.execute(sql)
    db.execute("COMMIT")
    for _name, ddl in idx:
        db.execute(ddl)
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - t0


def load_devices(data: Path, n: int, now: float) -> float:
    from cloud_ingest.store import open_store
    from rules.store import open_alarm_store
    from tests.support.console_demo import make_devices, seed_timeseries

    t0 = time.perf_counter()
    ts = open_store(f"sqlite:///{data}/timeseries.db")
    devices = make_devices(n)
    seed_timeseries(ts, devices, now, hours=6, step_s=1800)
    ts.close()
    from contracts.alarms import AlarmTransition, Severity, TransitionKind

    al = open_alarm_store(f"sqlite:///{data}/rules.db")
    gauges = [d for d in devices if d.kind == "water_gauge"][:25]
    al.commit(None, [AlarmTransition(f"al-{g.id}", g.id, "road-water-depth", TransitionKind.RAISED,
                                     Severity.CRITICAL if i % 3 == 0 else Severity.MAJOR, now - 60 * i, 0.35, {})
                     for i, g in enumerate(gauges)])
    al.close()
    return time.perf_counter() - t0


def serve(data: Path, port: int) -> None:
    """Server process: the console over the loaded stores (no MQTT; acks are not measured here)."""
    import uvicorn

    from case_bridge import open_case_store
    from cloud_ingest.store import open_store
    from console.adapters import CaseAdapter, DeviceAdapter, RulesAlarmAdapter
    from console.app import create_app
    from console.audit import AuditLog
    from console.context import Stores
    from rules.store import open_alarm_store
    from tests.support.console_demo import RecordingAcks, demo_settings

    settings = demo_settings(max_page_size=200, login_rate={"per_minute": 1e6, "burst": 1000}, overview_cache_s=1.0)
    stores = Stores(devices=DeviceAdapter(open_store(f"sqlite:///{data}/timeseries.db")),
                    alarms=RulesAlarmAdapter(open_alarm_store(f"sqlite:///{data}/rules.db")),
                    cases=CaseAdapter(open_case_store(f"sqlite:///{data}/cases.db", migrate_schema=False)),
                    audit=AuditLog(f"sqlite:///{data}/console.db"), acks=RecordingAcks())
    app = create_app(settings, stores)
    print("READY", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=60)


async def hammer(base: str, path: str, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        await c.get(path)  # warm-up (caches, connection)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await c.get(path)
                except httpx.TransportError as exc:  # counted, and named once, never silently retried
                    errors += 1
                    if errors == 1:
                        print(f"  {path}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(worker())
        elapsed = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 1), "p95_ms": round(p95(lat) * 1000, 1)}


async def client(base: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    from tests.support.console_demo import PASSWORD

    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        tokens = {}
        for user in ("sup", "handler-a", "duty"):
            r = await c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
            tokens[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    out = {}
    for name, path, user in (("baseline_healthz", "/healthz", None),
                             ("worklist_all_units", "/api/v1/cases?open_only=true&limit=50", "sup"),
                             ("worklist_one_unit", "/api/v1/cases?open_only=true&limit=50", "handler-a"),
                             ("overview", "/api/v1/overview", "duty")):
        res = await hammer(base, path, tokens[user] if user else {}, clients, seconds)
        out[name] = res
        print(f"{name:20s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']:7.1f} ms  p95 {res['p95_ms']:7.1f} ms"
              f"  ({res['requests']} requests, {res['errors']} errors)", flush=True)
    # the same endpoints with one client: latency without queueing behind the other clients
    for name, path, user in (("worklist_1client", "/api/v1/cases?open_only=true&limit=50", "sup"),
                             ("overview_1client", "/api/v1/overview", "duty")):
        res = await hammer(base, path, tokens[user], 1, min(seconds, 3.0))
        out[name] = res
        print(f"{name:20s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']:7.1f} ms  p95 {res['p95_ms']:7.1f} ms"
              f"  ({res['requests']} requests, {res['errors']} errors)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve), args.port)
        return 0
    from tests.support.services import free_port, wait_port

    data = ROOT / "data" / "bench" / f"console-{args.cases}-{args.devices}"
    marker = data / "loaded"
    now = time.time()
    load_s = None
    if not marker.exists():
        data.mkdir(parents=True, exist_ok=True)
        for f in data.glob("*.db*"):
            f.unlink()
        t_cases = load_cases(data / "cases.db", args.cases, now)
        t_dev = load_devices(data, args.devices, now)
        load_s = round(t_cases + t_dev, 1)
        marker.write_text(json.dumps({"cases_load_s": round(t_cases, 1), "devices_load_s": round(t_dev, 1)}))
        print(f"loaded {args.cases} cases in {t_cases:.1f} s, {args.devices} devices in {t_dev:.1f} s", flush=True)
    else:
        print(f"reusing {data}", flush=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(data), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        wait_port("127.0.0.1", port, 30)
        res = asyncio.run(client(f"http://127.0.0.1:{port}", args.clients, args.seconds))
    finally:
        proc.terminate()
        proc.wait(10)
    base = res["baseline_healthz"]["rps"] or 1.0
    summary = {
        "bench": "console", "cases": args.cases, "devices": args.devices, "clients": args.clients,
        "seconds_per_endpoint": args.seconds, "load_s": load_s,
        "baseline_healthz_rps": res["baseline_healthz"]["rps"],
        "baseline_healthz_p95_ms": res["baseline_healthz"]["p95_ms"],
        "worklist_rps": res["worklist_all_units"]["rps"], "worklist_p95_ms": res["worklist_all_units"]["p95_ms"],
        "worklist_unit_rps": res["worklist_one_unit"]["rps"],
        "worklist_unit_p95_ms": res["worklist_one_unit"]["p95_ms"],
        "overview_rps": res["overview"]["rps"], "overview_p95_ms": res["overview"]["p95_ms"],
        "worklist_p95_ms_1client": res["worklist_1client"]["p95_ms"],
        "overview_p95_ms_1client": res["overview_1client"]["p95_ms"],
        "worklist_vs_baseline": round(res["worklist_all_units"]["rps"] / base, 3),
        "overview_vs_baseline": round(res["overview"]["rps"] / base, 3),
        "errors": sum(r["errors"] for r in res.values()),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
