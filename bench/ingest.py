"""Ingest throughput: MQTT (QoS 1, 50 readings/message, Mosquitto on loopback) -> PostgreSQL,
committed and acknowledged, against two baselines measured in the same run.

    .venv/bin/python bench/ingest.py [--readings 1000000] [--batch 5000]

(a) ceiling: the same rows written by one process with the same method (binary COPY into a
    staging table, then INSERT ... ON CONFLICT DO NOTHING, batches of the same size), no MQTT.
(b) naive: a paho subscriber that INSERTs each reading as it arrives (autocommit, auto-ack).
e2e: C publishers (mosquitto_pub -l, one per gateway) flood a private Mosquitto; ``citywatch
    ingest`` (a separate process) validates, writes micro-batches, acknowledges after commit and
    publishes the ack watermark; the clock stops when every gateway's watermark reaches its last
    seq (= all committed and acknowledged).

Everything runs on this box (2 vCPUs): publisher, broker, ingester and PostgreSQL share the
cores. Each figure uses a fresh database on the system PostgreSQL. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from cloud_ingest.store import WriteBatch  # noqa: E402
from cloud_ingest.store.postgres import PostgresStore  # noqa: E402
from contracts import topics  # noqa: E402
from contracts.payloads import decode_ack, decode_telemetry, encode_telemetry, ts_ms  # noqa: E402
from contracts.reading import Reading  # noqa: E402
from tests.support.services import free_port, mosquitto, pg_database  # noqa: E402

PER_MSG = 50
GATEWAYS = 4


def build(n_readings: int, t0: float) -> dict[str, list[list[Reading]]]:
    """Per gateway, its messages: 500 devices per gateway, one sample per device per second."""
    msgs_per_gw = n_readings // PER_MSG // GATEWAYS
    out: dict[str, list[list[Reading]]] = {}
    for g in range(GATEWAYS):
        gw_msgs = []
        for m in range(msgs_per_gw):
            second, slot = divmod(m, 10)
            ts = round(t0 + second, 3)
            gw_msgs.append(
                [
                    Reading(f"wl-{g}-{slot * PER_MSG + k}", "depth", ts, (m * 7 + k) % 1000 / 100, "m")
                    for k in range(PER_MSG)
                ]
            )
        out[f"gw-bench-{g}"] = gw_msgs
    return out


def ceiling(dsn: str, data: dict[str, list[list[Reading]]], batch: int, writers: int = 1) -> float:
    """The same identity rows the ingester writes, through the same store method, no MQTT.

    ``writers`` connections (threads of this one process) commit consecutive batches
    concurrently, as the ingester's ``ingest.writers`` does.
    """
    stores = [PostgresStore(dsn) for _ in range(writers)]
    readings = sorted((r for msgs in data.values() for m in msgs for r in m), key=lambda r: r.ts)
    rows = [(r.device, r.metric, ts_ms(r.ts), r.value, int(r.quality)) for r in readings]
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]

    def run(k: int) -> None:
        for chunk in chunks[k::writers]:
            stores[k].write(WriteBatch(rows=chunk))

    t = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    for st in stores:
        st.close()
    return len(rows) / elapsed


def cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def e2e(
    dsn: str, data: dict[str, list[list[Reading]]], batch: int, tmp: Path, writers: int
) -> tuple[float, dict[str, float]]:
    (tmp / "broker-e2e").mkdir()
    with mosquitto(tmp / "broker-e2e") as broker:
        metrics_port = free_port()
        cfg = tmp / "cloud.yaml"
        cfg.write_text(
            f"mqtt:\n  url: {broker.url}\ningest:\n  store_url: '{dsn}'\n  client_id: bench-ingest\n"
            f"  metrics_port: {metrics_port}\n  batch_max_readings: {batch}\n  batch_max_messages: {batch // PER_MSG}\n"
            f"  linger_ms: 50\n  receive_maximum: 1000\n  writers: {writers}\n"
        )
        log = (tmp / "ingest.log").open("wb")
        ing = subprocess.Popen(
            [sys.executable, "-m", "citywatch", "ingest", "-c", str(cfg)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        acks: dict[str, int] = {}
        done = threading.Event()
        last = {gw: len(msgs) for gw, msgs in data.items()}

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            gw, _ = topics.parse_gw_topic(msg.topic)
            acks[gw] = decode_ack(bytes(msg.payload)).get("b1", 0)
            if all(acks.get(g, 0) >= n for g, n in last.items()):
                done.set()

        watch = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        watch.on_message = on_message
        watch.connect(broker.host, broker.port)
        watch.subscribe("citywatch/v1/gw/+/ack", qos=1)
        watch.loop_start()
        files = []
        for gw, msgs in data.items():
            f = tmp / f"{gw}.lines"
            with f.open("wb") as out:
                for seq, rs in enumerate(msgs, start=1):
                    out.write(encode_telemetry(gw, "b1", seq, rs) + b"\n")
            files.append((gw, f))
        _wait_metrics(metrics_port)
        time.sleep(0.5)
        assert broker.proc is not None
        cpu0 = (cpu_s(ing.pid), cpu_s(broker.proc.pid))
        t_start = time.perf_counter()
        pubs = [
            subprocess.Popen(
                [
                    "mosquitto_pub",
                    "-h",
                    broker.host,
                    "-p",
                    str(broker.port),
                    "-q",
                    "1",
                    "-l",
                    "-t",
                    topics.telemetry(gw),
                    "-i",
                    f"pub-{gw}",
                ],
                stdin=f.open("rb"),
            )
            for gw, f in files
        ]
        ok = done.wait(100)
        t_end = time.perf_counter()
        for p in pubs:
            p.wait(10)
        stats = _scrape(metrics_port)
        n_all = sum(len(m) * PER_MSG for m in data.values())
        stats["ingester_cpu_us_per_reading"] = round((cpu_s(ing.pid) - cpu0[0]) / n_all * 1e6, 2)
        stats["broker_cpu_us_per_reading"] = round((cpu_s(broker.proc.pid) - cpu0[1]) / n_all * 1e6, 2)
        ing.send_signal(signal.SIGTERM)
        ing.wait(20)
        watch.disconnect()
        watch.loop_stop()
        if not ok:
            raise SystemExit(f"e2e did not complete: acks {acks} of {last}; see {tmp / 'ingest.log'}")
    n = sum(len(m) * PER_MSG for m in data.values())
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    stored = int(row[0]) if row else 0
    if stored != n:
        raise SystemExit(f"e2e stored {stored} of {n}")
    stats["stored"] = stored
    return n / (t_end - t_start), stats


def naive(dsn: str, data: dict[str, list[list[Reading]]], tmp: Path, budget_s: float = 10.0) -> float:
    """A subscriber that INSERTs each reading as it arrives; bounded to ``budget_s``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE naive (device text, metric text, ts timestamptz, value float8, quality int2, "
            "PRIMARY KEY (device, metric, ts))"
        )
    (tmp / "broker-naive").mkdir()
    with mosquitto(tmp / "broker-naive") as broker:
        db = psycopg.connect(dsn, autocommit=True)
        count = [0]
        first = [0.0]

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if not first[0]:
                first[0] = time.perf_counter()
            b = decode_telemetry(bytes(msg.payload))
            for r in b.readings:
                db.execute(
                    "INSERT INTO naive VALUES (%s, %s, to_timestamp(%s), %s, %s) ON CONFLICT DO NOTHING",
                    (r.device, r.metric, r.ts, r.value, int(r.quality)),
                )
                count[0] += 1

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive-sub", protocol=mqtt.MQTTv5)
        sub.on_message = on_message
        sub.connect(broker.host, broker.port)
        sub.subscribe("citywatch/v1/gw/+/telemetry", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        gw, msgs = next(iter(data.items()))
        f = tmp / "naive.lines"
        with f.open("wb") as out:
            for seq, rs in enumerate(msgs[:1000], start=1):
                out.write(encode_telemetry(gw, "b1", seq, rs) + b"\n")
        pub = subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-l",
                "-t",
                topics.telemetry(gw),
                "-i",
                "naive-pub",
            ],
            stdin=f.open("rb"),
        )
        time.sleep(budget_s)
        n, t1 = count[0], time.perf_counter()
        sub.disconnect()
        sub.loop_stop()
        pub.kill()
        pub.wait()
        db.close()
    return n / (t1 - first[0])


def _wait_metrics(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("ingester did not start")


def _scrape(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for key, name in (
            ('citywatch_ingest_readings_total{result="duplicate"}', "duplicates"),
            ("citywatch_ingest_batch_latency_seconds_count", "batches"),
            ("citywatch_ingest_batch_latency_seconds_sum", "commit_s"),
        ):
            if line.startswith(key + " "):
                out[name] = float(line.split()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=3, help="paired ceiling/e2e repetitions (medians reported)")
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--writers", type=int, default=2, help="ingest.writers of the headline e2e run")
    args = ap.parse_args()
    load0 = round(os.getloadavg()[0], 2)
    t0 = time.time() - 3600
    data = build(args.readings, t0)
    n = sum(len(m) * PER_MSG for m in data.values())
    print(f"{n} readings, {n // PER_MSG} messages of {PER_MSG}, {GATEWAYS} gateways, batches of {args.batch} readings")
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmpdir:
        tmp = Path(tmpdir)
        os.chmod(tmp, 0o755)
        ceils: list[float] = []
        rates: list[float] = []
        stats: dict[str, float] = {}
        w = args.writers
        # alternate ceiling and e2e runs: the machine is shared, so pair them in time and take medians
        for rep in range(args.reps):
            with pg_database() as dsn:
                ceils.append(ceiling(dsn, data, args.batch, w))
            (tmp / f"r{rep}").mkdir()
            with pg_database() as dsn:
                rate, stats = e2e(dsn, data, args.batch, tmp / f"r{rep}", w)
            rates.append(rate)
            print(
                f"rep {rep}: (a) ceiling {ceils[-1]:,.0f}/s ({w} connections); e2e {rate:,.0f}/s (writers={w}); {stats}"
            )
        ceil, rate = statistics.median(ceils), statistics.median(rates)
        print(f"(a) idempotent ceiling, staged upsert, no MQTT, {w} connections: median {ceil:,.0f} readings/s")
        print(f"e2e MQTT QoS 1 -> PostgreSQL, committed and acknowledged, writers={w}: median {rate:,.0f} readings/s")
        ceil1, rate1 = ceil, rate
        if w != 1:  # the same pair with one connection / one commit at a time
            with pg_database() as dsn:
                ceil1 = ceiling(dsn, data, args.batch, 1)
            (tmp / "w1").mkdir()
            with pg_database() as dsn:
                rate1, _ = e2e(dsn, data, args.batch, tmp / "w1", 1)
            print(f"writers=1: ceiling {ceil1:,.0f}/s, e2e {rate1:,.0f}/s")
        with pg_database() as dsn:
            nai = naive(dsn, data, tmp)
        print(f"(b) naive per-reading INSERT subscriber: {nai:,.0f} readings/s")
    result = {
        "bench": "ingest",
        "readings": n,
        "per_message": PER_MSG,
        "batch_readings": args.batch,
        "writers": w,
        "e2e_readings_per_s": round(rate),
        "ceiling_readings_per_s": round(ceil),
        "naive_readings_per_s": round(nai),
        "e2e_vs_ceiling": round(rate / ceil, 3),
        "e2e_vs_naive": round(rate / nai, 1),
        "e2e_runs": [round(x) for x in rates],
        "ceiling_runs": [round(x) for x in ceils],
        "writers1_e2e_readings_per_s": round(rate1),
        "writers1_ceiling_readings_per_s": round(ceil1),
        "writers1_e2e_vs_ceiling": round(rate1 / ceil1, 3),
        "goal_50k_met": rate >= 50_000,
        "goal_60pct_met": rate / ceil >= 0.6,
        "duplicates_seen": stats.get("duplicates", 0),
        "ingester_cpu_us_per_reading": stats.get("ingester_cpu_us_per_reading"),
        "broker_cpu_us_per_reading": stats.get("broker_cpu_us_per_reading"),
        "loadavg_1m_at_start": load0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
