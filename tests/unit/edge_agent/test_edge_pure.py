"""Pure parts of the edge agent: batching decisions, backoff, storm mode, config errors, commands."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from contracts import payloads
from contracts.errors import ConfigError
from contracts.reading import Reading
from edge_agent import commands, storm
from edge_agent.batching import AckTimer, BatchLimits, ack_timed_out, encode_batch, should_form
from edge_agent.config import StormConfig, parse_agent_config
from edge_agent.outbox import BatchHeader, RecordClass
from mqttlink.backoff import backoff_delay

LIM = BatchLimits(max_records=100, max_bytes=1 << 16, linger_s=2.0, window=4)


def test_should_form() -> None:
    assert not should_form(0, None, 0, LIM, 10.0)
    assert should_form(100, 9.9, 0, LIM, 10.0)  # full
    assert not should_form(5, 9.0, 0, LIM, 10.0)  # lingering
    assert should_form(5, 8.0, 0, LIM, 10.0)  # lingered long enough
    assert should_form(5, 0.0, 0, LIM, 10.0)  # left over from before a restart
    assert not should_form(500, 0.0, 4, LIM, 10.0)  # window full


def test_ack_timeout_and_backoff() -> None:
    assert not ack_timed_out(None, 0.0, 5.0, 100.0)
    assert not ack_timed_out(98.0, 0.0, 5.0, 100.0)
    assert ack_timed_out(90.0, 80.0, 5.0, 100.0)
    assert not ack_timed_out(90.0, 97.0, 5.0, 100.0)  # progress resets the clock
    rng = random.Random(1)
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(12)]
    assert all(0.5 <= delays[0] <= 1.0 for _ in range(1))
    assert all(30.0 <= d <= 60.0 for d in delays[7:])  # capped, never zero
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


def test_encode_batch_keeps_boot_and_seq() -> None:
    h = BatchHeader(7, "old-boot", 42, RecordClass.TELEMETRY, 1, 2, 2, 100)
    rs = [Reading("wl-0001", "depth", 1764057600.0, 0.1, "m"), Reading("wl-0001", "depth", 1764057610.0, 0.2, "m")]
    out = encode_batch("gw-1", h, rs, ())
    assert out.topic == "citywatch/v1/gw/gw-1/telemetry"
    b = payloads.decode_telemetry(out.payload)
    assert (b.gw, b.boot, b.seq, b.readings) == ("gw-1", "old-boot", 42, rs)
    assert encode_batch("gw-1", h, rs, ()).payload == out.payload  # a resend is byte-identical


CFG = StormConfig(enter_depth_m=0.15, exit_depth_m=0.10, enter_rise_m_per_h=0.3, exit_rise_m_per_h=0.05,
                  rate_window_s=900, min_hold_s=600)


def test_storm_enters_on_depth_and_leaves_with_hysteresis() -> None:
    s = storm.StormState()
    s = storm.observe(s, 0.0, 0.05, CFG)
    assert not s.storm
    s = storm.observe(s, 300.0, 0.16, CFG)
    assert s.storm and s.since == 300.0
    s = storm.observe(s, 310.0, 0.12, CFG)  # below enter, above exit: stays
    assert s.storm
    s = storm.observe(s, 320.0, 0.09, CFG)  # below exit but hold time not over
    assert s.storm
    t = 320.0
    while t < 2000:
        t += 10
        s = storm.observe(s, t, 0.09, CFG)
    assert not s.storm
    assert storm.interval_s(s, 300.0, 10.0) == 300.0


def test_storm_enters_on_rise_rate_and_command_override() -> None:
    s = storm.StormState()
    for i in range(4):  # 0.02 m per 120 s = 0.6 m/h, still shallow
        s = storm.observe(s, i * 120.0, 0.01 + 0.02 * i, CFG)
    assert s.storm and "rising" in s.reason
    assert storm.interval_s(s, 300.0, 10.0) == 10.0
    s = storm.force(s, False)
    assert not s.storm and storm.interval_s(s, 300.0, 10.0) == 300.0
    s = storm.force(s, None)
    assert s.storm
    assert storm.interval_s(s, 300.0, None) == 300.0  # no storm interval: never changes


def test_rise_rate() -> None:
    assert storm.rise_rate_m_per_h([(0.0, 0.0)]) is None
    assert storm.rise_rate_m_per_h([(0.0, 0.0), (3600.0, 0.5)]) == pytest.approx(0.5)
    assert storm.rise_rate_m_per_h([(0.0, 0.0), (0.1, 0.001)], min_span_s=60) is None  # noise, not a flood


def test_fast_polling_noise_does_not_trigger_storm_and_window_is_bounded() -> None:
    s = storm.StormState()
    rng = random.Random(3)
    for i in range(2000):  # 0.1 s polling, +-2 mm noise on a flat 3 cm
        s = storm.observe(s, i * 0.1, 0.03 + rng.uniform(-0.002, 0.002), CFG)
        assert not s.storm, i
        assert len(s.samples) <= storm.MAX_SAMPLES


BASE = """
gateway: {id: gw-1}
mqtt: {url: "mqtt://127.0.0.1:1883"}
outbox: {path: /tmp/x.db, budget_bytes: 10000000}
buses: [{id: b1, type: tcp, host: 127.0.0.1}]
devices: [{id: wl-0001, profile: water_gauge, bus: b1, unit_id: 1}]
"""


def test_config_ok_and_errors_name_key_and_value() -> None:
    cfg = parse_agent_config(BASE, "gw.yaml")
    assert cfg.publish.batch_max_readings == 500 and cfg.devices[0].id == "wl-0001"
    with pytest.raises(ConfigError, match=r"gw.yaml: publish.lingr_s: unknown key"):
        parse_agent_config(BASE + "publish: {lingr_s: 3}\n", "gw.yaml")
    with pytest.raises(ConfigError, match=r"mqtt.url"):
        parse_agent_config(BASE.replace("mqtt://", "http://"), "gw.yaml")
    with pytest.raises(ConfigError, match=r"storm.*exit_depth_m must be <= enter_depth_m"):
        parse_agent_config(BASE + "storm: {enter_depth_m: 0.1, exit_depth_m: 0.2}\n", "gw.yaml")
    with pytest.raises(ConfigError, match=r"budget_bytes .* at least twice"):
        parse_agent_config(BASE.replace("10000000", "100000"), "gw.yaml")
    with pytest.raises(ConfigError, match=r"overflow_policy"):
        parse_agent_config(BASE.replace("budget_bytes: 10000000", "budget_bytes: 10000000, overflow_policy: lifo"),
                           "gw.yaml")
    with pytest.raises(ConfigError, match=r"gateway.id"):
        parse_agent_config(BASE.replace("gw-1", "GW/1"), "gw.yaml")


def test_example_configs_are_valid() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    for name in ("gateway.example.yaml", "gateway.site-example.yaml"):
        p = root / "configs" / name
        cfg = parse_agent_config(p.read_text(), str(p))
        assert cfg.devices


class FakeTarget:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str, float]] = []
        self.readback: float | None = None
        self.storm: dict[str, bool | None] = {}

    def device_kind(self, device: str) -> str | None:
        return {"lamp-1": "lamp", "wl-1": "water_gauge"}.get(device)

    async def write_field(self, device: str, field: str, value: float) -> float:
        self.writes.append((device, field, value))
        return value if self.readback is None else self.readback

    def poll_now(self, device: str | None) -> list[str]:
        return [device] if device else ["lamp-1", "wl-1"]

    def set_storm(self, device: str | None, on: bool | None) -> list[str]:
        if device == "lamp-1":
            return []
        self.storm[device or "*"] = on
        return [device or "wl-1"]


async def _run(t: FakeTarget, obj: Any) -> payloads.CommandResult:
    raw = obj if isinstance(obj, bytes) else orjson.dumps({"v": 1, **obj})
    return payloads.decode_command_result(await commands.handle(t, raw))


async def test_commands() -> None:
    t = FakeTarget()
    r = await _run(t, {"id": "1", "action": "dim", "device": "lamp-1", "args": {"level_pct": 40}})
    assert r.ok and t.writes == [("lamp-1", "dim_level", 40.0)]
    r = await _run(t, {"id": "2", "action": "lamp_on", "device": "lamp-1"})
    assert r.ok and r.detail == {"device": "lamp-1", "relay": 1}
    t.readback = 0.0
    r = await _run(t, {"id": "3", "action": "lamp_on", "device": "lamp-1"})
    assert not r.ok and r.error == "readback_mismatch"
    r = await _run(t, {"id": "4", "action": "dim", "device": "lamp-1", "args": {"level_pct": True}})
    assert r.error == "bad_argument"
    r = await _run(t, {"id": "5", "action": "dim", "device": "nope"})
    assert r.error == "unknown_device"
    r = await _run(t, {"id": "6", "action": "lamp_off"})
    assert r.error == "missing_device"
    r = await _run(t, {"id": "7", "action": "storm_mode", "device": "wl-1", "args": {"on": "auto"}})
    assert r.ok and t.storm == {"wl-1": None}
    r = await _run(t, {"id": "8", "action": "storm_mode", "device": "lamp-1", "args": {"on": True}})
    assert r.error == "not_applicable"
    r = await _run(t, {"id": "9", "action": "storm_mode", "args": {"on": "yes"}})
    assert r.error == "bad_argument"
    r = await _run(t, {"id": "10", "action": "poll_now"})
    assert r.ok and r.detail["devices"] == ["lamp-1", "wl-1"]
    r = await _run(t, b'{"v": 1, "id": "11", "action": 3}')
    assert (r.id, r.ok) == ("11", False) and (r.error or "").startswith("bad_command")
    r = await _run(t, b"not json")
    assert (r.id, r.ok) == ("?", False)


async def test_gateway_errors_become_codes() -> None:
    from gateway.errors import NoResponse, Quarantined

    class Failing(FakeTarget):
        def __init__(self, exc: Exception) -> None:
            super().__init__()
            self.exc = exc

        async def write_field(self, device: str, field: str, value: float) -> float:
            raise self.exc

    r = await _run(Failing(Quarantined("lamp-1", 5.0, "timeout")), {"id": "1", "action": "lamp_on", "device": "lamp-1"})
    assert r.error == "device_quarantined"
    r = await _run(Failing(NoResponse("x")), {"id": "2", "action": "lamp_on", "device": "lamp-1"})
    assert r.error == "no_response"


def test_ack_timer_follows_a_slow_cloud_and_backs_off() -> None:
    timer = AckTimer(30.0)
    assert timer.timeout_s == 30.0
    timer.acked([0.2, 0.3, 0.1])  # a prompt cloud: the configured timeout is the floor
    assert timer.timeout_s == 30.0
    timer.expired()
    timer.expired()
    assert timer.timeout_s == 120.0  # doubling while nothing progresses
    timer.acked([])  # progress, but only resent batches were acked: Karn's rule keeps the backed-off wait
    assert timer.timeout_s == 120.0
    slow = AckTimer(30.0)
    for _ in range(20):
        slow.acked([180.0])  # the ingester runs 3 min behind
    assert slow.srtt_s is not None and abs(slow.srtt_s - 180.0) < 1e-6
    assert 180.0 <= slow.timeout_s < 200.0  # waits for it instead of resending every 30 s
    for _ in range(60):
        slow.acked([0.5])  # caught up: the wait comes back down to the floor
    assert slow.timeout_s == 30.0
    capped = AckTimer(30.0, cap_s=100.0)
    capped.acked([500.0])
    assert capped.timeout_s == 100.0
    for _ in range(5):
        capped.expired()
    assert capped.timeout_s == 100.0


def test_ack_timer_refuses_a_base_outside_its_cap() -> None:
    with pytest.raises(ValueError, match="base_s"):
        AckTimer(0.0)
    with pytest.raises(ValueError, match="base_s"):
        AckTimer(700.0)
