"""kill -9 of the bridge process while alarms flow, repeated: exactly one case per alarm, no orphans.

The bridge PUBACKs an alarm only after its transaction committed, on a persistent session;
a kill anywhere between receiving and committing makes the broker redeliver, and the store's
idempotency makes the redelivery a no-op.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cases_support import alarm, publish_all

from contracts import topics
from contracts.payloads import encode_alarm
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
LOOPS = 12
BURST = 80


def write_config(tmp: Path, port: int) -> Path:
    cfg = tmp / "cloud.yaml"
    cfg.write_text(
        f"mqtt:\n  url: mqtt://127.0.0.1:{port}\n"
        "cases:\n"
        f"  store_url: sqlite:///{tmp}/cases.db\n"
        f"  categories_file: {REPO}/configs/categories.yaml\n"
        f"  units_file: {REPO}/configs/units.yaml\n"
        "  tick_s: 0.2\n"
        "  client_id: cases-crash-test\n"
    )
    return cfg


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "citywatch.cli", "cases", "-c", str(cfg)], cwd=REPO, env=env,
                            stdout=out, stderr=out)


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        q = {
            "cases": "SELECT COUNT(*) FROM cases",
            "links": "SELECT COUNT(*) FROM case_links",
            "distinct_alarms": "SELECT COUNT(DISTINCT alarm_id) FROM case_links",
            "orphan_audit": "SELECT COUNT(*) FROM case_audit a LEFT JOIN cases c ON c.id = a.case_id "
            "WHERE c.id IS NULL",
            "cases_without_report": "SELECT COUNT(*) FROM cases c WHERE NOT EXISTS (SELECT 1 FROM case_audit a "
            "WHERE a.case_id = c.id AND a.action = 'report')",
            "bad_audit_count": "SELECT COUNT(*) FROM (SELECT case_id, COUNT(*) n FROM case_audit GROUP BY case_id) "
            "WHERE n != 3",
            "not_dispatched": "SELECT COUNT(*) FROM cases WHERE state != 'dispatched'",
        }
        return {k: int(conn.execute(v).fetchone()[0]) for k, v in q.items()}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def wait_cases(db: Path, n: int, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    c: dict[str, int] = {}
    while time.monotonic() < deadline:
        c = counts(db) if db.exists() else {}
        if c.get("cases", 0) >= n:
            return c
        time.sleep(0.1)
    return c


def kill_once_writing(proc: subprocess.Popen[bytes], db: Path, before: int, timeout_s: float = 10.0) -> None:
    """SIGKILL the bridge right after its first commit of the burst: mid-work by construction
    (the bridge commits a backlog in batches, so a random instant often falls before or after)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(db, timeout=1)
            try:
                if int(conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]) > before:
                    break
            finally:
                conn.close()
        except sqlite3.OperationalError:
            pass
        time.sleep(0.003)
    proc.send_signal(signal.SIGKILL)


def test_kill_9_between_alarm_and_case_write(broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    cfg = write_config(tmp_path, broker.port)
    db = tmp_path / "cases.db"
    log = tmp_path / "bridge.log"
    sent = 0

    def burst(n: int) -> None:
        nonlocal sent
        msgs = []
        for _ in range(n):
            sent += 1
            tr = alarm(f"wl-{sent:04d}", "road-water-depth", severity="critical", value=0.5, t=1764057600.0 + sent,
                       alarm_id=f"wl-{sent:04d}:road-water-depth:{sent}")
            msgs.append((topics.alarms(tr.device), encode_alarm(tr), False))
            msgs.append((topics.alarms(tr.device), encode_alarm(tr), False))  # every alarm twice
        publish_all(broker.port, msgs)

    # first run creates the persistent session; wait until it has processed a first alarm
    proc = start(cfg, log)
    deadline = time.monotonic() + 20
    while "connected to" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the subscription follows the connect
    burst(1)
    assert wait_cases(db, 1, 20).get("cases") == 1, log.read_text()
    kills = 0
    mid_work = 0  # kills that hit while alarms were received but not all written
    for loop in range(LOOPS):
        before = counts(db).get("cases", 0)
        # the kill lands while the burst is being published and written: at a random instant, or
        # (every other loop) just after the bridge's first commit of this burst
        killer: threading.Thread
        if loop % 2:
            killer = threading.Thread(target=kill_once_writing, args=(proc, db, before))
        else:
            killer = threading.Timer(rng.uniform(0.02, 0.3), proc.send_signal, [signal.SIGKILL])
        killer.start()
        burst(BURST)  # alarms arrive while the bridge runs (or queue on its session while it is down)
        killer.join()
        proc.wait(10)
        kills += 1
        done = counts(db).get("cases", 0)
        mid_work += before < done < sent  # it was writing cases and had more to go
        if rng.random() < 0.5:
            burst(3)  # queued on the session while the bridge is dead
        proc = start(cfg, log)
        time.sleep(rng.uniform(0.6, 1.6))  # killed during start-up, redelivery or writing
    try:
        final = wait_cases(db, sent, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    print(f"LEDGER bridge kill -9: {kills} kills, {mid_work} while cases were being written, {sent} alarms")
    assert kills == LOOPS
    assert mid_work >= 2, f"only {mid_work} kills landed while alarms were outstanding"
    assert final == {
        "cases": sent,
        "links": sent,
        "distinct_alarms": sent,
        "orphan_audit": 0,
        "cases_without_report": 0,
        "bad_audit_count": 0,  # report + file + dispatch, each exactly once
        "not_dispatched": 0,
    }, log.read_text()[-3000:]
