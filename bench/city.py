"""Whole-chain load: a simulated city through every stage, each its own process, on this one box.

    .venv/bin/python bench/city.py [--devices 1000000] [--rate 50000] [--duration-s 600] [--warmup-s 60]

Stages (separate OS processes): Mosquitto, PostgreSQL (the system server; three fresh databases:
ingest, rules, cases; the console's audit log is its SQLite file), ``citywatch ingest`` (2 writers), ``citywatch
rules`` (configs/rules/default.yaml, with ``road-water-depth``'s hold times set to 0 so the latency
is pipeline time, not a rule's hold), ``citywatch cases``, ``citywatch console`` (live feed on, its
/healthz polled once a second), and ``--loadgen-procs`` ``citywatch loadgen`` processes that
together simulate ``--devices`` devices (1 000 per gateway; edge discipline: in-memory outbox, boot/seq,
resend until acked). A storm floods ``--storm-fraction`` of the water gauges from 5 s into the
steady state to its end.

Measured over the steady-state window (after ``--warmup-s``):

* readings/s committed: the ingester's ``citywatch_ingest_readings_total{result="inserted"}`` at
  window start and end (also: rows in the ingest database, and rows whose sample time lies in the
  window; these queries are bounded to 60 s and print None when the table is locked);
* alarms raised and cases opened for the storm devices (rules and cases databases);
* sample -> case: the case's ``created_at`` minus its linking alarm's ``t`` (the breaching
  sample's time, stamped at the "gateway"); sample -> alarm at the case bridge likewise from
  ``alarm_events.received_at``;
* CPU (share of one core) and RSS per process, RSS sampled every 5 s (flat = last vs first);
  PostgreSQL is the sum of the backends serving our databases;
* the ingest-only ceiling, measured first in the same run with bench/ingest.py's method
  (C publishers flood Mosquitto, ``citywatch ingest`` commits and acks; no rules, no cases).

Goal: >= 50 000 readings/s sustained with p99 sample -> case < 1 s. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from e2e import summary  # noqa: E402  (bench/e2e.py: the same percentiles)

from tests.support.services import free_port, mosquitto, pg_database, wait_port  # noqa: E402

GOAL_RATE = 50_000.0
GOAL_P99_S = 1.0
PER_GATEWAY = 1000


def bench_rules_doc() -> dict[str, Any]:
    """The shipped rules, with road-water-depth raising on the first breaching sample (also bench/rules_city.py)."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "rules" / "default.yaml").read_text(encoding="utf-8"))
    for rule in doc["rules"]:
        if rule["name"] == "road-water-depth":
            for level in rule["levels"]:
                level["raise_after_s"] = 0
            for ov in rule.get("overrides", {}).values():
                for level in ov.get("levels", []):
                    level["raise_after_s"] = 0
    return doc


def bench_rules(tmp: Path) -> Path:
    path = tmp / "rule-set.yaml"
    path.write_text(yaml.safe_dump(bench_rules_doc(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def ingest_ceiling(readings: int) -> dict[str, Any]:
    """bench/ingest.py's e2e method: C publishers -> Mosquitto -> citywatch ingest, committed + acked."""
    import ingest as ingest_bench  # bench/ingest.py

    data = ingest_bench.build(readings, time.time() - 3600)
    with tempfile.TemporaryDirectory(prefix="cw-city-ceil-") as d, pg_database() as dsn:
        os.chmod(d, 0o755)
        rate, stats = ingest_bench.e2e(dsn, data, 5000, Path(d), 2)
    return {"readings_per_s": round(rate), "readings": readings, **{k: stats[k] for k in
            ("ingester_cpu_us_per_reading", "broker_cpu_us_per_reading") if k in stats}}


class Sampler:
    """CPU and RSS of named processes (psutil); PostgreSQL = the backends serving our databases."""

    def __init__(self, procs: dict[str, psutil.Process], dsn: str, dbs: list[str]) -> None:
        self.procs = procs
        self.dsn = dsn
        self.dbs = dbs
        self.rss: dict[str, list[int]] = {n: [] for n in [*procs, "postgres"]}
        self.cpu0: dict[str, float] = {}
        self.t0 = 0.0

    def _pg(self) -> list[psutil.Process]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)",
                                               (self.dbs,)).fetchall()]
        out = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out

    def _cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[name] = t.user + t.system
        pg = 0.0
        for p in self._pg():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                pg += t.user + t.system
        out["postgres"] = pg  # backends are per connection and long-lived (the services pool them)
        return out

    def start(self) -> None:
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.sample()

    def sample(self) -> None:
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self.rss[name].append(p.memory_info().rss)
        pg = 0
        for p in self._pg():
            with contextlib.suppress(psutil.Error):
                pg += p.memory_full_info().uss  # shared buffers would count once per backend in RSS
        self.rss["postgres"].append(pg)

    def finish(self) -> dict[str, dict[str, float]]:
        self.sample()
        cpu1 = self._cpu()
        wall = time.monotonic() - self.t0
        out: dict[str, dict[str, float]] = {}
        for name, series in self.rss.items():
            if not series:
                continue
            first, last = series[0], series[-1]
            out[name] = {
                "cpu_cores": round((cpu1.get(name, 0.0) - self.cpu0.get(name, 0.0)) / wall, 3),
                "rss_mb_first": round(first / 2**20, 1), "rss_mb_last": round(last / 2**20, 1),
                "rss_mb_max": round(max(series) / 2**20, 1),
                "rss_growth_pct": round(100.0 * (last - first) / first, 1) if first else float("nan"),
            }
        return out


def _q(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One query, bounded: a store stalled behind a lock must not hang the bench (QueryCanceled)."""
    with psycopg.connect(dsn, connect_timeout=10, options="-c statement_timeout=60000") as conn:
        return list(conn.execute(sql, params).fetchall())


def _q1(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """First column of the first row, or None when the query timed out."""
    try:
        return _q(dsn, sql, params)[0][0]
    except psycopg.errors.QueryCanceled:
        return None


def _metrics(port: int) -> dict[str, float]:
    """Every sample of a service's /metrics (its own counters: independent of table locks); {} if down.

    30 s: on a saturated box a scrape can wait behind the service's busy event loop (5 s timed out at 1 M devices)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
            if ln and not ln.startswith("#")}


def _metric(port: int, sample: str) -> float | None:
    return _metrics(port).get(sample)


def _rules_window(m0: dict[str, float], m1: dict[str, float], window_s: float) -> dict[str, Any]:
    """The rule runner's own figures over the window: readings evaluated/s and its step times.

    Step p99 is the upper bound of the histogram bucket holding it (the runner exports buckets)."""
    if not m0 or not m1:
        return {"scraped": False}
    name = "citywatch_rules_step_seconds"
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), m1[k] - m0.get(k, 0.0))
                     for k in m1 if k.startswith(name + "_bucket"))
    steps = m1.get(name + "_count", 0.0) - m0.get(name + "_count", 0.0)
    p99 = next((le for le, n in buckets if steps and n >= 0.99 * steps), None)
    return {
        "readings_evaluated_per_s": round((m1.get("citywatch_rules_readings_total", 0.0)
                                          - m0.get("citywatch_rules_readings_total", 0.0)) / window_s),
        "steps": int(steps),
        "step_mean_s": round((m1.get(name + "_sum", 0.0) - m0.get(name + "_sum", 0.0)) / steps, 3) if steps else None,
        "step_p99_le_s": p99,
        "lag_s_end": round(m1.get("citywatch_rules_lag_seconds", float("nan")), 3),
        "devices": int(m1.get("citywatch_rules_devices", 0.0)),
    }


@contextlib.contextmanager
def _databases(n: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(pg_database()) for _ in range(n)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_run = time.monotonic()
    print(f"ingest-only ceiling ({args.ceiling_readings} readings, bench/ingest.py's method) ...", flush=True)
    ceiling = ingest_ceiling(args.ceiling_readings)
    print(f"  ceiling {ceiling['readings_per_s']:,} readings/s", flush=True)
    gateways = max(args.loadgen_procs, math.ceil(args.devices / PER_GATEWAY))
    per_gw = args.devices // gateways
    tmp = Path(tempfile.mkdtemp(prefix="cw-city-"))
    os.chmod(tmp, 0o755)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        (tmp / "broker").mkdir()
        with mosquitto(tmp / "broker", extra_conf="max_connections -1\n") as broker, \
                _databases(3) as (ing_dsn, rules_dsn, cases_dsn), contextlib.ExitStack() as stops:
            stops.callback(_stop_all, procs)  # before the databases are dropped
            mqtt = {"url": broker.url, "keepalive_s": 30}
            metrics_port, console_port, rules_port = free_port(), free_port(), free_port()
            docs = {
                "ingest": {"mqtt": mqtt, "ingest": {"store_url": ing_dsn, "client_id": "city-ingest",
                                                    "writers": 2, "linger_ms": 50, "metrics_port": metrics_port,
                                                    "receive_maximum": 1000}},
                "rules": {"mqtt": mqtt, "rules": {"files": [str(bench_rules(tmp))], "store_url": rules_dsn,
                                                  "client_id": "city-rules", "metrics_port": rules_port}},
                "cases": {"mqtt": mqtt, "cases": {"store_url": cases_dsn, "client_id": "city-cases",
                                                  "categories_file": str(ROOT / "configs" / "categories.yaml"),
                                                  "units_file": str(ROOT / "configs" / "units.yaml")}},
                "console": {"mqtt": mqtt, "console": {
                    "listen_port": console_port, "secret_key": "city-bench-secret-city-bench-secret-0001",
                    "production": False, "ingest_store_url": ing_dsn, "alarm_store_url": rules_dsn,
                    "case_store_url": cases_dsn, "audit_store_url": f"sqlite:///{tmp / 'console-audit.db'}"}},
            }
            for name, doc in docs.items():
                cfg = tmp / f"{name}.yaml"
                cfg.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
                log = (tmp / f"{name}.log").open("wb")
                procs[name] = subprocess.Popen([sys.executable, "-m", "citywatch", name, "-c", str(cfg)], cwd=ROOT,
                                               stdout=log, stderr=subprocess.STDOUT)
            wait_port("127.0.0.1", console_port, 60)
            wait_port("127.0.0.1", metrics_port, 60)
            wait_port("127.0.0.1", rules_port, 60)
            time.sleep(2.0)  # rules / cases subscribe before the first birth
            storm_start = args.warmup_s + 5.0
            n_gw = [gateways // args.loadgen_procs + (i < gateways % args.loadgen_procs)
                    for i in range(args.loadgen_procs)]
            load_s = args.warmup_s + args.duration_s + 30.0
            for i, g in enumerate(n_gw):
                share = args.rate * g / gateways
                log = (tmp / f"loadgen-{i}.log").open("wb")
                procs[f"loadgen-{i}"] = subprocess.Popen(
                    [sys.executable, "-m", "citywatch", "loadgen", "--gateways", str(g), "--devices-per-gateway",
                     str(per_gw), "--rate", str(share), "--duration-s", str(load_s), "--drain-timeout-s", "10",
                     "--storm-fraction", str(args.storm_fraction), "--storm-start-s", str(storm_start),
                     "--broker", broker.url,  # in-memory outboxes: the edge discipline without its fsyncs
                     "--gateway-prefix", f"gw-c{i}-", "--seed", str(i + 1), "--json",
                     *(["--linger-s", str(args.loadgen_linger_s)] if args.loadgen_linger_s is not None else [])],
                    cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
            for n in [n for n in procs if n.startswith("loadgen-")]:
                out = procs[n].stdout
                assert out is not None
                if not out.readline():  # the plan line: planning done, the gateways are connecting
                    raise SystemExit(f"{n} exited before planning; logs in {tmp}")
            t_load = time.monotonic()
            ps = {n: psutil.Process(p.pid) for n, p in procs.items()}
            assert broker.proc is not None
            ps["mosquitto"] = psutil.Process(broker.proc.pid)
            sampler = Sampler(ps, ing_dsn.rsplit("/", 1)[0] + "/postgres",
                              [d.rsplit("/", 1)[1] for d in (ing_dsn, rules_dsn, cases_dsn)])
            print(f"{args.devices:,} devices on {gateways} gateways in {args.loadgen_procs} loadgen processes, "
                  f"{args.rate:,.0f} readings/s offered; warm-up {args.warmup_s:.0f} s ...", flush=True)
            while time.monotonic() - t_load < args.warmup_s:
                time.sleep(1.0)
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead:
                    raise SystemExit(f"{dead} exited during warm-up; logs in {tmp}")
            rows0 = _q1(ing_dsn, "SELECT count(*) FROM readings")
            ingest0 = _metrics(metrics_port)
            rules0 = _metrics(rules_port)
            w0_wall = time.time()
            sampler.start()
            health: list[float] = []
            health_errors = 0
            t_w0 = time.monotonic()
            next_rss = t_w0 + 5.0
            print(f"steady state {args.duration_s:.0f} s ...", flush=True)
            while time.monotonic() - t_w0 < args.duration_s:
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{console_port}/healthz", timeout=10) as r:
                        r.read()
                    health.append(time.monotonic() - t)
                except OSError:
                    health_errors += 1
                if time.monotonic() >= next_rss:
                    sampler.sample()
                    next_rss += 5.0
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
            window_s = time.monotonic() - t_w0
            ingest1 = _metrics(metrics_port)
            rules_fig = _rules_window(rules0, _metrics(rules_port), window_s)
            w1_wall = time.time()
            rows1 = _q1(ing_dsn, "SELECT count(*) FROM readings")
            # rows whose sample time lies in the window: throughput without warm-up backlog or lag
            in_window = _q1(ing_dsn, "SELECT count(*) FROM readings WHERE ts >= to_timestamp(%s) "
                            "AND ts < to_timestamp(%s)", (w0_wall, w1_wall))
            procs_cpu = sampler.finish()
            alive = {n: p.poll() is None for n, p in procs.items()}
            # the storm devices: flooded gauges raise road-water-depth (severity major)
            alarms = _q(rules_dsn, "SELECT count(*), count(DISTINCT device) FROM rules_alarms "
                                   "WHERE rule = 'road-water-depth' AND raised_t >= %s", (w0_wall,))[0]
            rules_alarms_all = _q(rules_dsn, "SELECT count(*) FROM rules_alarms WHERE raised_t >= %s", (w0_wall,))[0][0]
            case_rows = _q(cases_dsn,
                           "SELECT c.id, c.created_at, min(l.t) FROM cases c JOIN case_links l ON l.case_id = c.id "
                           "WHERE c.rule = 'road-water-depth' AND c.created_at BETWEEN %s AND %s GROUP BY c.id",
                           (w0_wall, w1_wall))
            cases_all = _q(cases_dsn, "SELECT count(*) FROM cases WHERE created_at >= %s", (w0_wall,))[0][0]
            to_case = [float(created) - float(t) for _id, created, t in case_rows]
            to_bridge = [float(r[0]) for r in _q(
                cases_dsn, "SELECT e.received_at - e.t_ms / 1000.0 FROM alarm_events e JOIN alarm_state s "
                "ON s.alarm_id = e.alarm_id WHERE s.rule = 'road-water-depth' AND e.kind = 'raised' "
                "AND e.received_at BETWEEN %s AND %s", (w0_wall, w1_wall))]
            lag = _metric(metrics_port, "citywatch_ingest_lag_seconds")
            ingest_lag = None if lag is None else round(lag, 3)
            reports = []
            names = [n for n in procs if n.startswith("loadgen-")]
            for n in names:
                procs[n].terminate()
            for n in names:
                try:
                    out, _ = procs[n].communicate(timeout=120)
                except subprocess.TimeoutExpired:  # a generator buried in backlog: its report is lost
                    procs[n].kill()
                    out, _ = procs[n].communicate(timeout=30)
                    print(f"{n} did not stop within 120 s of SIGTERM; killed (no report)", flush=True)
                for line in out.decode().splitlines():
                    with contextlib.suppress(ValueError):
                        doc = json.loads(line)
                        if "report" in doc:
                            reports.append(doc["report"])
            storm_devices = sum(r["storm_devices"] for r in reports)
            generated = sum(r["generated"] for r in reports)
            late_ticks = sum(r["late_ticks"] for r in reports)
            produced_s = max((r["production_s"] for r in reports), default=float("nan"))
            stops.close()
        def ingest_rate(result: str) -> float:
            """Readings/s the ingester counted with ``result`` over the window (nan: a scrape failed)."""
            sample = f'citywatch_ingest_readings_total{{result="{result}"}}'
            if sample not in ingest0 or sample not in ingest1:
                return float("nan")
            return (ingest1[sample] - ingest0[sample]) / window_s

        committed, duplicates = ingest_rate("inserted"), ingest_rate("duplicate")
        return {
            "devices": gateways * per_gw, "gateways": gateways, "offered_readings_per_s": args.rate,
            "warmup_s": args.warmup_s, "window_s": round(window_s, 1),
            "committed_readings_per_s": round(committed) if math.isfinite(committed) else None,
            "duplicate_readings_per_s": round(duplicates, 1) if math.isfinite(duplicates) else None,
            "loadgen_sent_batches": sum(r.get("sent_batches", 0) for r in reports),
            "loadgen_resent_batches": sum(r.get("resent_batches", 0) for r in reports),
            "committed_rows_delta_per_s": round((rows1 - rows0) / window_s)
            if rows0 is not None and rows1 is not None else None,
            "committed_by_sample_time_per_s": round(in_window / window_s) if in_window is not None else None,
            "loadgen_generated_readings_per_s": round(generated / produced_s) if reports and produced_s else None,
            "loadgen_reports": f"{len(reports)}/{len(n_gw)}",
            "loadgen_late_ticks": late_ticks,
            "ingest_ceiling": ceiling,
            "committed_vs_ceiling": round(committed / ceiling["readings_per_s"], 3)
            if math.isfinite(committed) else None,
            "storm_devices": storm_devices,
            "storm_alarms_raised": int(alarms[0]), "storm_alarm_devices": int(alarms[1]),
            "alarms_raised_all_rules": int(rules_alarms_all),
            "storm_cases_opened": len(case_rows), "cases_opened_all": int(cases_all),
            "sample_to_case": summary(to_case), "sample_to_alarm_at_bridge": summary(to_bridge),
            "ingest_lag_s_end": ingest_lag,
            "rules": rules_fig,
            "console_healthz": {**summary(health), "errors": health_errors},
            "processes": procs_cpu, "alive_at_end": alive,
            "wall_s": round(time.monotonic() - t_run, 1),
        }
    finally:
        _stop_all(procs)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(20)
        if p.poll() is None:
            p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1_000_000, help="simulated devices (1 000 per gateway)")
    ap.add_argument("--rate", type=float, default=50_000.0, help="offered readings/s of the whole city")
    ap.add_argument("--duration-s", type=float, default=600.0, help="steady-state window measured")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="load before the window (births, first batches)")
    ap.add_argument("--storm-fraction", type=float, default=0.005, help="fraction of water gauges flooded")
    ap.add_argument("--loadgen-procs", type=int, default=2, help="citywatch loadgen processes sharing the gateways")
    ap.add_argument("--loadgen-linger-s", type=float, default=None,
                    help="the generators' publish linger (default: loadgen's 0.2 s; longer = fewer, bigger batches)")
    ap.add_argument("--ceiling-readings", type=int, default=200_000, help="readings of the ingest-only ceiling run")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (configs, logs)")
    args = ap.parse_args()
    if not (0 < args.duration_s <= 3600 and 0 <= args.warmup_s <= 1800):
        ap.error("--duration-s must be in (0, 3600] and --warmup-s in [0, 1800]: the bench is bounded")
    res = run(args)
    print(f"{res['devices']:,} devices, {res['gateways']} gateways; offered {res['offered_readings_per_s']:,.0f}/s; "
          f"window {res['window_s']} s after {res['warmup_s']:.0f} s warm-up")
    print(f"committed {res['committed_readings_per_s']}/s (ingester's inserted counter; rows delta "
          f"{res['committed_rows_delta_per_s']}/s; loadgen produced "
          f"{res['loadgen_generated_readings_per_s']}/s; with sample time in the window "
          f"{res['committed_by_sample_time_per_s']}/s, {res['loadgen_late_ticks']} late ticks); ingest-only ceiling "
          f"{res['ingest_ceiling']['readings_per_s']:,}/s -> ratio {res['committed_vs_ceiling']}")
    print(f"duplicates: {res['duplicate_readings_per_s']} readings/s over the window (resent batches the cloud had "
          f"already committed); the generators resent {res['loadgen_resent_batches']:,} of "
          f"{res['loadgen_sent_batches']:,} batches sent over the whole run")
    print(f"storm: {res['storm_devices']} gauges; road-water-depth alarms {res['storm_alarms_raised']} "
          f"({res['storm_alarm_devices']} devices); cases {res['storm_cases_opened']}; all alarms "
          f"{res['alarms_raised_all_rules']}, all cases {res['cases_opened_all']}")
    rf = res["rules"]
    if rf.get("scraped", True):
        print(f"rules: {rf['readings_evaluated_per_s']}/s evaluated over {rf['devices']:,} devices; "
              f"{rf['steps']} steps, mean {rf['step_mean_s']} s, p99 <= {rf['step_p99_le_s']} s; "
              f"lag behind the newest sample {rf['lag_s_end']} s")
    for name in ("sample_to_alarm_at_bridge", "sample_to_case", "console_healthz"):
        r = res[name]
        print(f"  {name:<26} n={r['n']:<6} p50 {r['p50_s']:.3f} s  p95 {r['p95_s']:.3f} s  p99 {r['p99_s']:.3f} s"
              f"  max {r['max_s']:.3f} s")
    print(f"  {'process':<12} {'CPU cores':>9} {'RSS MB first':>13} {'last':>8} {'max':>8} {'growth %':>9}")
    for name, p in res["processes"].items():
        print(f"  {name:<12} {p['cpu_cores']:>9.3f} {p['rss_mb_first']:>13.1f} {p['rss_mb_last']:>8.1f} "
              f"{p['rss_mb_max']:>8.1f} {p['rss_growth_pct']:>9.1f}")
    res["bench"] = "city"
    res["goal_rate_met"] = (res["committed_readings_per_s"] or 0) >= GOAL_RATE
    res["goal_p99_met"] = res["sample_to_case"]["n"] > 0 and res["sample_to_case"]["p99_s"] < GOAL_P99_S
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
