"""Uplink against a real Mosquitto: end-to-end ack, resend, refused publishes, broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.payloads import ts_ms
from contracts.reading import Event, Reading
from edge_agent.config import PublishConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from tests.support.acknowledger import Acknowledger, LedgerLine
from tests.support.services import Mosquitto, mosquitto

pytestmark = pytest.mark.integration

GW = "gw-test-01"
T0 = 1_764_057_600.0


def _readings(start: int, n: int, device: str = "wl-0001") -> list[Reading]:
    return [Reading(device, "depth", T0 + i, i / 1000, "m") for i in range(start, start + n)]


def _status() -> payloads.Status:
    return payloads.Status("online", "boot-x", "test", [], {})


@pytest.fixture
def acker(broker: Mosquitto) -> Iterator[Acknowledger]:
    a = Acknowledger(broker.host, broker.port, GW)
    yield a
    a.close()


@contextlib.asynccontextmanager
async def running(up: Uplink) -> AsyncIterator[Uplink]:
    task = asyncio.create_task(up.run())
    try:
        yield up
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(pred: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(pred())  # type: ignore[operator]


def _uplink(outbox: Outbox, broker: Mosquitto, **pub: object) -> Uplink:
    cfg = PublishConfig(**{"batch_max_readings": 50, "linger_s": 0.05, "ack_timeout_s": 2.0,
                           "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **pub})  # type: ignore[arg-type]
    return Uplink(GW, outbox.boot, MqttSettings(url=broker.url), cfg, outbox, status=_status)


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_publish_ack_delete(tmp_path: Path, broker: Mosquitto, acker: Acknowledger, protocol: str) -> None:
    ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
    ob.append(_readings(0, 120), [Event("wim-0001", "vehicle", "1", T0, {"gross_kg": 5})])
    up = _uplink(ob, broker, protocol=protocol)
    async with running(up):
        assert await wait_until(lambda: ob.ledger().depth == 0, 10)
    assert len(acker.stored()) == 120 and len(acker.events) == 1
    assert acker.watermark == {"b1": 4}  # 3 telemetry batches of <= 50 + 1 event batch, one seq
    led = ob.ledger()
    assert led.telemetry.acked == 120 and led.events.acked == 1
    # retained birth is online with health
    assert any(s.state == "online" for s in acker.status)
    assert up.protocol == ("3.1.1" if protocol == "3.1.1" else "5")
    ob.close()


async def test_lost_batch_is_resent_after_ack_timeout(tmp_path: Path, broker: Mosquitto, acker: Acknowledger) -> None:
    ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
    acker.drop_next = 1  # the first batch vanishes after the broker PUBACKed it
    ob.append(_readings(0, 100))
    up = _uplink(ob, broker, ack_timeout_s=1.0)
    async with running(up):
        assert await wait_until(lambda: ob.ledger().depth == 0, 15)
    assert acker.dropped_batches == [("b1", 1)]
    assert len(acker.stored()) == 100
    assert up.resent_batches >= 1
    ob.close()


async def test_refused_publish_keeps_rows_and_raises_fault(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    # anonymous may do everything except publish telemetry
    acl.write_text(
        f"topic readwrite {topics.status(GW)}\n"
        f"topic readwrite {topics.ack(GW)}\n"
        f"topic readwrite {topics.cmd(GW)}\n"
        f"topic read {topics.telemetry(GW)}\n"
    )
    work = tmp_path / "mq"
    work.mkdir()
    with mosquitto(work, extra_conf=f"acl_file {acl}") as b:
        ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
        ob.append(_readings(0, 10))
        up = _uplink(ob, b)
        async with running(up):
            assert await wait_until(lambda: "publish_refused" in up.faults, 10)
        assert ob.ledger().telemetry.present == 10  # nothing deleted on a refused PUBACK
        assert "0x87" in up.faults["publish_refused"].detail
        assert up.health()["faults"][0]["code"] == "publish_refused"
        ob.close()


@pytest.mark.slow
async def test_broker_outage_60s_under_load(tmp_path: Path, broker: Mosquitto, acker: Acknowledger) -> None:
    """Broker stopped 60 s while samples keep arriving; ledger: 0 lost."""
    ob = Outbox(tmp_path / "o.db", 1 << 26, boot="b1")
    up = _uplink(ob, broker, batch_max_readings=200, linger_s=0.2)
    generated = 0
    stop_at = None

    async def produce(seconds: float) -> None:
        nonlocal generated
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ob.append(_readings(generated, 20, device=f"wl-{generated % 7:04d}"))
            generated += 20
            up.notify_appended()
            await asyncio.sleep(0.02)

    async with running(up):
        await produce(3)
        broker.stop()
        stop_at = time.monotonic()
        await produce(60)
        assert ob.ledger().depth > 0
        broker.start()
        await produce(3)
        assert await wait_until(lambda: ob.ledger().depth == 0, 60)
    assert stop_at is not None
    expected = set()
    for i in range(generated):
        expected.add((f"wl-{(i - i % 20) % 7:04d}", "depth", ts_ms(T0 + i)))
    stored = acker.stored()
    lost = len(expected - stored)
    led = ob.ledger()
    line = LedgerLine(generated, len(stored & expected), lost, acker.received_total() - len(stored), 0,
                      led.telemetry.dropped)
    print(line.line("E9/B1 broker stopped 60 s"))
    assert lost == 0 and led.telemetry.dropped == 0
    assert led.telemetry.appended == led.telemetry.acked == generated
    ob.close()


async def test_budget_exceeded_during_outage_drops_oldest_telemetry_keeps_events(
    tmp_path: Path, broker: Mosquitto, acker: Acknowledger
) -> None:
    from edge_agent.outbox import reading_nbytes

    one = reading_nbytes(_readings(0, 1)[0])
    ob = Outbox(tmp_path / "o.db", 400 * one, boot="b1")
    up = _uplink(ob, broker, batch_max_readings=50, max_inflight_batches=2)
    async with running(up):
        broker.stop()
        await asyncio.sleep(0.3)
        events = [Event("wim-0001", "vehicle", str(i), T0 + i, {"gross_kg": 40000 + i}) for i in range(30)]
        n = 0
        for chunk in range(100):  # 2000 readings into a 400-reading budget, events spread among them
            ob.append(_readings(n, 20), events[chunk // 4: chunk // 4 + 1] if chunk % 4 == 0 and chunk < 120 else [])
            n += 20
            up.notify_appended()
            await asyncio.sleep(0)
        led = ob.ledger()
        assert led.events.dropped == 0 and led.events.present == 25
        assert led.telemetry.dropped > 0 and ob.bytes <= ob.budget_bytes
        dropped = led.telemetry.dropped
        assert up.health()["drops"] == {"policy": "drop_oldest_telemetry_first", "telemetry": dropped, "events": 0}
        broker.start()
        assert await wait_until(lambda: ob.ledger().depth == 0, 20)
    stored = acker.stored()
    # exactly the newest readings survive: the policy dropped the oldest, and counted each one
    expected_kept = {("wl-0001", "depth", ts_ms(T0 + i)) for i in range(dropped, n)}
    assert stored == expected_kept
    assert len(acker.events) == 25
    led = ob.ledger()
    line = LedgerLine(n, len(stored), n - len(stored) - led.telemetry.dropped,
                      acker.received_total() - len(stored), 0, led.telemetry.dropped)
    print(line.line("E8/E9 outbox budget exceeded during outage"))
    assert line.lost == 0 and led.telemetry.appended == led.telemetry.acked + led.telemetry.dropped
    ob.close()


async def test_broker_kill9_mid_stream(tmp_path: Path, broker: Mosquitto, acker: Acknowledger) -> None:
    """B1 in small: the broker is SIGKILLed while batches are in flight; nothing is lost."""
    ob = Outbox(tmp_path / "o.db", 1 << 26, boot="b1")
    up = _uplink(ob, broker, batch_max_readings=100, linger_s=0.05, ack_timeout_s=1.0)
    n = 0
    async with running(up):
        for round_ in range(3):
            for _ in range(20):
                ob.append(_readings(n, 50))
                n += 50
                up.notify_appended()
                await asyncio.sleep(0.01)
            broker.kill()
            await asyncio.sleep(0.5 + round_ * 0.3)
            broker.start()
        assert await wait_until(lambda: ob.ledger().depth == 0, 30)
    stored = acker.stored()
    expected = {("wl-0001", "depth", ts_ms(T0 + i)) for i in range(n)}
    line = LedgerLine(n, len(stored & expected), len(expected - stored), acker.received_total() - len(stored), 0,
                      ob.ledger().telemetry.dropped)
    print(line.line("B1 broker kill -9 x3 mid-stream"))
    assert line.lost == 0 and stored == expected
    ob.close()


async def test_auto_falls_back_to_mqtt311_on_a_broker_without_v5(tmp_path: Path) -> None:
    """amqtt speaks 3.1.1 only (it drops a v5 CONNECT): ``protocol: auto`` must still deliver."""
    from amqtt.broker import Broker

    from tests.support.services import free_port

    port = free_port()
    b = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    await b.start()
    try:
        acker = await asyncio.to_thread(Acknowledger, "127.0.0.1", port, GW, "acker-311", False)
        try:
            ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
            ob.append(_readings(0, 30))
            up = Uplink(GW, "b1", MqttSettings(url=f"mqtt://127.0.0.1:{port}"),
                        PublishConfig(linger_s=0.05, connect_timeout_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.3),
                        ob, status=_status)
            async with running(up):
                assert await wait_until(lambda: ob.ledger().depth == 0, 15)
            assert up.protocol == "3.1.1" and len(acker.stored()) == 30
            ob.close()
        finally:
            acker.close()
    finally:
        await b.shutdown()


def _make_pki(d: Path) -> None:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        from tests.support.services import missing

        missing("openssl not found")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=citywatch-test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'127.0.0.1' if name == 'server' else GW}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *(("-extfile", "san.ext") if name == "server" else ()))


async def test_mqtts_with_private_ca_and_client_certificate(tmp_path: Path) -> None:
    from tests.support.services import free_port

    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki)
    plain = free_port()
    work = tmp_path / "mq"
    work.mkdir()
    conf = (f"cafile {pki}/ca.pem\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
            f"require_certificate true\nlistener {plain} 127.0.0.1\n")  # TLS on the first, plain for the acker
    with mosquitto(work, extra_conf=conf) as b:
        acker = Acknowledger(b.host, plain, GW)
        try:
            ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
            ob.append(_readings(0, 25))
            settings = MqttSettings(url=f"mqtts://127.0.0.1:{b.port}", ca_file=str(pki / "ca.pem"),
                                    cert_file=str(pki / "client.crt"), key_file=str(pki / "client.key"))
            up = Uplink(GW, "b1", settings, PublishConfig(linger_s=0.05, reconnect_min_s=0.1, reconnect_max_s=0.3),
                        ob, status=_status)
            async with running(up):
                assert await wait_until(lambda: ob.ledger().depth == 0, 10)
            assert len(acker.stored()) == 25
            # without a client certificate the broker refuses: nothing is deleted, the agent keeps trying
            ob.append(_readings(100, 5))
            bad = MqttSettings(url=f"mqtts://127.0.0.1:{b.port}", ca_file=str(pki / "ca.pem"))
            up2 = Uplink(GW, "b1", bad, PublishConfig(linger_s=0.05, reconnect_min_s=0.1, reconnect_max_s=0.3),
                         ob, status=_status)
            async with running(up2):
                await asyncio.sleep(1.5)
            assert up2.connects == 0 and ob.ledger().telemetry.present == 5
            ob.close()
        finally:
            acker.close()


async def test_batches_of_a_boot_the_cloud_forgot_are_relabelled(
    tmp_path: Path, broker: Mosquitto, acker: Acknowledger
) -> None:
    """The cloud lists only its latest boot: an old boot's unacked batch must not block forever."""
    from edge_agent.outbox import RecordClass

    acker.boots_kept = 1
    old = Outbox(tmp_path / "o.db", 1 << 24, boot="b0")
    old.append(_readings(0, 10))
    assert old.form_batch(RecordClass.TELEMETRY, 100, 1 << 20) is not None  # formed, never acked
    old.close()
    ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
    ob.append(_readings(10, 10))
    up = _uplink(ob, broker, ack_timeout_s=1.0)
    async with running(up):
        assert await wait_until(lambda: ob.ledger().depth == 0, 15)
    assert acker.stored() == {("wl-0001", "depth", ts_ms(T0 + i)) for i in range(20)}
    assert not ob.unacked()
    ob.close()


async def test_a_cloud_running_behind_is_waited_for_not_flooded_with_resends(
    tmp_path: Path, broker: Mosquitto, acker: Acknowledger
) -> None:
    """Every ack comes 1.5 s after its batch, three times the configured ack timeout: after the first
    resends the uplink times the cloud's delay and stops resending (before: the whole window again on
    every cycle, since any progress reset the timeout to 0.5 s)."""
    acker.ack_delay_s = 1.5
    ob = Outbox(tmp_path / "o.db", 1 << 24, boot="b1")
    up = _uplink(ob, broker, batch_max_readings=20, linger_s=0.1, ack_timeout_s=0.5, max_inflight_batches=4)
    n = 0
    async with running(up):
        for _ in range(40):  # 8 s of a steady stream: 20 readings every 0.2 s
            ob.append(_readings(n, 20))
            n += 20
            up.notify_appended()
            await asyncio.sleep(0.2)
        assert await wait_until(lambda: ob.ledger().depth == 0, 30)
        resent_at_end = up.resent_batches
    assert len(acker.stored()) == n
    assert up.sent_batches >= 40
    # the first cycles may resend a window or two before a batch sent once is acked; then nothing
    assert resent_at_end <= 2 * up.limits.window, (resent_at_end, up.sent_batches)
    ob.close()
