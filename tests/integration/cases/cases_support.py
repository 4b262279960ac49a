"""Helpers for the case-bridge integration tests: the shared fixtures plus MQTT helpers."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.cases import (
    COVER_GAS,
    COVER_UNKNOWN,
    COVER_WATER,
    CST,
    GAUGE,
    LAMP_A,
    LAMP_B,
    T0,
    alarm,
    pg_store,
    sqlite_store,
)

__all__ = [
    "COVER_GAS",
    "COVER_UNKNOWN",
    "COVER_WATER",
    "CST",
    "GAUGE",
    "LAMP_A",
    "LAMP_B",
    "T0",
    "Collector",
    "alarm",
    "mqtt_client",
    "pg_store",
    "publish_all",
    "sqlite_store",
]


def mqtt_client(port: int, client_id: str = "") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish_all(port: int, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait until the broker has them all."""
    c = mqtt_client(port)
    try:
        infos = [c.publish(t, p, qos=1, retain=r) for t, p, r in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


class Collector:
    """Subscribes to a filter and keeps the last payload per topic."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.last: dict[str, bytes] = {}
        self.q: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.last[msg.topic] = bytes(msg.payload)
        self.q.put((msg.topic, bytes(msg.payload)))

    def wait_for(self, topic: str, pred: object, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            payload = self.last.get(topic)
            if payload is not None and pred(payload):  # type: ignore[operator]
                return payload
            time.sleep(0.02)
        raise TimeoutError(f"no matching message on {topic}: last {self.last.get(topic)!r}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
