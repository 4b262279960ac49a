"""CPU per reading of ``citywatch loadgen``: in-memory outboxes vs the agent's SQLite outboxes.

    .venv/bin/python bench/loadgen.py [--devices 100000,1000000] [--rate 10000] [--duration-s 30]

A private Mosquitto; per size and outbox kind, a fresh generator process (``run_load``, 1 000
devices per gateway, the CLI's publish settings) and a fresh acker process. The acker stands in
for the ingester's commit-then-ack: one client on ``citywatch/v1/gw/+/telemetry`` that reads only
the envelope (gw, boot, seq) and publishes each gateway's retained contiguous watermark every
0.1 s (the ingester acks per commit, not per message). The generator reports its own process CPU
(``time.process_time``) from the first tick to the end of the drain, over the readings generated:
µs/reading. The same-run baseline is the previous path, the on-disk SQLite outbox per gateway
(``--outbox-dir``); the ratio is memory / sqlite. ``--profile`` writes a cProfile file per run.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_US_PER_READING = 8.0
PER_GATEWAY = 1000


def acker(host: str, port: int, prefix: str) -> int:
    """Ack every gateway ``prefix*``: retained contiguous watermark per boot, flushed every 0.1 s."""
    import orjson

    from contracts import payloads, topics
    from contracts.config import MqttSettings
    from mqttlink.client import new_client

    settings = MqttSettings(url=f"mqtt://{host}:{port}", keepalive_s=30, protocol="3.1.1")
    c, connect = new_client(settings, f"bench-acker-{os.getpid()}", persistent=False)
    lock = threading.Lock()
    seqs: dict[tuple[str, str], set[int]] = {}
    marks: dict[str, dict[str, int]] = {}
    dirty: set[str] = set()
    received = [0]

    def on_message(cl: Any, u: Any, msg: Any) -> None:
        obj = orjson.loads(msg.payload)
        gw, boot, seq = obj["gw"], obj["boot"], obj["seq"]
        if not gw.startswith(prefix):
            return
        with lock:
            received[0] += len(obj["e"])
            s = seqs.setdefault((gw, boot), set())
            s.add(seq)
            wm = marks.setdefault(gw, {}).get(boot, 0)
            while wm + 1 in s:
                s.discard(wm + 1)
                wm += 1
            if wm != marks[gw].get(boot, 0):
                marks[gw][boot] = wm
                dirty.add(gw)

    def on_connect(cl: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        cl.subscribe("citywatch/v1/gw/+/telemetry", qos=1)

    c.on_message = on_message
    c.on_connect = on_connect
    c.max_queued_messages_set(0)
    c.connect(**connect)
    c.loop_start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.1)
            with lock:
                out = [(gw, dict(marks[gw])) for gw in dirty]
                dirty.clear()
            for gw, acked in out:
                c.publish(topics.ack(gw), payloads.encode_ack(acked), qos=1, retain=True)
    except KeyboardInterrupt:
        pass
    finally:
        c.loop_stop()
    return 0


def child(cfg: dict[str, Any]) -> int:
    """One generator run; prints its report as JSON."""
    from dataclasses import asdict

    from citywatch.loadgen import default_publish, run_load
    from citywatch.loadplan import make_plan
    from contracts.config import MqttSettings

    n_gw = cfg["devices"] // PER_GATEWAY
    gws = [f"{cfg['prefix']}{i:04d}" for i in range(1, n_gw + 1)]
    t = time.process_time()
    plan = make_plan(gws, PER_GATEWAY, cfg["rate"], seed=7)
    plan_cpu_s = time.process_time() - t
    mqtt = MqttSettings(url=cfg["broker"], keepalive_s=30)
    prof = cProfile.Profile() if cfg.get("profile") else None
    outbox_dir = Path(cfg["outbox_dir"]) if cfg.get("outbox_dir") else None
    if prof:
        prof.enable()
    publish = default_publish().model_copy(update={"linger_s": cfg["linger_s"]})
    report = asyncio.run(run_load(plan, mqtt, outbox_dir, duration_s=cfg["duration_s"], drain_timeout_s=60.0,
                                  publish=publish))
    if prof:
        prof.disable()
        prof.dump_stats(cfg["profile"])
    print(json.dumps({**asdict(report), "plan_cpu_s": round(plan_cpu_s, 2),
                      "achieved_rate_per_s": round(report.achieved_rate_per_s, 1),
                      "cpu_us_per_reading": round(report.cpu_us_per_reading, 2)}), flush=True)
    return 0


def one(broker_host: str, port: int, devices: int, kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    prefix = f"gw-lb{kind[0]}{devices // 1000}k-"
    ack = subprocess.Popen([sys.executable, __file__, "--acker", broker_host, str(port), prefix],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert ack.stdout is not None and ack.stdout.readline().strip() == "ready"
        cfg = {"devices": devices, "rate": args.rate, "duration_s": args.duration_s, "prefix": prefix,
               "linger_s": args.linger_s,
               "broker": f"mqtt://{broker_host}:{port}",
               "outbox_dir": str(tmp / f"outbox-{devices}") if kind == "sqlite" else None,
               "profile": str(Path(args.profile) / f"loadgen-{kind}-{devices}.prof") if args.profile else None}
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], check=False,
                             capture_output=True, text=True, timeout=args.duration_s + 600)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"generator failed ({out.returncode}): {out.stderr[-2000:]}")
        rep: dict[str, Any] = json.loads(lines[-1])
        return rep
    finally:
        ack.terminate()
        ack.wait(10)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--acker":
        return acker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="100000,1000000", help="comma-separated district sizes")
    ap.add_argument("--rate", type=float, default=10_000.0, help="readings/s offered (default 10 000)")
    ap.add_argument("--duration-s", type=float, default=30.0, help="production time per run (default 30)")
    ap.add_argument("--linger-s", type=float, default=0.2,
                    help="publish linger (default 0.2, the loadgen CLI's; the agent's default is 2.0)")
    ap.add_argument("--kinds", default="sqlite,memory", help="outbox kinds to run (baseline first)")
    ap.add_argument("--profile", default=None, help="directory for cProfile files (one per run)")
    args = ap.parse_args()
    from tests.support.services import mosquitto

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as td, mosquitto(Path(td)) as broker:
        tmp = Path(td)
        for devices in [int(x) for x in args.devices.split(",")]:
            row: dict[str, Any] = {}
            for kind in args.kinds.split(","):
                rep = one(broker.host, broker.port, devices, kind, args, tmp)
                row[kind] = {k: rep[k] for k in ("generated", "achieved_rate_per_s", "late_ticks", "pending",
                                                 "cpu_s", "setup_cpu_s", "plan_cpu_s", "cpu_us_per_reading")}
                print(f"{devices:>9,} devices {kind:>6}: {rep['generated']:,} readings "
                      f"({rep['generated'] / rep['production_s']:.0f}/s of {args.rate:.0f} offered, "
                      f"{rep['late_ticks']} late ticks, {rep['pending']} unacked): "
                      f"{rep['cpu_us_per_reading']:.2f} us CPU/reading "
                      f"({rep['cpu_s']:.1f} s; setup {rep['setup_cpu_s']:.1f} s, plan {rep['plan_cpu_s']:.1f} s)",
                      flush=True)
            if "sqlite" in row and "memory" in row and row["sqlite"]["cpu_us_per_reading"]:
                row["ratio_memory_vs_sqlite"] = round(row["memory"]["cpu_us_per_reading"]
                                                      / row["sqlite"]["cpu_us_per_reading"], 3)
                print(f"{devices:>9,} devices: memory / sqlite = {row['ratio_memory_vs_sqlite']:.3f}", flush=True)
            results[str(devices)] = row
    print(json.dumps({"bench": "loadgen", "rate_per_s": args.rate, "duration_s": args.duration_s,
                      "goal_us_per_reading": GOAL_US_PER_READING, "load_avg": os.getloadavg()[0],
                      "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
