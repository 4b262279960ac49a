"""The ingester end to end against a real Mosquitto: store, ack watermark, registry, gaps, metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from ingest_support import AckWatcher, Publisher, ledger, make_readings, running, wait_until

from cloud_ingest.store import open_store
from contracts import topics
from contracts.payloads import Status, encode_events, encode_status
from contracts.reading import DeviceInfo, Event
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration


async def test_stores_acks_and_learns_registry(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(f"sqlite:///{tmp_path}/cw.db")
    t0 = time.time() - 60
    watcher = AckWatcher(broker.host, broker.port)
    pub = Publisher(broker.host, broker.port)
    try:
        async with running(broker.url, store) as ing:
            devs = [DeviceInfo("wl-0-0", "radar", "water_gauge", lat=30.2, lon=120.1)]
            pub.publish(topics.status("gw-a"), encode_status(Status("online", "b1", "0.1", devs)), retain=True)
            batches = make_readings(0, 20, 10, t0)
            for seq, rs in enumerate(batches, start=1):
                pub.telemetry("gw-a", "b1", seq, rs)
            wim = Event(
                "wim-1", "vehicle", "18452", round(t0 + 3, 3), {"lane": 1, "gross_kg": 52300, "axle_kg": [7100, 9800]}
            )
            pub.publish(topics.events("gw-a"), encode_events("gw-a", "b1", 21, [wim]))  # one seq across both kinds
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-a", "b1", 21)
            assert store.events(t0, t0 + 10) == [wim]
            await wait_until(lambda: sum(len(c) for c in store.iter_readings(t0 - 1, t0 + 100)) == 200)
            [gw] = store.gateways()
            assert gw.online and gw.boot == "b1"
            assert store.devices()[0].last_seen == pytest.approx(t0 + 19 * 0.5)
            assert ing.metrics_port
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{ing.metrics_port}/metrics")).text
            assert 'citywatch_ingest_readings_total{result="inserted"} 200.0' in text
            ledger(capsys, "flow", 200, 200)
    finally:
        pub.close()
        watcher.close()
        store.close()


async def test_gap_detected_and_watermark_stops_below_it(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(f"sqlite:///{tmp_path}/cw.db")
    t0 = time.time() - 60
    watcher = AckWatcher(broker.host, broker.port)
    pub = Publisher(broker.host, broker.port)
    try:
        async with running(broker.url, store, gap_grace_s=0.3):
            batches = make_readings(1, 6, 2, t0)
            for seq in (1, 2, 3, 5, 6):  # 4 lost in transit
                pub.telemetry("gw-b", "b1", seq, batches[seq - 1])
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-b", "b1", 3)
            await wait_until(lambda: len(store.gaps("gw-b", open_only=True)) == 1, 10)
            [gap] = store.gaps("gw-b")
            assert (gap.boot, gap.first_seq, gap.last_seq) == ("b1", 4, 4)
            assert watcher.acks["gw-b"]["b1"] == 3
            pub.telemetry("gw-b", "b1", 4, batches[3])  # the edge resends it
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-b", "b1", 6)
            await wait_until(lambda: not store.gaps("gw-b", open_only=True), 10)
    finally:
        pub.close()
        watcher.close()
        store.close()


async def test_two_ingesters_share_the_load_and_the_watermark(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """$share/ingest/...: each message goes to one ingester; the watermark still covers all (via the store)."""
    db = f"sqlite:///{tmp_path}/shared.db"
    store_a, store_b = open_store(db), open_store(db)
    t0 = time.time() - 60
    watcher = AckWatcher(broker.host, broker.port)
    pub = Publisher(broker.host, broker.port)
    try:
        async with running(broker.url, store_a) as ing_a, running(broker.url, store_b) as ing_b:
            for seq, rs in enumerate(make_readings(2, 100, 5, t0), start=1):
                pub.telemetry("gw-s", "b1", seq, rs)
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-s", "b1", 100)
            a = ing_a.metrics.messages.labels("telemetry")._value.get()
            b = ing_b.metrics.messages.labels("telemetry")._value.get()
            assert a > 0 and b > 0 and a + b == 100
            stored = sum(len(c) for c in store_a.iter_readings(t0 - 1, t0 + 100))
            ledger(capsys, "shared subscription, 2 ingesters", 500, stored, split=f"{int(a)}/{int(b)}")
            assert stored == 500
    finally:
        pub.close()
        watcher.close()
        store_a.close()
        store_b.close()


async def test_mqtt_311_client_mode(broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mqtt.protocol "3.1.1" (brokers without MQTT 5, e.g. the embedded amqtt): same ingest, same watermark."""
    store = open_store(f"sqlite:///{tmp_path}/cw.db")
    t0 = time.time() - 60
    watcher = AckWatcher(broker.host, broker.port)
    pub = Publisher(broker.host, broker.port)
    try:
        async with running(broker.url, store, mqtt_protocol="3.1.1", share_group=None):
            for seq, rs in enumerate(make_readings(4, 10, 5, t0), start=1):
                pub.telemetry("gw-v3", "b1", seq, rs)
            await asyncio.to_thread(pub.wait)
            assert await asyncio.to_thread(watcher.wait_for, "gw-v3", "b1", 10)
            stored = sum(len(c) for c in store.iter_readings(t0 - 1, t0 + 100))
            ledger(capsys, "MQTT 3.1.1 client mode", 50, stored)
            assert stored == 50
    finally:
        pub.close()
        watcher.close()
        store.close()
