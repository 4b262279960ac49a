"""Readings per second end to end (committed to PostgreSQL and acknowledged) through a 3-node NATS
JetStream cluster with 1, 2 and 3 ingesters, against single-node Mosquitto measured in the same run;
then the time from a node kill -9 until every gateway it held is connected again.

Layout (all loopback, all on this machine's cores):

* NATS: 3 ``nats-server`` nodes (pinned wheel), ``$MQTT_msgs`` durable ``ingest`` provisioned
  first; N ``citywatch ingest`` processes with a ``jetstream`` section, bound to it;
* Mosquitto: one broker (persistence on, as the test fixture), one ``citywatch ingest`` (MQTT 5,
  manual acks after commit);
* the same publisher process for both: 4 gateways publishing telemetry batches of 50 readings at
  QoS 1 (MQTT 3.1.1, 100 in flight per connection), so the broker, not the publisher, is the limit;
* a fresh PostgreSQL database per run (the system server; its CPU is not attributed).

e2e readings/s = readings / (time the last reading is committed - first publish); for NATS the
run also waits until the durable has nothing pending or unacknowledged. CPU per reading comes
from ``/proc/<pid>/stat`` (user + system) of the broker node(s), the ingesters and the publisher.

Failover: 6 gateways (``tests.support.nats_loadgen``: real outbox + uplink, spread over the nodes)
publish continuously; the node holding most of them is killed with -9 (three times, restarted in
between); the figure is the time until each of its gateways is connected to another node and has
published there (``/connz``: the new connection's ``in_msgs`` > 0), the last one counted.

    .venv/bin/python bench/cluster.py [--batches 1500]

Bounded (a few minutes), stops everything it started by PID. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from citywatch.cluster import NatsCluster, plan_nodes, touch_mqtt  # noqa: E402
from cloud_ingest.provision import provision_ingest_consumer  # noqa: E402
from contracts import topics  # noqa: E402
from contracts.config import parse_mqtt_url  # noqa: E402
from contracts.payloads import encode_telemetry  # noqa: E402
from contracts.reading import Reading  # noqa: E402
from tests.support.chain import citywatch_argv, scrape_duplicates  # noqa: E402
from tests.support.nats_cluster import free_ports  # noqa: E402
from tests.support.services import Mosquitto, free_port, pg_database, wait_port  # noqa: E402

GATEWAYS = 4
PER_BATCH = 50


def cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0


# ------------------------------------------------------------------ publisher (own process)


def publish(url: str, batches: int) -> int:
    """Each of GATEWAYS connections publishes ``batches`` telemetry batches, QoS 1, then waits for every PUBACK."""
    host, port, _ = parse_mqtt_url(url)
    clients = []
    t0 = time.time()
    for g in range(GATEWAYS):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{g}", protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(100)
        c.connect(host, port, keepalive=30)
        c.loop_start()
        clients.append(c)
    infos = []
    for b in range(batches):
        for g, c in enumerate(clients):
            gw = f"gw-bench-{g}"
            rs = [Reading(f"{gw}-d{k:02d}", "depth", round(t0 - 3600 + b * 0.01, 3), float(b), "m")
                  for k in range(PER_BATCH)]
            infos.append(c.publish(topics.telemetry(gw), encode_telemetry(gw, "b1", b + 1, rs), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    print(json.dumps({"published": len(infos), "s": round(time.time() - t0, 2)}), flush=True)
    return 0


# ------------------------------------------------------------------ one throughput run


def ingest_config(tmp: Path, name: str, mqtt_doc: dict[str, Any], dsn: str, metrics_port: int,
                  jetstream: dict[str, Any] | None) -> Path:
    ingest = {"store_url": dsn, "client_id": name, "metrics_port": metrics_port, "share_group": None, "writers": 1}
    doc: dict[str, Any] = {"mqtt": mqtt_doc, "ingest": ingest}
    if jetstream is not None:
        doc["jetstream"] = jetstream
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def stored(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])  # type: ignore[index]


async def js_idle(nats_urls: list[str]) -> bool:
    import nats

    nc = await nats.connect(servers=nats_urls)
    try:
        info = await nc.jetstream().consumer_info("$MQTT_msgs", "ingest")
        return int(info.num_pending or 0) == 0 and int(info.num_ack_pending or 0) == 0
    finally:
        await nc.close()


def run_once(kind: str, n_ingesters: int, batches: int) -> dict[str, Any]:
    total = GATEWAYS * batches * PER_BATCH
    with tempfile.TemporaryDirectory(prefix=f"cw-bench-{kind}-") as d, pg_database() as dsn:
        tmp = Path(d)
        servers: list[int | None] = []
        cluster: NatsCluster | None = None
        broker: Mosquitto | None = None
        if kind == "nats":
            cluster = NatsCluster.create(plan_nodes(tmp / "store", free_ports(3)), tmp)
            cluster.start()
            touch_mqtt(cluster.mqtt_urls[0])
            asyncio.run(provision_ingest_consumer(cluster.nats_urls))
            servers = [n.pid for n in cluster.nodes]
            urls = cluster.mqtt_urls
            mqtt_doc: dict[str, Any] = {"url": urls[0], "failover_urls": urls[1:], "protocol": "3.1.1"}
            js: dict[str, Any] | None = {"servers": cluster.nats_urls}
            pub_url = urls[1]
        else:
            (tmp / "mosq").mkdir()
            broker = Mosquitto(workdir=tmp / "mosq", port=free_port())
            broker.start()
            servers = [broker.proc.pid if broker.proc else None]
            mqtt_doc = {"url": broker.url}
            js = None
            pub_url = broker.url
        procs: list[subprocess.Popen[bytes]] = []
        ports = [free_port() for _ in range(n_ingesters)]
        try:
            for i, port in enumerate(ports):
                cfg = ingest_config(tmp, f"bench-ingest-{i + 1}", mqtt_doc, dsn, port, js)
                log = open(tmp / f"ingest-{i + 1}.log", "ab")  # noqa: SIM115 - owned by the process
                procs.append(subprocess.Popen(citywatch_argv("ingest", "-c", str(cfg)), cwd=REPO, stdout=log,
                                              stderr=log))
                log.close()
            for port in ports:
                wait_port("127.0.0.1", port, 30)
            time.sleep(1.0)  # subscriptions / durable bindings
            cpu0 = {"broker": sum(cpu_s(p) for p in servers), "ingest": sum(cpu_s(p.pid) for p in procs)}
            t0 = time.monotonic()
            pub = subprocess.Popen([sys.executable, __file__, "--publish", pub_url, str(batches)], cwd=REPO,
                                   stdout=subprocess.PIPE)
            pub_cpu = 0.0
            deadline = t0 + 300
            while stored(dsn) < total:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind}: only {stored(dsn)} of {total} readings committed in 300 s")
                pub_cpu = cpu_s(pub.pid) or pub_cpu
                time.sleep(0.05)
            t_commit = time.monotonic()
            if cluster is not None:
                while not asyncio.run(js_idle(cluster.nats_urls)):
                    if time.monotonic() > deadline:
                        raise RuntimeError("durable still has pending or unacknowledged messages")
                    time.sleep(0.05)
            t_acked = time.monotonic()
            cpu1 = {"broker": sum(cpu_s(p) for p in servers), "ingest": sum(cpu_s(p.pid) for p in procs)}
            pub_cpu = cpu_s(pub.pid) or pub_cpu
            out, _ = pub.communicate(timeout=120)
            dups = sum(scrape_duplicates(p) or 0 for p in ports)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(20)
            if cluster is not None:
                cluster.stop()
            if broker is not None:
                broker.stop()
    per_reading = {k: round((cpu1[k] - cpu0[k]) / total * 1e6, 2) for k in cpu0}
    per_reading["publisher"] = round(pub_cpu / total * 1e6, 2)
    return {
        "kind": kind, "ingesters": n_ingesters, "readings": total,
        "readings_per_s": round(total / (t_commit - t0)), "acked_s": round(t_acked - t0, 2),
        "cpu_us_per_reading": per_reading, "duplicates": dups, "publisher": json.loads(out.splitlines()[-1]),
    }


# ------------------------------------------------------------------ failover time


def failover(kills: int) -> dict[str, Any]:
    gws = [f"gw-fo-{i}" for i in range(6)]
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cw-bench-fo-") as d:
        tmp = Path(d)
        cluster = NatsCluster.create(plan_nodes(tmp / "store", free_ports(3)), tmp)
        cluster.start()
        loadgens: list[subprocess.Popen[bytes]] = []
        try:
            touch_mqtt(cluster.mqtt_urls[0])
            urls = cluster.mqtt_urls
            for k, gw in enumerate(gws):  # one process per gateway, each starting on a different node
                rot = urls[k % 3:] + urls[:k % 3]
                cfg = {"gateways": [gw], "outbox_dir": str(tmp / "outbox"), "readings_per_s": 20.0,
                       "duration_s": 3600.0, "devices_per_gw": 5,
                       "mqtt": {"url": rot[0], "failover_urls": rot[1:], "keepalive_s": 5, "protocol": "3.1.1"}}
                loadgens.append(subprocess.Popen([sys.executable, "-m", "tests.support.nats_loadgen", json.dumps(cfg)],
                                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for _ in range(kills):
                deadline = time.monotonic() + 60
                holders: dict[str, str | None] = {}
                while time.monotonic() < deadline:
                    holders = {gw: cluster.holder_of(f"citywatch-{gw}") for gw in gws}
                    if all(holders.values()):
                        break
                    time.sleep(0.2)
                counts: dict[str, int] = {}
                for h in holders.values():
                    if h:
                        counts[h] = counts.get(h, 0) + 1
                victim = max(counts, key=lambda n: counts[n])
                moved = [gw for gw, h in holders.items() if h == victim]
                cluster.node(victim).kill9()
                t_kill = time.monotonic()
                pending = set(moved)
                while pending and time.monotonic() - t_kill < 120:
                    # publishing again: connected to a surviving node, which has received a message from it
                    found = {gw: cluster.connection_of(f"citywatch-{gw}") for gw in pending}
                    pending = {gw for gw, f in found.items() if f is None or f[0] == victim or f[1] == 0}
                    time.sleep(0.02)
                times.append(round(time.monotonic() - t_kill, 2))
                cluster.node(victim).start()
                cluster.wait_ready(60)
                time.sleep(3.0)
        finally:
            for p in loadgens:
                p.terminate()
            for p in loadgens:
                p.wait(20)
            cluster.stop()
    return {"publishing_again_s": times, "max_s": max(times), "median_s": statistics.median(times)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        return publish(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1500, help="batches per gateway (4 gateways x 50 readings)")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--failover-only", action="store_true", help="skip the throughput runs")
    args = ap.parse_args()
    if args.failover_only:
        print(json.dumps(failover(args.kills)))
        return 0
    runs = [run_once("mosquitto", 1, args.batches)]
    print(json.dumps(runs[-1]), flush=True)
    for n in (1, 2, 3):
        runs.append(run_once("nats", n, args.batches))
        print(json.dumps(runs[-1]), flush=True)
    fo = failover(args.kills)
    print(json.dumps(fo), flush=True)
    base = runs[0]["readings_per_s"]
    summary = {
        "mosquitto_readings_per_s": base,
        **{f"nats_{r['ingesters']}_ingesters_readings_per_s": r["readings_per_s"] for r in runs[1:]},
        "best_nats_vs_mosquitto": round(max(r["readings_per_s"] for r in runs[1:]) / base, 2),
        "cpu_us_per_reading": {f"{r['kind']}_{r['ingesters']}": r["cpu_us_per_reading"] for r in runs},
        "node_kill_to_last_gateway_publishing_s_max": fo["max_s"],
        "node_kill_to_last_gateway_publishing_s_median": fo["median_s"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
