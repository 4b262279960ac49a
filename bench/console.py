"""Console HTTP figures: requests/s and p95 latency of the worklist, overview, map and board
endpoints with 1 000 000 cases and 10 000 / 100 000 devices, under concurrent clients on
loopback; and the cockpit's browser heap over 8 h of live feed, time-compressed.

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
* For each device count (``--devices 10000,100000``): overview, map markers
  (``/api/v1/map/devices``: every device as a compact row) and the alarm board, with 16
  clients and with 1, against ``/healthz`` with 16 and with 1 in the same server.
* Heap (``--heap-minutes``): the cockpit (驾驶舱) in Debian Chromium fed 8 h of live feed
  compressed into that many wall minutes (every device reports each simulated minute,
  coalesced by the hub into one event a second as in production; storm alarms raised and
  cleared in the real alarm store at the demo's rate, each refreshing board, map and KPIs).
  JS heap after a forced GC at start and at the end (CDP ``Performance.getMetrics``).

    .venv/bin/python bench/console.py [--cases 1000000] [--devices 10000,100000] [--clients 16] [--seconds 6]
                                      [--heap-minutes 4]

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


def serve(cases_db: Path, devices: Path, port: int) -> None:
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
    stores = Stores(devices=DeviceAdapter(open_store(f"sqlite:///{devices}/timeseries.db")),
                    alarms=RulesAlarmAdapter(open_alarm_store(f"sqlite:///{devices}/rules.db")),
                    cases=CaseAdapter(open_case_store(f"sqlite:///{cases_db}", migrate_schema=False)),
                    audit=AuditLog(f"sqlite:///{devices}/console.db"), acks=RecordingAcks())
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


def _show(name: str, res: dict[str, Any]) -> None:
    print(f"{name:24s} {res['rps']:8.1f} req/s  p50 {res['p50_ms']:7.1f} ms  p95 {res['p95_ms']:7.1f} ms"
          f"  ({res['requests']} requests, {res['errors']} errors)", flush=True)


async def client(base: str, clients: int, seconds: float, worklist: bool) -> dict[str, Any]:
    """Each endpoint with ``clients`` connections, then with one; /healthz first as the baseline."""
    import httpx

    from tests.support.console_demo import PASSWORD

    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        tokens = {}
        for who in ("sup", "handler-a", "duty"):
            r = await c.post("/api/v1/auth/login", json={"username": who, "password": PASSWORD})
            tokens[who] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    plan: list[tuple[str, str, str | None]] = [("baseline_healthz", "/healthz", None)]
    if worklist:
        plan += [("worklist", "/api/v1/cases?open_only=true&limit=50", "sup"),
                 ("worklist_one_unit", "/api/v1/cases?open_only=true&limit=50", "handler-a")]
    plan += [("overview", "/api/v1/overview", "duty"), ("map_devices", "/api/v1/map/devices", "duty"),
             ("board", "/api/v1/board", "duty")]
    out = {}
    for name, path, user in plan:
        out[name] = await hammer(base, path, tokens[user] if user else {}, clients, seconds)
        _show(name, out[name])
    # the same endpoints with one client: latency without queueing behind the other clients
    for name, path, user in plan:
        if name != "worklist_one_unit":
            out[f"{name}_1client"] = await hammer(base, path, tokens[user] if user else {}, 1, min(seconds, 3.0))
            _show(f"{name}_1client", out[f"{name}_1client"])
    return out


def measure(cases_db: Path, devices: Path, clients: int, seconds: float, worklist: bool) -> dict[str, Any]:
    from tests.support.services import free_port, wait_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(devices), "--cases-db", str(cases_db),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        wait_port("127.0.0.1", port, 60)
        return asyncio.run(client(f"http://127.0.0.1:{port}", clients, seconds, worklist))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # busy in a request: our own child, by its pid
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------ browser heap over a compressed night

FEED_METRIC = {"water_gauge": ("depth", "m"), "manhole": ("tilt", "deg"), "lamp": ("power", "W"),
               "wim": ("record_count", "")}


async def heap_run(minutes: float, sim_hours: float = 8.0) -> dict[str, Any]:
    """The cockpit in Chromium under ``sim_hours`` of live feed played in ``minutes`` wall minutes."""
    import random
    import tempfile

    import uvicorn
    from playwright.async_api import async_playwright

    from console.live import Hub, LiveEvent
    from contracts.alarms import AlarmTransition, Severity, TransitionKind
    from tests.support.console_demo import PASSWORD, build_demo
    from tests.support.services import free_port

    speed = sim_hours * 3600 / (minutes * 60)
    hub = Hub(flush_s=1.0)
    env = build_demo(tempfile.mkdtemp(prefix="cw-heap-"), now=time.time(), n_devices=84, hub=hub)  # demo's size
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "console did not start"
        await asyncio.sleep(0.05)
    rng = random.Random(7)
    gauges = [d for d in env.demo.devices if d.kind == "water_gauge"]
    active: dict[str, AlarmTransition] = {}
    stats = {"feed_ticks": 0, "readings": 0, "alarm_events": 0}

    def alarm(tr: AlarmTransition) -> None:
        env.alarm_store.commit(None, [tr])
        hub.publish(LiveEvent("alarm", {"alarm_id": tr.alarm_id, "device": tr.device, "rule": tr.rule,
                                        "kind": tr.kind.value, "severity": tr.severity.value, "t": tr.t,
                                        "value": tr.value, "actor": None}))
        stats["alarm_events"] += 1

    async def feed(stop: float) -> None:
        sim_t = time.time()
        # the demo storm: ~90 alarm transitions per 2 h cycle -> one every ~80 simulated seconds
        alarm_every_s, next_alarm = 80.0, 0.0
        while time.monotonic() < stop:
            sim_t += speed
            for d in env.demo.devices:  # every device reports each simulated minute: all of them each tick
                metric, unit = FEED_METRIC[d.kind]
                hub.reading(d.id, metric, ts=sim_t, value=round(rng.random(), 3), unit=unit, quality=0)
                stats["readings"] += 1
            next_alarm -= speed
            while next_alarm <= 0:
                next_alarm += alarm_every_s
                g = rng.choice(gauges)
                old = active.pop(g.id, None)
                if old is not None:
                    alarm(AlarmTransition(old.alarm_id, g.id, old.rule, TransitionKind.CLEARED, old.severity, sim_t,
                                          0.05, {}))
                else:
                    sev = rng.choice([Severity.MINOR, Severity.MAJOR, Severity.CRITICAL])
                    active[g.id] = AlarmTransition(f"al-heap-{g.id}-{int(sim_t)}", g.id, "road-water-depth",
                                                   TransitionKind.RAISED, sev, sim_t, 0.3, {})
                    alarm(active[g.id])
            stats["feed_ticks"] += 1
            await asyncio.sleep(1.0)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = await (await browser.new_context(viewport={"width": 1920, "height": 1080})).new_page()
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Performance.enable")

        async def heap_mb() -> tuple[float, int]:
            await cdp.send("HeapProfiler.collectGarbage")
            m = {x["name"]: x["value"] for x in (await cdp.send("Performance.getMetrics"))["metrics"]}
            return round(m["JSHeapUsedSize"] / 1e6, 2), int(m["Nodes"])

        base = f"http://127.0.0.1:{port}"
        await page.goto(f"{base}/login")
        await page.fill("#username", "sup")
        await page.fill("#password", PASSWORD)
        await page.click("#login-btn")
        await page.wait_for_url(lambda url: "/login" not in url)
        await page.goto(f"{base}/cockpit")
        await page.wait_for_selector("#cp-gauges canvas", timeout=30_000)
        await page.wait_for_selector("#live-state.on", timeout=30_000)
        stop = time.monotonic() + minutes * 60
        feeding = asyncio.create_task(feed(stop))
        await asyncio.sleep(min(20.0, minutes * 6))  # warm: first refreshes, caches, JIT
        start_mb, start_nodes = await heap_mb()
        samples = [start_mb]
        while time.monotonic() < stop:
            await asyncio.sleep(min(30.0, max(1.0, stop - time.monotonic())))
            samples.append((await heap_mb())[0])
        await feeding
        end_mb, end_nodes = await heap_mb()
        await browser.close()
    server.should_exit = True
    await serving
    env.close()
    print(f"heap: {start_mb} MB -> {end_mb} MB after {sim_hours:g} h of feed in {minutes:g} min (x{speed:.0f}); "
          f"DOM nodes {start_nodes} -> {end_nodes}; {stats}", flush=True)
    return {"sim_hours": sim_hours, "wall_minutes": minutes, "speed": round(speed), "heap_start_mb": start_mb,
            "heap_end_mb": end_mb, "heap_max_mb": max(samples), "heap_end_vs_start": round(end_mb / start_mb, 3),
            "dom_nodes_start": start_nodes, "dom_nodes_end": end_nodes, **stats}


def _load(kind: str, directory: Path, loader: Any, load_s: dict[str, float]) -> None:
    """Load once into ``directory`` (kept under data/bench and reused by later runs)."""
    if (directory / "loaded").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db*"):
        f.unlink()
    load_s[kind] = round(loader(), 1)
    (directory / "loaded").write_text(json.dumps({kind: load_s[kind]}))
    print(f"loaded {kind} in {load_s[kind]} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--devices", default="10000,100000", help="device counts, comma-separated")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--heap-minutes", type=float, default=4.0, help="0: skip the browser heap run")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--cases-db", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.cases_db), Path(args.serve), args.port)
        return 0
    now = time.time()
    load_s: dict[str, float] = {}
    cases_dir = ROOT / "data" / "bench" / f"console-cases-{args.cases}"
    _load(f"cases_{args.cases}", cases_dir, lambda: load_cases(cases_dir / "cases.db", args.cases, now), load_s)
    summary: dict[str, Any] = {"bench": "console", "cases": args.cases, "clients": args.clients,
                               "seconds_per_endpoint": args.seconds}
    errors = 0
    for i, n in enumerate(int(x) for x in args.devices.split(",")):
        dev_dir = ROOT / "data" / "bench" / f"console-devices-{n}"
        _load(f"devices_{n}", dev_dir, lambda d=dev_dir, k=n: load_devices(d, k, now), load_s)
        print(f"--- {n} devices", flush=True)
        res = measure(cases_dir / "cases.db", dev_dir, args.clients, args.seconds, worklist=i == 0)
        errors += sum(r["errors"] for r in res.values())
        base, base1 = res["baseline_healthz"]["rps"] or 1.0, res["baseline_healthz_1client"]["rps"] or 1.0
        if i == 0:
            summary.update({
                "worklist_rps": res["worklist"]["rps"], "worklist_p95_ms": res["worklist"]["p95_ms"],
                "worklist_unit_rps": res["worklist_one_unit"]["rps"],
                "worklist_unit_p95_ms": res["worklist_one_unit"]["p95_ms"],
                "worklist_p95_ms_1client": res["worklist_1client"]["p95_ms"],
                "worklist_vs_baseline": round(res["worklist"]["rps"] / base, 3)})
        per: dict[str, Any] = {"healthz_p95_ms": res["baseline_healthz"]["p95_ms"],
                               "healthz_p95_ms_1client": res["baseline_healthz_1client"]["p95_ms"]}
        for ep in ("overview", "map_devices", "board"):
            per.update({f"{ep}_p95_ms": res[ep]["p95_ms"], f"{ep}_p95_ms_1client": res[f"{ep}_1client"]["p95_ms"],
                        f"{ep}_rps": res[ep]["rps"], f"{ep}_vs_baseline": round(res[ep]["rps"] / base, 3),
                        f"{ep}_1client_vs_baseline": round(res[f"{ep}_1client"]["rps"] / base1, 3)})
        summary[f"devices_{n}"] = per
    summary["errors"] = errors
    summary["load_s"] = load_s or None
    if args.heap_minutes > 0:
        summary["browser_heap"] = asyncio.run(heap_run(args.heap_minutes))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
