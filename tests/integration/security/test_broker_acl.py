"""The shipped broker ACL and credentials, on a real Mosquitto: per-gateway isolation, no anonymous.

Uses configs/mosquitto/citywatch.acl and scripts/add-gateway.sh exactly as an operator would.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.services import Mosquitto, free_port, missing, mosquitto

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def _make_tls(tmp: Path) -> None:
    if shutil.which("openssl") is None:
        missing("openssl not found")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=citywatch-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.crt")


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, dict[str, str], Path]]:
    passwd = tmp_path / "passwd"
    creds: dict[str, str] = {}
    for ident in ("gw-a", "gw-b", "cw-ingest", "cw-cases", "cw-console"):
        out = subprocess.run([str(REPO / "scripts/add-gateway.sh"), str(passwd), ident], check=True,
                             capture_output=True, text=True).stdout.split()
        creds[out[0]] = out[1]
    _make_tls(tmp_path)
    tls_port = free_port()
    extra = (
        f"password_file {passwd}\n"
        f"acl_file {REPO / 'configs/mosquitto/citywatch.acl'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n"
    )
    work = tmp_path / "broker"
    work.mkdir()
    with mosquitto(work, extra_conf=extra, allow_anonymous=False) as broker:
        yield broker, tls_port, creds, tmp_path / "ca.crt"


class Probe:
    """A blocking paho client for assertions: records connect codes, PUBACK codes and messages."""

    def __init__(self, user: str | None, password: str | None, proto: int = mqtt.MQTTv5) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto, client_id=f"probe-{user}")
        if user:
            self.client.username_pw_set(user, password)
        self.connected = threading.Event()
        self.connect_rc: ReasonCode | None = None
        self.puback: dict[int, int] = {}
        self.puback_ev = threading.Event()
        self.suback: list[int] = []
        self.suback_ev = threading.Event()
        self.messages: list[str] = []
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.messages.append(m.topic)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: ReasonCode, props: Properties | None) -> None:
        self.connect_rc = rc
        self.connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, props: Properties | None) -> None:
        self.puback[mid] = rc.value
        self.puback_ev.set()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[ReasonCode], props: Properties | None) -> None:
        self.suback = [r.value for r in rcs]
        self.suback_ev.set()

    def connect(self, port: int, tls_ca: Path | None = None) -> int:
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"
        assert self.connect_rc is not None
        return int(self.connect_rc.value)

    def publish(self, topic: str) -> int:
        self.puback_ev.clear()
        info = self.client.publish(topic, b'{"v":1}', qos=1)
        assert self.puback_ev.wait(5), "no PUBACK"
        return self.puback[info.mid]

    def subscribe(self, topic: str) -> list[int] | None:
        """SUBACK codes, or None when the broker dropped the connection instead of answering."""
        self.suback_ev.clear()
        self.client.subscribe(topic, qos=1)
        return self.suback if self.suback_ev.wait(3) else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_and_wrong_password_are_refused(secured: tuple[Mosquitto, int, dict[str, str], Path]) -> None:
    broker, _, _, _ = secured
    anon = Probe(None, None)
    assert anon.connect(broker.port) == 135  # Not authorized
    anon.close()
    wrong = Probe("gw-a", "not-the-password")
    assert wrong.connect(broker.port) in (134, 135)  # Bad user name or password / Not authorized
    wrong.close()


def test_gateway_cannot_write_or_read_another_gateways_topics(
    secured: tuple[Mosquitto, int, dict[str, str], Path],
) -> None:
    broker, _, creds, _ = secured
    ingest = Probe("cw-ingest", creds["cw-ingest"])
    assert ingest.connect(broker.port) == 0
    assert ingest.subscribe("citywatch/v1/gw/+/telemetry") == [1]

    gw_a = Probe("gw-a", creds["gw-a"])
    assert gw_a.connect(broker.port) == 0
    assert gw_a.publish("citywatch/v1/gw/gw-a/telemetry") < 0x80  # 0x10: no subscribers is success
    assert gw_a.publish("citywatch/v1/gw/gw-b/telemetry") == 0x87  # not authorized: the agent keeps its rows
    assert gw_a.publish("citywatch/v1/alarms/wl-0001") == 0x87
    # Mosquitto 2.0.11 answers a denied v5 subscription by dropping the connection; later ones send 0x87
    assert gw_a.subscribe("citywatch/v1/gw/gw-b/cmd") in ([0x87], None)
    gw_a.close()
    gw_a = Probe("gw-a", creds["gw-a"])
    assert gw_a.connect(broker.port) == 0
    assert gw_a.subscribe("citywatch/v1/gw/gw-a/cmd") == [1]

    gw_a.publish("citywatch/v1/gw/gw-a/status")  # a fence: everything before it has been routed
    ingest.client.subscribe("citywatch/v1/gw/+/status", qos=1)
    gw_a.close()
    ingest.close()
    assert "citywatch/v1/gw/gw-b/telemetry" not in ingest.messages
    assert "citywatch/v1/gw/gw-a/telemetry" in ingest.messages


def test_lamp_commands_only_from_the_console_and_the_lamp_scheduler(
    secured: tuple[Mosquitto, int, dict[str, str], Path],
) -> None:
    """The console (lamp control) and the case bridge's lamp scheduler may command a gateway; ingest may not."""
    broker, _, creds, _ = secured
    for user in ("cw-console", "cw-cases"):
        p = Probe(user, creds[user])
        assert p.connect(broker.port) == 0
        assert p.publish("citywatch/v1/gw/gw-a/cmd") < 0x80
        assert p.subscribe("citywatch/v1/gw/+/cmd/result") == [1]
        p.close()
    ingest = Probe("cw-ingest", creds["cw-ingest"])
    assert ingest.connect(broker.port) == 0
    assert ingest.publish("citywatch/v1/gw/gw-a/cmd") == 0x87
    ingest.close()


def test_tls_listener_accepts_a_gateway_with_the_ca(secured: tuple[Mosquitto, int, dict[str, str], Path]) -> None:
    _, tls_port, creds, ca = secured
    gw_b = Probe("gw-b", creds["gw-b"])
    assert gw_b.connect(tls_port, tls_ca=ca) == 0
    assert gw_b.publish("citywatch/v1/gw/gw-b/events") < 0x80
    gw_b.close()
