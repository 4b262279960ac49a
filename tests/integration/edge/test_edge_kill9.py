"""kill -9 at random moments: the outbox stays intact and no committed sample is lost.

1. 50 kills of a real outbox writer process (appends, batch forming, acks, budget drops).
2. kills of the real ``citywatch agent`` polling the simulator and publishing to Mosquitto,
   then a clean run that drains: the cloud side stored every sample the outbox ever committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from firmware_sim.config import SimConfig
from firmware_sim.gwconfig import gateway_document
from firmware_sim.server import SimServer
from tests.support.acknowledger import Acknowledger, LedgerLine
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WRITER = Path(__file__).with_name("outbox_writer.py")
T0 = 1_764_057_600.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _scan(db_path: Path) -> tuple[str, set[int], set[int], dict[int, tuple[int, int, int]], list[tuple]]:
    db = sqlite3.connect(db_path)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        tel = {round((ts - T0) * 1000) for (ts,) in db.execute("SELECT ts FROM telemetry")}
        ev = {int(i) for (i,) in db.execute("SELECT event_id FROM events")}
        ledger = {c: (a, k, d) for c, a, k, d in db.execute("SELECT cls, appended, acked, dropped FROM ledger")}
        batches = db.execute("SELECT boot, seq, cls, first_id, last_id FROM batches").fetchall()
        counts = {0: db.execute("SELECT count(*) FROM telemetry").fetchone()[0],
                  1: db.execute("SELECT count(*) FROM events").fetchone()[0]}
        for cls, (a, k, d) in ledger.items():
            assert a == counts[cls] + k + d, f"ledger identity broken for class {cls}: {a} != {counts[cls]}+{k}+{d}"
        return str(ok), tel, ev, ledger, batches
    finally:
        db.close()


def test_kill9_outbox_writer_50_times(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    db = tmp_path / "outbox.db"
    ackfile = tmp_path / "ack.json"
    budget = 50 * 53  # ~50 readings: each writer's first 60-reading burst makes the policy drop
    committed = {"t": set(), "e": set()}  # printed after commit
    known = {"t": set(), "e": set()}  # committed: printed, or found on disk after a kill
    members: dict[tuple[str, int], tuple[str, list[int]]] = {}
    acks: dict[str, int] = {}
    integrity_failures = 0
    kills = 0
    for i in range(50):
        boot = f"k{i}"
        p = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), boot, str(budget), str(ackfile), str(1_000_000 * (i + 1)), str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT,
        )
        time.sleep(rng.uniform(0.1, 0.4))
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
        kills += 1
        pending: dict[str, set[int]] = {"t": set(), "e": set()}
        for line in out.decode().splitlines():
            parts = line.split()
            if parts[0] == "P" and len(parts) == 4:
                pending[parts[1]] = set(range(int(parts[2]), int(parts[3]) + 1))
            elif parts[0] == "A" and len(parts) == 4:
                committed[parts[1]].update(range(int(parts[2]), int(parts[3]) + 1))
            elif parts[0] == "B" and len(parts) == 5:
                members[(parts[1], int(parts[2]))] = (parts[3], [int(x) for x in parts[4].split(",")])
        ok, tel, ev, ledger, batches = _scan(db)
        if ok != "ok":
            integrity_failures += 1
        # the last append's outcome is unknown to stdout (killed between commit and print, its
        # rows possibly dropped by the policy in the same transaction): the ledger decides
        for kind, cls, present in (("t", 0, tel), ("e", 1, ev)):
            sure = known[kind] | committed[kind] | present
            maybe = pending[kind] - committed[kind]
            if ledger[cls][0] == len(sure | maybe):
                known[kind] = sure | maybe
            else:
                assert ledger[cls][0] == len(sure), (kind, ledger[cls][0], len(sure), len(maybe))
                known[kind] = sure
        # a batch still on disk holds exactly the rows it was formed with
        for boot_, seq, _cls, _first, _last in batches:
            if (boot_, seq) in members:
                kind, ns = members[(boot_, seq)]
                on_disk = tel if kind == "t" else ev
                assert set(ns) <= on_disk, f"batch {boot_}/{seq} lost rows"
        # the "cloud" acks some of the batches it has seen; the next writer applies it
        for boot_, seq in members:
            if rng.random() < 0.5:
                acks[boot_] = max(acks.get(boot_, 0), seq)
        ackfile.write_text(json.dumps(acks))

    ok, tel, ev, ledger, _ = _scan(db)
    acked_members = {"t": set(), "e": set()}
    for (boot_, seq), (kind, ns) in members.items():
        if seq <= acks.get(boot_, 0):
            acked_members[kind].update(ns)
    report = []
    for kind, cls, present in (("t", 0, tel), ("e", 1, ev)):
        appended, acked, dropped = ledger[cls]
        assert appended == len(known[kind]), (kind, appended, len(known[kind]))
        missing = known[kind] - present
        gone_by_ack = missing & acked_members[kind]
        assert len(gone_by_ack) == acked, (kind, len(gone_by_ack), acked)
        assert len(missing - acked_members[kind]) == dropped, (kind, len(missing - acked_members[kind]), dropped)
        assert committed[kind] <= known[kind]
        report.append((kind, appended, acked, dropped, len(present)))
    (_, t_app, t_ack, t_drop, t_present), (_, e_app, e_ack, e_drop, e_present) = report
    assert t_drop > 0, "the budget was meant to force drops"
    print(f"E7 kill -9 x{kills} (outbox writer, SQLite WAL synchronous=FULL, local virtio disk): "
          f"integrity failures {integrity_failures}; readings generated {t_app}, acked {t_ack}, "
          f"dropped_by_policy {t_drop}, still queued {t_present}, lost 0; events generated {e_app}, acked {e_ack}, "
          f"dropped {e_drop}, queued {e_present}")
    assert integrity_failures == 0


GW = "gw-kill-01"
SIM = {
    "seed": 3,
    "buses": [{"id": "tcp-k", "gateway": GW, "transport": "tcp"}],
    "devices": [
        {"id": "wl-0101", "profile": "water_gauge", "bus": "tcp-k", "unit": 1, "interval_s": 0.05,
         "scenario": {"role": "water_gauge", "peak_m": 0.2}},
        {"id": "mh-0101", "profile": "manhole", "bus": "tcp-k", "unit": 2, "interval_s": 0.05,
         "scenario": {"role": "manhole"}},
    ],
}


async def test_kill9_real_agent(tmp_path: Path, broker: Mosquitto) -> None:
    rng = random.Random(7)
    acker = Acknowledger(broker.host, broker.port, GW)
    try:
        async with SimServer(SimConfig.model_validate(SIM)) as sim:
            doc = gateway_document(sim.config, GW, sim.bus_endpoints, extra={
                "mqtt": {"url": broker.url},
                "outbox": {"path": str(tmp_path / "outbox.db"), "budget_bytes": 64 * 1024 * 1024},
                "publish": {"batch_max_readings": 50, "linger_s": 0.05, "ack_timeout_s": 1.0,
                            "reconnect_min_s": 0.1, "reconnect_max_s": 0.3},
            }, timeout_ms=200)
            cfg = tmp_path / "gw.yaml"
            cfg.write_text(yaml.safe_dump(doc))
            cmd = [sys.executable, "-m", "citywatch", "agent", "-c", str(cfg)]
            seen_status = 0
            wills = 0
            for i in range(9):
                p = subprocess.Popen(  # noqa: ASYNC220 - started, then only waited for in a thread
                    cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=ROOT
                )
                if i < 8:
                    await asyncio.sleep(rng.uniform(0.8, 1.6))
                    p.send_signal(signal.SIGKILL)
                    _, err = await asyncio.to_thread(p.communicate, None, 10)
                    assert p.returncode == -signal.SIGKILL, err.decode()[-2000:]
                    ok, *_ = _scan(tmp_path / "outbox.db")
                    assert ok == "ok"
                    online = [s for s in acker.status[seen_status:] if s.state == "online"]
                    if online:  # it had connected: the broker saw the connection die and sends the will
                        assert await asyncio.to_thread(
                            acker.wait_for, lambda: acker.status[-1].state == "offline", 5)
                        assert acker.status[-1].boot == online[-1].boot  # the boot that died
                        wills += 1
                    seen_status = len(acker.status)
                else:  # last run: let it drain, then stop it cleanly
                    await asyncio.sleep(1.0)
                    sim.device("wl-0101").faults.set(absent=True)
                    sim.device("mh-0101").faults.set(absent=True)
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline:
                        _, _, _, ledger, batches = _scan(tmp_path / "outbox.db")
                        depth = ledger[0][0] - ledger[0][1] - ledger[0][2]
                        if depth == 0 and not batches:
                            break
                        await asyncio.sleep(0.2)
                    p.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(p.communicate, None, 10)
                    assert p.returncode == 0
                    # a clean stop says so itself (the broker only sends the will on a lost connection)
                    assert await asyncio.to_thread(acker.wait_for, lambda: acker.status[-1].state == "offline", 5)
        _, _tel, _ev, ledger, _batches = _scan(tmp_path / "outbox.db")
        appended, acked, dropped = ledger[0]
        present = appended - acked - dropped  # (a poll may complete between the drain check and SIGTERM)
        stored = acker.stored()
        line = LedgerLine(appended, len(stored), appended - len(stored) - present - dropped,
                          acker.received_total() - len(stored), 0, dropped)
        print(line.line("E7 kill -9 x8 of `citywatch agent` (then a clean drain)") + f", still queued {present}")
        assert wills >= 1
        assert dropped == 0 and present <= 10
        assert len(stored) == acked  # every acked reading reached the (test) cloud; the rest is still queued
        assert line.lost == 0
    finally:
        acker.close()
