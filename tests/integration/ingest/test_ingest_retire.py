"""A renamed ingester's old ``$share`` session keeps taking every second message on Mosquitto until it
expires; ``citywatch ingest --retire OLD_ID`` discards it so the group's live member gets them all."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_ingest.retire import retire_session
from contracts.config import MqttSettings
from tests.support.services import Mosquitto

pytestmark = pytest.mark.integration
SHARED = "$share/ingest/citywatch/v1/gw/+/telemetry"


def member(port: int, client_id: str) -> tuple[mqtt.Client, list[bytes]]:
    got: list[bytes] = []
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c.on_subscribe = lambda *_a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe(SHARED, qos=1)
    assert subscribed.wait(10)
    return c, got


def publish(port: int, n: int, tag: str) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish("citywatch/v1/gw/gw-1/telemetry", f"{tag}{i}".encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_retiring_the_old_session_gives_the_live_member_every_message(broker: Mosquitto) -> None:
    old, _ = member(broker.port, "ingest-old")
    old.disconnect()  # renamed: the process is gone, its persistent session is not
    old.loop_stop()
    new, got = member(broker.port, "ingest-new")
    try:
        publish(broker.port, 20, "a")
        time.sleep(1.0)
        before = len(got)
        retire_session(MqttSettings(url=broker.url), "ingest-old")
        got.clear()
        publish(broker.port, 20, "b")
        deadline = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"live member got {before}/20 while the old session existed, {len(got)}/20 after retiring it")
        assert before < 20  # the problem is real: the orphan session took its share
        assert len(got) == 20
    finally:
        new.disconnect()
        new.loop_stop()
