"""Edge agent figures: CPU per 10 000 readings published, and the drain rate of a 1 000 000-reading backlog.

Everything on loopback: a private Mosquitto, simulated Modbus TCP devices (firmware_sim, in this
process), the real agent as a subprocess (``python -m citywatch agent``; its CPU is read from
/proc), and the test-only acknowledger (this process) that records every batch and publishes
the ack watermark, so rows leave the outbox only on end-to-end acks, as in production.

Baselines measured in the same run:
* CPU: a naive publisher sending one reading per MQTT 5 QoS 1 message with paho (what a
  per-sample gateway does), with no outbox at all.
* Drain: the transport ceiling, i.e. the same batches pre-encoded and published by paho
  back-to-back (no outbox, no acks), for 200 000 readings.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncio  # noqa: E402

import paho.mqtt.client as paho  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from contracts import payloads, topics  # noqa: E402
from contracts.reading import Reading  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from firmware_sim.config import SimConfig  # noqa: E402
from firmware_sim.gwconfig import gateway_document  # noqa: E402
from firmware_sim.server import SimServer  # noqa: E402
from tests.support.acknowledger import Acknowledger  # noqa: E402
from tests.support.services import mosquitto  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
T0 = 1_764_057_600.0
N_DEVICES = 16
MEASURE_READINGS = 20_000
BACKLOG = 1_000_000


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def wait(pred: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


def agent_cfg(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def start_agent(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "citywatch", "agent", "-c", str(cfg)], cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


PUBLISH = {"batch_max_readings": 500, "linger_s": 0.5, "max_inflight_batches": 16, "ack_timeout_s": 10.0,
           "reconnect_min_s": 0.1, "reconnect_max_s": 1.0}


# ---------------------------------------------------------------- 1. CPU per 10k readings


def bench_cpu(tmp: Path, url: str, host: str, port: int) -> dict[str, float]:
    gw = "gw-bench-cpu"
    sim_cfg = SimConfig.model_validate({
        "seed": 1,
        "buses": [{"id": "tcp-bench", "gateway": gw, "transport": "tcp"}],
        "devices": [
            {"id": f"wl-{i:04d}", "profile": "water_gauge", "bus": "tcp-bench", "unit": i + 1, "interval_s": 0.1,
             "scenario": {"role": "water_gauge", "peak_m": 0.2}}
            for i in range(N_DEVICES)
        ],
    })
    acker = Acknowledger(host, port, gw, client_id="bench-acker-cpu")
    result: dict[str, float] = {}

    async def run() -> None:
        async with SimServer(sim_cfg) as sim:
            doc = gateway_document(sim.config, gw, sim.bus_endpoints, extra={
                "mqtt": {"url": url},
                "outbox": {"path": str(tmp / "cpu-outbox.db"), "budget_bytes": 256 * 1024 * 1024},
                "publish": PUBLISH,
            }, timeout_ms=500)
            for bus in doc["buses"]:  # loopback simulator answers in well under 1 ms (the planner's input)
                bus["turnaround_ms"] = 0.2
            p = start_agent(agent_cfg(tmp / "cpu.yaml", doc))
            try:
                ok = await asyncio.to_thread(wait, lambda: len(acker.stored()) >= 2000, 30)
                if not ok:
                    stop(p)
                    err = p.stderr.read().decode() if p.stderr else ""
                    raise AssertionError(f"agent did not start publishing: {err[-2000:]}")
                n0, c0, t0 = len(acker.stored()), proc_cpu_s(p.pid), time.monotonic()
                ok = await asyncio.to_thread(wait, lambda: len(acker.stored()) >= n0 + MEASURE_READINGS, 90)
                assert ok, "agent too slow"
                n1, c1, t1 = len(acker.stored()), proc_cpu_s(p.pid), time.monotonic()
            finally:
                stop(p)
            result["readings"] = n1 - n0
            result["cpu_s"] = c1 - c0
            result["wall_s"] = t1 - t0
            result["polls_per_s"] = N_DEVICES / 0.1

    asyncio.run(run())
    acker.close()
    return result


def bench_naive_cpu(host: str, port: int, n: int) -> float:
    """CPU seconds to publish n readings one per MQTT 5 QoS 1 message with paho (no outbox)."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=paho.MQTTv5)
    c.connect(host, port)
    c.loop_start()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    infos = []
    topic = topics.telemetry("gw-bench-naive")
    for i in range(n):
        r = Reading("wl-0001", "depth", T0 + i, 0.1, "m")
        infos.append(c.publish(topic, payloads.encode_telemetry("gw-bench-naive", "b", i + 1, [r]), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    c.loop_stop()
    c.disconnect()
    return (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)


# ---------------------------------------------------------------- 2. drain of a 1M backlog


def fill_backlog(db: Path, n: int) -> float:
    t = time.monotonic()
    ob = Outbox(db, 1 << 31, boot="bench-fill")
    chunk = 20_000
    for start in range(0, n, chunk):
        ob.append([Reading(f"wl-{(i // 1000) % 50:04d}", "depth", T0 + i * 0.01, (i % 1000) / 1000.0, "m")
                   for i in range(start, min(n, start + chunk))])
    ob.close()
    return time.monotonic() - t


def bench_drain(tmp: Path, url: str, host: str, port: int) -> dict[str, float]:
    gw = "gw-bench-drain"
    db = tmp / "drain-outbox.db"
    fill_s = fill_backlog(db, BACKLOG)
    file_mb = (db.stat().st_size + (Path(str(db) + "-wal").stat().st_size if Path(str(db) + "-wal").exists() else 0))
    logical = Outbox(db, 1 << 31, boot="bench-peek")
    logical_bytes = logical.bytes
    logical.close()
    acker = Acknowledger(host, port, gw, client_id="bench-acker-drain")
    doc = {"gateway": {"id": gw}, "mqtt": {"url": url},
           "outbox": {"path": str(db), "budget_bytes": 1 << 31}, "publish": PUBLISH}
    p = start_agent(agent_cfg(tmp / "drain.yaml", doc))
    t0 = time.monotonic()
    ok = wait(lambda: acker.received_total() >= BACKLOG, 100)
    t1 = time.monotonic()
    cpu = proc_cpu_s(p.pid)
    # the last acks: the outbox must end empty
    ob_done = wait(lambda: _outbox_depth(db) == 0, 20)
    stop(p)
    err = p.stderr.read().decode() if p.stderr else ""
    acker.close()
    assert ok and ob_done, f"drain incomplete: {acker.received_total()} received; agent said: {err[-1500:]}"
    return {"readings": float(BACKLOG), "wall_s": t1 - t0, "agent_cpu_s": cpu, "fill_s": fill_s,
            "file_bytes": float(file_mb), "logical_bytes": float(logical_bytes),
            "distinct_stored": float(len(acker.stored()))}


def _outbox_depth(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM telemetry").fetchone()[0])
    finally:
        con.close()


def bench_transport_ceiling(host: str, port: int, n: int) -> float:
    """Readings/s when the same 500-reading batches are published back-to-back by paho (no outbox, no acks)."""
    gw = "gw-bench-ceiling"
    got = threading.Event()
    count = [0]
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-ceiling-sub", protocol=paho.MQTTv5)

    def on_msg(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        count[0] += len(payloads.decode_telemetry(bytes(m.payload)).readings)
        if count[0] >= n:
            got.set()

    sub.on_message = on_msg
    sub.connect(host, port)
    sub.subscribe(topics.telemetry(gw), qos=1)
    sub.loop_start()
    time.sleep(0.3)
    msgs = []
    for s in range(n // 500):
        rs = [Reading(f"wl-{s % 50:04d}", "depth", T0 + (s * 500 + i) * 0.01, 0.1, "m") for i in range(500)]
        msgs.append(payloads.encode_telemetry(gw, "b", s + 1, rs))
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-ceiling-pub", protocol=paho.MQTTv5)
    pub.connect(host, port)
    pub.loop_start()
    t0 = time.monotonic()
    infos = [pub.publish(topics.telemetry(gw), m, qos=1) for m in msgs]
    for info in infos:
        info.wait_for_publish(60)
    got.wait(60)
    dt = time.monotonic() - t0
    pub.loop_stop()
    sub.loop_stop()
    pub.disconnect()
    sub.disconnect()
    return count[0] / dt


def bench_append_cpu(tmp: Path, polls: int = 2000, per_poll: int = 5) -> float:
    """CPU seconds per 10 000 readings of the outbox append alone (one fsync'd transaction per poll)."""
    ob = Outbox(tmp / "append.db", 1 << 30, boot="bench-append")
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for p in range(polls):
        ob.append([Reading("wl-0001", m, T0 + p, 0.1, u) for m, u in
                   (("depth", "m"), ("distance", "m"), ("install_height", "m"), ("battery", "V"), ("status", ""))
                   ][:per_poll])
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    ob.close()
    return ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / (polls * per_poll) * 10_000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cw-bench-edge-") as d:
        tmp = Path(d)
        (tmp / "mq").mkdir()
        with mosquitto(tmp / "mq") as b:
            cpu = bench_cpu(tmp, b.url, b.host, b.port)
            per10k = cpu["cpu_s"] / cpu["readings"] * 10_000
            naive_cpu = bench_naive_cpu(b.host, b.port, 10_000)
            print(f"agent CPU: {cpu['cpu_s']:.2f} s for {cpu['readings']:.0f} readings published "
                  f"({N_DEVICES} simulated TCP gauges polled every 0.1 s, {cpu['wall_s']:.1f} s wall) "
                  f"= {per10k:.3f} CPU s per 10 000 readings (poll + decode + outbox fsync + batch + publish + ack)")
            print(f"baseline: one reading per MQTT 5 QoS 1 message, paho, no outbox: {naive_cpu:.3f} CPU s per 10 000"
                  f" -> ratio agent/baseline {per10k / naive_cpu:.2f}")
            append_cpu = bench_append_cpu(tmp)
            print(f"  of which the outbox append (SQLite WAL synchronous=FULL, one transaction per 5-reading poll): "
                  f"{append_cpu:.3f} CPU s per 10 000 readings")
            drain = bench_drain(tmp, b.url, b.host, b.port)
            publish_path = drain["agent_cpu_s"] / drain["readings"] * 10_000
            rate = drain["readings"] / drain["wall_s"]
            ceiling = bench_transport_ceiling(b.host, b.port, 200_000)
            print(f"drain: backlog of {BACKLOG} readings (outbox {drain['file_bytes'] / 1e6:.0f} MB on disk for "
                  f"{drain['logical_bytes'] / 1e6:.0f} MB budgeted bytes; filled in {drain['fill_s']:.1f} s) "
                  f"drained in {drain['wall_s']:.1f} s = {rate:,.0f} readings/s end to end with acks "
                  f"(agent CPU {drain['agent_cpu_s']:.1f} s incl. start-up)")
            print(f"publish path alone (outbox read + encode + publish + ack + delete, from the drain): "
                  f"{publish_path:.3f} CPU s per 10 000 readings -> ratio vs the per-reading baseline "
                  f"{publish_path / naive_cpu:.3f}")
            print(f"baseline: same 500-reading batches published back-to-back by paho, no outbox/acks: "
                  f"{ceiling:,.0f} readings/s -> ratio drain/ceiling {rate / ceiling:.2f}")
            assert drain["distinct_stored"] == BACKLOG
    print(json.dumps({
        "cpu_s_per_10k_readings": round(per10k, 4),
        "baseline_naive_cpu_s_per_10k": round(naive_cpu, 4),
        "cpu_ratio_vs_naive": round(per10k / naive_cpu, 3),
        "outbox_append_cpu_s_per_10k": round(append_cpu, 4),
        "publish_path_cpu_s_per_10k": round(publish_path, 4),
        "publish_path_ratio_vs_naive": round(publish_path / naive_cpu, 4),
        "drain_readings_per_s": round(rate),
        "baseline_transport_readings_per_s": round(ceiling),
        "drain_ratio_vs_transport": round(rate / ceiling, 3),
        "backlog_readings": BACKLOG,
        "outbox_file_bytes_per_budget_byte": round(drain["file_bytes"] / drain["logical_bytes"], 2),
    }))


if __name__ == "__main__":
    main()
