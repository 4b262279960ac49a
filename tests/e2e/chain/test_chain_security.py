"""Security of the production layout: per-gateway credentials + the shipped ACL at the broker, and
the ingester's own check that a payload's ``gw`` is its topic's gateway (defence in depth: it
holds even on a broker that lets anyone publish anything)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from contracts import topics
from contracts.payloads import encode_telemetry
from contracts.reading import Reading
from tests.support.chain import SERVICES, Proc, citywatch_argv, secure_broker
from tests.support.services import free_port, mosquitto, pg_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class Client:
    """A synchronous MQTT 5 test client that records CONNACK/PUBACK/SUBACK reason codes."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.connack: Any = None
        self.pubacks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.event = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.port = port

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        with self.event:
            self.connack = rc
            self.event.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any = None) -> None:
        with self.event:
            self.pubacks[mid] = rc
            self.event.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: list[Any], _p: Any = None) -> None:
        with self.event:
            self.subacks[mid] = rcs
            self.event.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.event:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.event.notify_all()

    def _wait(self, pred: Any, timeout_s: float = 5.0) -> Any:
        with self.event:
            assert self.event.wait_for(pred, timeout_s), "no answer from the broker"

    def connect(self) -> int:
        self.c.connect("127.0.0.1", self.port, keepalive=10)
        self.c.loop_start()
        self._wait(lambda: self.connack is not None)
        return int(self.connack.value)

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.c.publish(topic, payload, qos=1)
        self._wait(lambda: info.mid in self.pubacks)
        return int(self.pubacks[info.mid].value)

    def subscribe(self, topic: str) -> int:
        _rc, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        self._wait(lambda: mid in self.subacks)
        return int(self.subacks[mid][0].value)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _batch(gw: str, device: str, payload_gw: str | None = None, seq: int = 1) -> bytes:
    r = Reading(device, "depth", round(time.time(), 3), 0.05, "m")
    return encode_telemetry(payload_gw or gw, "boot-1", seq, [r])


NOT_AUTHORIZED = 0x87


def test_chain_broker_refuses_anonymous_and_keeps_each_gateway_in_its_own_topics(tmp_path: Path) -> None:
    broker, pw = secure_broker(tmp_path / "broker", [*SERVICES, "gw-a", "gw-b"])
    broker.start()
    try:
        anon = Client(broker.port)
        assert anon.connect() != 0, "anonymous client was let in"
        anon.c.loop_stop()
        wrong = Client(broker.port, "gw-a", "not-the-password")
        assert wrong.connect() != 0, "wrong password accepted"
        wrong.c.loop_stop()

        watcher = Client(broker.port, "cw-ingest", pw["cw-ingest"])  # reads every gateway's uplink
        assert watcher.connect() == 0
        assert watcher.subscribe("citywatch/v1/gw/+/telemetry") < 0x80

        def as_gw_a(op: str, topic: str, payload: bytes = b"{}") -> int | None:
            """One operation on a fresh connection of gw-a: Mosquitto 2.0.11 drops a v5 client right
            after answering a denied PUBLISH with PUBACK 0x87 (and answers a denied SUBSCRIBE by
            dropping it), so each probe gets its own connection. None: dropped without an answer."""
            cl = Client(broker.port, "gw-a", pw["gw-a"])
            assert cl.connect() == 0
            try:
                return cl.publish(topic, payload) if op == "pub" else cl.subscribe(topic)
            except AssertionError:
                return None
            finally:
                cl.close()

        # its own topics: accepted (0x00 or 0x10 "no matching subscribers")
        assert (as_gw_a("pub", topics.telemetry("gw-a"), _batch("gw-a", "wl-a")) or 0) < 0x80
        # another gateway's topics: denied at the broker with MQTT 5 reason 0x87
        assert as_gw_a("pub", topics.telemetry("gw-b"), _batch("gw-b", "wl-b")) == NOT_AUTHORIZED
        assert as_gw_a("pub", topics.events("gw-b"), b"{}") == NOT_AUTHORIZED
        assert as_gw_a("pub", topics.status("gw-b"), b'{"v":1,"state":"offline","boot":"x"}') == NOT_AUTHORIZED
        assert as_gw_a("pub", topics.cmd_result("gw-b"), b"{}") == NOT_AUTHORIZED
        # nor cloud topics: a gateway cannot forge alarms or its own ack watermark
        assert as_gw_a("pub", topics.alarms("wl-b"), b"{}") == NOT_AUTHORIZED
        assert as_gw_a("pub", topics.ack("gw-a"), b'{"v":1,"acked":{"boot-1":99}}') == NOT_AUTHORIZED
        # and cannot read another gateway's commands: Mosquitto grants the SUBSCRIBE (or refuses
        # it, depending on version) but never delivers a message the ACL does not let it read
        reader = Client(broker.port, "gw-a", pw["gw-a"])
        assert reader.connect() == 0
        reader.subscribe(topics.cmd("gw-b"))
        assert reader.subscribe(topics.cmd("gw-a")) < 0x80
        console = Client(broker.port, "cw-console", pw["cw-console"])
        assert console.connect() == 0
        assert console.publish(topics.cmd("gw-b"), b'{"v":1,"id":"c1","device":"lamp-b","action":"on"}') < 0x80
        assert console.publish(topics.cmd("gw-a"), b'{"v":1,"id":"c2","device":"lamp-a","action":"on"}') < 0x80
        reader._wait(lambda: len(reader.messages) >= 1)
        time.sleep(0.3)
        assert [t for t, _ in reader.messages] == [topics.cmd("gw-a")], reader.messages
        reader.close()
        console.close()

        # a fence: once gw-a's own status is routed, everything published before it has been
        assert watcher.subscribe("citywatch/v1/gw/+/status") < 0x80
        assert (as_gw_a("pub", topics.status("gw-a"), b'{"v":1,"state":"offline","boot":"x"}') or 0) < 0x80
        watcher._wait(lambda: any(t == topics.status("gw-a") for t, _ in watcher.messages))
        seen = [t for t, _ in watcher.messages]
        assert seen == [topics.telemetry("gw-a"), topics.status("gw-a")], seen
        watcher.close()
    finally:
        broker.stop()


def test_chain_ingester_dead_letters_a_payload_whose_gw_is_not_its_topics_on_a_permissive_broker(
    tmp_path: Path,
) -> None:
    (tmp_path / "mq").mkdir()
    with mosquitto(tmp_path / "mq", allow_anonymous=True) as broker, pg_database() as dsn:
        cfg = tmp_path / "cloud-ingest.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"url": broker.url},
                    "ingest": {"store_url": dsn, "client_id": "sec-ingest", "share_group": None,
                               "linger_ms": 10, "metrics_port": free_port()},
                }
            )
        )
        ingest = Proc("ingest", citywatch_argv("ingest", "-c", str(cfg)), tmp_path / "ingest.log")
        ingest.start()
        try:
            pub = Client(broker.port)  # anyone may publish anything on this broker
            assert pub.connect() == 0
            time.sleep(1.5)  # the ingester subscribes
            assert pub.publish(topics.telemetry("gw-a"), _batch("gw-a", "wl-a", payload_gw="gw-b")) < 0x80
            assert pub.publish(topics.telemetry("gw-a"), _batch("gw-a", "wl-a", seq=2)) < 0x80  # control

            def rows() -> tuple[list[Any], int]:
                with psycopg.connect(dsn) as conn:
                    dead = conn.execute("SELECT gw, reason, topic FROM dead_letters").fetchall()
                    stored = conn.execute("SELECT count(*) FROM readings").fetchone()
                return dead, int(stored[0]) if stored else 0

            deadline = time.monotonic() + 20
            dead: list[Any] = []
            stored = 0
            while time.monotonic() < deadline:
                try:
                    dead, stored = rows()
                except psycopg.Error:
                    dead, stored = [], 0
                if dead and stored:
                    break
                time.sleep(0.2)
            assert dead == [("gw-a", "gw_mismatch", topics.telemetry("gw-a"))], (dead, ingest.tail())
            assert stored == 1, "only the honest batch is stored"
            pub.close()
        finally:
            ingest.stop()
