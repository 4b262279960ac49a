"""Helpers for the ingest integration tests: a QoS 1 publisher, an ack watcher, an in-process
ingester, generated readings and the ledger line."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.config import IngestSettings
from cloud_ingest.service import Ingester
from cloud_ingest.store import Store
from contracts import topics
from contracts.config import MqttSettings
from contracts.payloads import decode_ack, encode_telemetry
from contracts.reading import Reading


def make_readings(gw_index: int, n_msgs: int, per_msg: int, t0: float) -> list[list[Reading]]:
    """``n_msgs`` batches of ``per_msg`` readings with distinct identities (one device per batch slot)."""
    out = []
    for m in range(n_msgs):
        out.append(
            [
                Reading(f"wl-{gw_index}-{k}", "depth", round(t0 + m * 0.5, 3), float(m * 1000 + k), "m")
                for k in range(per_msg)
            ]
        )
    return out


class Publisher:
    """A paho QoS 1 publisher that waits for every PUBACK."""

    def __init__(self, host: str, port: int, client_id: str | None = None, v5: bool = True) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=1, retain=retain))

    def telemetry(self, gw: str, boot: str, seq: int, readings: list[Reading]) -> None:
        self.publish(topics.telemetry(gw), encode_telemetry(gw, boot, seq, readings))

    def wait(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for info in self.infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        self.infos.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class AckWatcher:
    """Subscribes to the retained ack watermarks."""

    host: str
    port: int
    v5: bool = True
    acks: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(self.host, self.port)
        self.client.subscribe("citywatch/v1/gw/+/ack", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        gw, _ = topics.parse_gw_topic(msg.topic)
        with self.lock:
            self.acks[gw] = decode_ack(bytes(msg.payload))

    def wait_for(self, gw: str, boot: str, seq: int, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.acks.get(gw, {}).get(boot, -1) >= seq:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def settings(**kw: object) -> IngestSettings:
    base: dict[str, object] = {
        "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        "metrics_port": 0,
        "linger_ms": 20,
        "gap_grace_s": 0.5,
    }
    base.update(kw)
    return IngestSettings.model_validate(base)


@contextlib.asynccontextmanager
async def running(url: str, store: Store, mqtt_protocol: str = "5", **kw: object) -> AsyncIterator[Ingester]:
    """An in-process ingester, subscribed before the body runs, stopped and drained after."""
    ing = Ingester(MqttSettings.model_validate({"url": url, "protocol": mqtt_protocol}), settings(**kw), store)
    ing.ready_event = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(ing.run(stop))
    try:
        await asyncio.wait_for(ing.ready_event.wait(), 10)
        yield ing
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_until(pred: object, timeout_s: float = 30.0) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def ledger(
    capsys: object,
    name: str,
    generated: int,
    stored: int,
    dead_lettered: int = 0,
    dup_before: int = 0,
    dup_after: int = 0,
    **extra: object,
) -> str:
    """Print the ledger line past pytest's capture (``capsys`` fixture), so every run shows it."""
    lost = generated - stored
    more = "".join(f", {k} {v}" for k, v in extra.items())
    line = (
        f"LEDGER {name}: generated {generated}, stored {stored}, lost {lost}, dead_lettered {dead_lettered}, "
        f"dup_before_dedup {dup_before}, dup_after_dedup {dup_after}{more}"
    )
    with capsys.disabled():  # type: ignore[attr-defined]
        print("\n" + line)
    return line


def count_rows(store: Store, t0: float, t1: float) -> int:
    return sum(len(c) for c in store.iter_readings(t0, t1))


def identities(store: Store, t0: float, t1: float) -> Iterable[tuple[str, str, float, float]]:
    for c in store.iter_readings(t0, t1):
        yield from zip(c.device.tolist(), c.metric.tolist(), c.ts.tolist(), c.value.tolist(), strict=True)
