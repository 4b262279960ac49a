"""Helpers for the rule runner's integration tests: a collecting MQTT client and payload builders."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contracts.alarms import AlarmTransition
from contracts.payloads import decode_alarm


class Collector:
    """Subscribes to all alarm transitions and keeps them (thread-safe)."""

    def __init__(self, host: str, port: int, topic: str = "citywatch/v1/alarms/+") -> None:
        self.items: list[AlarmTransition] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._ready.wait(10), "collector did not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.items.append(decode_alarm(msg.payload))

    def snapshot(self) -> list[AlarmTransition]:
        with self._lock:
            return list(self.items)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(host: str, port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(host, port)
    c.loop_start()
    return c


def wait_for(cond: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
