"""Bus-time arithmetic: character times, t1.5/t3.5, frame bytes, utilisation."""

from __future__ import annotations

import pytest

from gateway.budget import (
    char_time_s,
    plan_bus,
    request_bytes,
    response_bytes,
    serial_timing,
    transaction_s,
)
from gateway.config import BusConfig, DeviceConfig
from gateway.plan import Block
from gateway.registers import RegisterKind


def rtu(baud: int = 9600, parity: str = "E", **kw: object) -> BusConfig:
    return BusConfig.model_validate({"id": "b", "type": "rtu", "serial": "/dev/null", "baud": baud,
                                     "parity": parity, "turnaround_ms": 0, **kw})


def test_char_time() -> None:
    assert char_time_s(9600, "E", 1) == pytest.approx(11 / 9600)
    assert char_time_s(9600, "N", 2) == pytest.approx(11 / 9600)
    assert char_time_s(9600, "N", 1) == pytest.approx(10 / 9600)


def test_t15_t35() -> None:
    t = serial_timing(9600, "E")
    assert t.t35_s == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert t.t15_s == pytest.approx(1.5 * 11 / 9600)
    fast = serial_timing(38400, "E")
    assert fast.t35_s == pytest.approx(1.75e-3) and fast.t15_s == pytest.approx(0.75e-3)
    edge = serial_timing(19200, "E")
    assert edge.t35_s == pytest.approx(3.5 * 11 / 19200)


def test_frame_bytes() -> None:
    regs = Block(RegisterKind.HOLDING_REGISTER, 0, 10, ())
    bits = Block(RegisterKind.COIL, 0, 10, ())
    assert request_bytes(regs, "rtu") == 8
    assert response_bytes(regs, "rtu") == 25  # unit fc count 20 data crc2
    assert response_bytes(bits, "rtu") == 7  # 2 data bytes
    assert request_bytes(regs, "tcp") == 12
    assert response_bytes(regs, "tcp") == 29


def test_transaction_time_rtu() -> None:
    blk = Block(RegisterKind.HOLDING_REGISTER, 0, 10, ())
    ct = 11 / 9600
    want = 8 * ct + 3.5 * ct + 25 * ct + 3.5 * ct
    assert transaction_s(blk, rtu()) == pytest.approx(want)
    slow = rtu(turnaround_ms=50, inter_frame_gap_ms=20)
    assert transaction_s(blk, slow) == pytest.approx(8 * ct + 0.05 + 25 * ct + 0.02)


def test_utilisation_and_overbooking() -> None:
    bus = rtu(1200, "E")
    devs = [DeviceConfig(id=f"d{i}", profile="lamp", bus="b", unit_id=i + 1, poll_interval_s=1.0,
                         storm_poll_interval_s=0.5) for i in range(10)]
    b = plan_bus(bus, devs, 0.8)
    assert b.overbooked
    per = b.devices[0].poll_s
    assert b.utilisation == pytest.approx(10 * per / 1.0)
    assert b.storm_utilisation == pytest.approx(10 * per / 0.5)
    assert b.shortest_interval_s == pytest.approx(10 * per / 0.8)
    ok = plan_bus(rtu(115200), devs[:2], 0.8)
    assert not ok.overbooked
