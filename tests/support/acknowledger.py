"""Test stand-in for the cloud ingester's commit-then-ack: record batches, publish the watermark.

Test support, not product code. It subscribes to a gateway's telemetry and events, records every reading
and event identity (counting duplicates), and publishes the retained ``.../ack`` watermark:
the highest *contiguous* seq per boot, counted from seq 1. ``drop_next`` makes it lose whole
batches (a broker or ingester dropping a message) and ``paused`` stops acking (ingester down),
so the agent's resend paths can be exercised against a real broker.

It is built by the project's client factory (:func:`mqttlink.client.new_client`) and runs paho's
network thread (``loop_start``), so synchronous tests can drive it without an event loop.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import PayloadError
from contracts.payloads import ts_ms
from mqttlink.client import new_client, subscriptions


@dataclass(frozen=True)
class LedgerLine:
    generated: int
    stored: int
    lost: int
    dup_before_dedup: int
    dup_after_dedup: int
    dropped_by_policy: int

    def line(self, label: str) -> str:
        return (f"{label}: generated {self.generated}, stored {self.stored}, lost {self.lost}, "
                f"dup_before_dedup {self.dup_before_dedup}, dup_after_dedup {self.dup_after_dedup}, "
                f"dropped_by_policy {self.dropped_by_policy}")


class Acknowledger:
    def __init__(self, host: str, port: int, gw: str, client_id: str = "cw-test-acker", mqtt5: bool = True) -> None:
        self.gw = gw
        self.lock = threading.Lock()
        self.readings: Counter[tuple[str, str, int]] = Counter()
        self.total_readings = 0
        self.events: Counter[tuple[str, str, str]] = Counter()
        self.seqs: dict[str, set[int]] = {}
        self.watermark: dict[str, int] = {}
        self.messages = 0
        self.dead_letters: list[str] = []
        self.drop_next = 0
        self.dropped_batches: list[tuple[str, int]] = []
        self.paused = False
        self.ack_delay_s = 0.0  # a cloud running behind: each ack goes out this long after its batch arrived
        self.boots_kept: int | None = None  # like the ingester: list only the N most recent boots
        self._boot_order: list[str] = []
        self.status: list[payloads.Status] = []
        self.cmd_results: list[payloads.CommandResult] = []
        self._settings = MqttSettings(url=f"mqtt://{host}:{port}", keepalive_s=10, protocol="5" if mqtt5 else "3.1.1")
        self._c, connect = new_client(self._settings, client_id, persistent=False)
        self._c.on_message = self._on_message
        self._c.on_connect = self._on_connect
        self._connected = threading.Event()
        self._c.connect(**connect)
        self._c.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("acknowledger could not connect")

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        gw = self.gw
        filters = [topics.telemetry(gw), topics.events(gw), topics.status(gw), topics.cmd_result(gw)]
        c.subscribe(subscriptions(self._settings, filters))
        self._connected.set()

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        raw = bytes(msg.payload)
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            if msg.topic == topics.status(self.gw):
                with self.lock:
                    self.status.append(payloads.decode_status(raw))
                return
            if msg.topic == topics.cmd_result(self.gw):
                with self.lock:
                    self.cmd_results.append(payloads.decode_command_result(raw))
                return
            batch = (payloads.decode_telemetry(raw) if kind == "telemetry"
                     else payloads.decode_events(raw))
        except PayloadError as exc:
            with self.lock:
                self.dead_letters.append(exc.reason)
            return
        with self.lock:
            if self.drop_next > 0:
                self.drop_next -= 1
                self.dropped_batches.append((batch.boot, batch.seq))
                return
            self.messages += 1
            readings = self.readings
            for r in batch.readings:
                readings[(r.device, r.metric, ts_ms(r.ts))] += 1
            self.total_readings += len(batch.readings)
            for e in batch.events:
                self.events[(e.device, e.kind, e.id)] += 1
            if batch.boot not in self._boot_order:
                self._boot_order.append(batch.boot)
            seqs = self.seqs.setdefault(batch.boot, set())
            seqs.add(batch.seq)
            wm = self.watermark.get(batch.boot, 0)
            while wm + 1 in seqs:
                wm += 1
            advanced = wm != self.watermark.get(batch.boot, 0)
            self.watermark[batch.boot] = wm
            ack = self._ack_payload()
            paused = self.paused
        if advanced and not paused:
            if self.ack_delay_s > 0:
                timer = threading.Timer(self.ack_delay_s, c.publish, (topics.ack(self.gw), payloads.encode_ack(ack)),
                                        {"qos": 1, "retain": True})
                timer.daemon = True
                timer.start()
            else:
                c.publish(topics.ack(self.gw), payloads.encode_ack(ack), qos=1, retain=True)

    def _ack_payload(self) -> dict[str, int]:
        boots = self._boot_order if self.boots_kept is None else self._boot_order[-self.boots_kept:]
        return {b: self.watermark[b] for b in boots if self.watermark.get(b, 0) > 0}

    def publish_ack(self) -> None:
        """Re-publish the current watermark (e.g. after un-pausing)."""
        with self.lock:
            ack = self._ack_payload()
        self._c.publish(topics.ack(self.gw), payloads.encode_ack(ack), qos=1, retain=True)

    def publish(self, topic: str, payload: bytes) -> None:
        self._c.publish(topic, payload, qos=1)

    def stored(self) -> set[tuple[str, str, int]]:
        with self.lock:
            return set(self.readings)

    def received_total(self) -> int:
        with self.lock:
            return self.total_readings

    def wait_for(self, pred: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return bool(pred())

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()
