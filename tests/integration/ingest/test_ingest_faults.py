"""Fault tests on real Mosquitto and PostgreSQL: ingester kill -9 mid-batch, database paused
(SIGSTOP 30 s) and restarted. Each prints its ledger line."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ingest_support import AckWatcher, Publisher, ledger, make_readings, running
from pg_cluster import pg_cluster

from cloud_ingest.store import Store, open_store
from contracts.reading import Reading
from tests.support.services import Mosquitto, free_port, pg_database

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


class IngestProcess:
    """``citywatch ingest`` as a child process with its own config file."""

    def __init__(self, tmp: Path, broker_url: str, store_url: str, client_id: str, **ingest: object) -> None:
        self.metrics_port = free_port()
        lines = [
            f"mqtt:\n  url: {broker_url}\n",
            "ingest:\n",
            f"  store_url: '{store_url}'\n",
            f"  client_id: {client_id}\n",
            f"  metrics_port: {self.metrics_port}\n",
        ]
        lines += [f"  {k}: {v}\n" for k, v in ingest.items()]
        self.config = tmp / f"{client_id}.yaml"
        self.config.write_text("".join(lines))
        self.log = tmp / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ)
        self.ack_delay_s = 0.0  # > 0: run through the fault harness (tests/support/faults.py)

    def start(self) -> None:
        cmd = [sys.executable, "-m", "citywatch", "ingest", "-c", str(self.config)]
        if self.ack_delay_s:
            cmd = [sys.executable, "-m", "tests.support.faults", "ingest", "--ack-delay-s", str(self.ack_delay_s),
                   "-c", str(self.config)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    def scrape(self) -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    def metric(self, name: str, text: str | None = None) -> float:
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text if text is not None else self.scrape(), re.M)
        return float(m.group(1)) if m else 0.0

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.scrape():
                return
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
            time.sleep(0.05)
        raise AssertionError("ingester did not come up")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def publish_in_background(
    pub: Publisher, plan: list[tuple[str, str, int, list[Reading]]], rate_hz: float
) -> threading.Thread:
    def run() -> None:
        t_next = time.monotonic()
        for gw, boot, seq, rs in plan:
            pub.telemetry(gw, boot, seq, rs)
            t_next += 1.0 / rate_hz
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pub.wait(120)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def stored_identities(store: Store, t0: float, t1: float) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    for c in store.iter_readings(t0, t1):
        out.extend(zip(c.device.tolist(), c.metric.tolist(), c.ts.tolist(), strict=True))
    return out


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    with pg_database() as dsn:
        yield dsn


def test_kill9_mid_batch_stores_every_reading_once(
    broker: Mosquitto, tmp_path: Path, fresh_pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.time() - 600
    gws = ["gw-k1", "gw-k2"]
    per_gw = 150
    plan = []
    expected: set[tuple[str, str, float]] = set()
    for gi, gw in enumerate(gws):
        for seq, rs in enumerate(make_readings(gi, per_gw, 50, t0), start=1):
            plan.append((gw, "boot1", seq, rs))
            expected.update((r.device, r.metric, r.ts) for r in rs)
    plan.sort(key=lambda p: p[2])  # interleave the gateways
    generated = len(expected)
    ing = IngestProcess(tmp_path, broker.url, fresh_pg, "ingest-kill", linger_ms=30, batch_max_readings=1000, writers=2)
    ing.ack_delay_s = 0.05  # widen commit->ack so kills land between them
    watcher = AckWatcher(broker.host, broker.port)
    pub = Publisher(broker.host, broker.port)
    rng = random.Random(7)
    kills = 0
    dup_seen = 0.0
    try:
        ing.start()
        ing.wait_ready()
        th = publish_in_background(pub, plan, rate_hz=60)  # ~5 s of traffic
        while kills < 6:
            time.sleep(rng.uniform(0.3, 0.8))
            dup_seen += ing.metric('citywatch_ingest_readings_total{result="duplicate"}')
            ing.kill9()
            kills += 1
            ing.start()
            ing.wait_ready()
        th.join(60)
        for gw in gws:
            assert watcher.wait_for(gw, "boot1", per_gw, 60), f"ack watermark of {gw}: {watcher.acks}"
        dup_seen += ing.metric('citywatch_ingest_readings_total{result="duplicate"}')
        ing.stop()
        store = open_store(fresh_pg)
        try:
            got = stored_identities(store, t0 - 1, t0 + 3600)
        finally:
            store.close()
        dup_after = len(got) - len(set(got))
        ledger(
            capsys,
            "I1 ingester kill -9",
            generated,
            len(set(got) & expected),
            dup_before=int(dup_seen),
            dup_after=dup_after,
            kills=kills,
            unexpected=len(set(got) - expected),
        )
        assert set(got) == expected
        assert dup_after == 0
        assert kills >= 5
    finally:
        ing.stop()
        pub.close()
        watcher.close()


def test_database_paused_30s_then_restarted(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pg_cluster() as pg:
        t0 = time.time() - 600
        msgs = 1000
        plan = [("gw-p", "boot1", seq, rs) for seq, rs in enumerate(make_readings(0, msgs, 50, t0), start=1)]
        expected = {(r.device, r.metric, r.ts) for _, _, _, rs in plan for r in rs}
        ing = IngestProcess(
            tmp_path, broker.url, pg.dsn, "ingest-pause", receive_maximum=100, stall_warn_s=2, retry_max_s=1
        )
        watcher = AckWatcher(broker.host, broker.port)
        pub = Publisher(broker.host, broker.port)
        try:
            ing.start()
            ing.wait_ready()
            th = publish_in_background(pub, plan, rate_hz=20)  # 50 s of traffic at 1000 readings/s
            time.sleep(3)
            rss_before = ing.rss_kb()
            pg.signal_all(signal.SIGSTOP)
            peak_rss, peak_unacked = rss_before, 0.0
            pause_end = time.monotonic() + 30
            while time.monotonic() < pause_end:
                time.sleep(1)
                peak_rss = max(peak_rss, ing.rss_kb())
                peak_unacked = max(peak_unacked, ing.metric("citywatch_ingest_unacked_messages"))
            pg.signal_all(signal.SIGCONT)
            time.sleep(3)
            pg.restart_immediate()  # and a crash-like restart: connections drop, WAL recovery
            th.join(90)
            assert watcher.wait_for("gw-p", "boot1", msgs, 120), f"watermark {watcher.acks}"
            assert ing.proc is not None and ing.proc.poll() is None, "the ingester recovered without a restart"
            store = open_store(pg.dsn)
            try:
                got = stored_identities(store, t0 - 1, t0 + 3600)
            finally:
                store.close()
            growth_mb = (peak_rss - rss_before) / 1024
            ledger(
                capsys,
                "I2 PostgreSQL SIGSTOP 30 s + immediate restart",
                len(expected),
                len(set(got) & expected),
                dup_after=len(got) - len(set(got)),
                rss_growth_mb=round(growth_mb, 1),
                peak_unacked=int(peak_unacked),
                rss_mb=round(peak_rss / 1024, 1),
            )
            assert set(got) == expected and len(got) == len(expected)
            assert peak_unacked <= 100 + 1  # receive_maximum bounds what the ingester holds
            assert growth_mb < 64
        finally:
            ing.stop()
            pub.close()
            watcher.close()


async def test_stop_while_database_down_leaves_messages_to_the_next_run(
    broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM during an outage exits promptly without acknowledging; the next run commits them."""
    with pg_cluster() as pg:
        t0 = time.time() - 600
        batches = make_readings(5, 20, 10, t0)
        watcher = AckWatcher(broker.host, broker.port)
        pub = Publisher(broker.host, broker.port)
        store = open_store(pg.dsn)
        try:
            ing_id = "ingest-restart"
            async with running(broker.url, store, client_id=ing_id, retry_max_s=0.5) as ing:
                for seq in range(1, 11):
                    pub.telemetry("gw-d", "b1", seq, batches[seq - 1])
                await asyncio.to_thread(pub.wait)
                assert await asyncio.to_thread(watcher.wait_for, "gw-d", "b1", 10)
                await asyncio.to_thread(pg.stop, "fast")
                for seq in range(11, 21):
                    pub.telemetry("gw-d", "b1", seq, batches[seq - 1])
                await asyncio.to_thread(pub.wait)
                await asyncio.sleep(1.0)
                assert ing.metrics.store_up._value.get() == 0
                t_stop = time.monotonic()
            assert time.monotonic() - t_stop < 10
            assert watcher.acks["gw-d"]["b1"] == 10
            await asyncio.to_thread(pg.start)
            async with running(broker.url, store, client_id=ing_id):
                assert await asyncio.to_thread(watcher.wait_for, "gw-d", "b1", 20)
            got = stored_identities(store, t0 - 1, t0 + 3600)
            ledger(capsys, "stop during DB outage, next run", 200, len(set(got)), dup_after=len(got) - len(set(got)))
            assert len(got) == len(set(got)) == 200
        finally:
            store.close()
            pub.close()
            watcher.close()
