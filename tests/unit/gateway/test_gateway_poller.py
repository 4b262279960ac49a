"""DevicePoller against an in-memory slave: readings, quality, events, quarantine, writes."""

from __future__ import annotations

import struct

import pytest

from contracts.reading import Quality
from gateway import profiles
from gateway.bus import Bus
from gateway.config import BusConfig, DeviceConfig, FieldConfig
from gateway.errors import (
    BusError,
    ConfigFault,
    EncodeError,
    GatewayError,
    NoResponse,
    Quarantined,
    SlaveBusy,
    WriteMismatch,
)
from gateway.modbus_io import Request, pack_bits
from gateway.poller import DevicePoller, build_pollers
from gateway.profiles.wim import RECORDS, WimRecord, encode_record
from gateway.registers import RegisterKind, encode_image

KIND_OF_FC = {1: RegisterKind.COIL, 2: RegisterKind.DISCRETE_INPUT, 3: RegisterKind.HOLDING_REGISTER,
              4: RegisterKind.INPUT_REGISTER, 5: RegisterKind.COIL, 6: RegisterKind.HOLDING_REGISTER,
              15: RegisterKind.COIL, 16: RegisterKind.HOLDING_REGISTER}


class FakeSlaves:
    """A Transport serving register images; ``fail[unit]`` raises instead of answering."""

    def __init__(self) -> None:
        self.images: dict[int, dict[RegisterKind, dict[int, int]]] = {}
        self.fail: dict[int, GatewayError] = {}
        self.requests: list[Request] = []
        self.ignore_writes = False
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def hold_off_s(self, req: Request) -> float:
        return 0.0

    async def transact(self, req: Request, timeout_s: float) -> bytes:
        self.requests.append(req)
        if req.unit in self.fail:
            raise self.fail[req.unit]
        img = self.images[req.unit][KIND_OF_FC[req.function]]
        if req.function in (1, 2):
            data = pack_bits([img.get(req.address + i, 0) for i in range(req.count)])
            return bytes([req.function, len(data)]) + data
        if req.function in (3, 4):
            data = b"".join(struct.pack(">H", img.get(req.address + i, 0)) for i in range(req.count))
            return bytes([req.function, len(data)]) + data
        if not self.ignore_writes:
            for i, v in enumerate(req.values):
                img[req.address + i] = v
        if req.function in (5, 6):
            value = (0xFF00 if req.values[0] else 0) if req.function == 5 else req.values[0]
            return struct.pack(">BHH", req.function, req.address, value)
        return struct.pack(">BHH", req.function, req.address, req.count)


def make(profile: str, values: dict[str, float], **dev: object) -> tuple[DevicePoller, FakeSlaves]:
    fake = FakeSlaves()
    p = profiles.get(profile)
    fake.images[1] = encode_image(p, values, dev.get("word_order"))  # type: ignore[arg-type]
    bus = Bus(BusConfig(id="b", type="tcp", host="127.0.0.1", retries=0), transport=fake)
    device = DeviceConfig.model_validate({"id": "d-1", "profile": profile, "bus": "b", "unit_id": 1,
                                          "poll_interval_s": 10, **dev})
    return DevicePoller(device, bus), fake


GAUGE = {"depth": 0.12, "distance": 2.88, "battery": 3.6, "status": 0, "temperature": 21.5,
         "install_height": 3.0, "datum_offset": 0.0}


async def test_water_gauge_readings() -> None:
    poller, fake = make("water_gauge", GAUGE)
    res = await poller.poll(1000.0)
    by = {r.metric: r for r in res.readings}
    assert by["depth"].value == 0.12 and by["depth"].unit == "m" and by["depth"].ts == 1000.0
    assert by["install_height"].value == 3.0
    assert all(r.quality is Quality.GOOD for r in res.readings)
    assert len(fake.requests) == 2  # one FC4 block, one FC3 block
    assert "temperature" not in by  # internal field
    assert poller.health.last_good_ts == 1000.0


async def test_sentinel_and_fault_bits() -> None:
    poller, fake = make("water_gauge", {**GAUGE, "status": 1})
    fake.images[1][RegisterKind.INPUT_REGISTER][0] = 0xFFFF  # no echo
    by = {r.metric: r for r in (await poller.poll(1.0)).readings}
    assert by["depth"].quality is Quality.OUT_OF_RANGE
    assert by["distance"].quality is Quality.SENSOR_FAULT
    assert by["battery"].quality is Quality.GOOD


async def test_lamp_float_word_order_override_and_nan() -> None:
    vals = {"voltage": 230.5, "current": 0.52, "power": 118.0, "power_factor": 0.97, "energy": 1234.5,
            "run_hours": 70000, "status": 0, "temperature": 30.0, "dim_level": 80, "default_dim": 100, "relay": 1}
    for order in ("ABCD", "CDAB", "BADC", "DCBA"):
        poller, fake = make("lamp", vals, word_order=order)
        by = {r.metric: r for r in (await poller.poll(5.0)).readings}
        assert by["voltage"].value == 230.5 and by["energy"].value == 1234.5 and by["run_hours"].value == 70000
        assert by["relay"].value == 1.0 and by["dim_level"].value == 80
    fake.images[1][RegisterKind.INPUT_REGISTER][0] = 0x7FC0  # 7FC0C07F: NaN in every word order
    fake.images[1][RegisterKind.INPUT_REGISTER][1] = 0xC07F
    by = {r.metric: r for r in (await poller.poll(6.0)).readings}
    assert by["voltage"].quality is Quality.OUT_OF_RANGE
    assert by["voltage"].value == by["voltage"].value  # finite raw bits, never NaN


async def test_manhole_cover_event_on_rising_edge_only() -> None:
    vals = {"tilt_x": 1.0, "tilt_y": -1.0, "angle": 1.5, "battery": 3.6, "status": 0, "background_angle": 1.4,
            "cover_open": 0, "water_under": 0}
    poller, fake = make("manhole", vals)
    first = await poller.poll(1.0)
    assert {r.metric: r.value for r in first.readings}["tilt"] == pytest.approx(0.1)
    assert first.events == []
    fake.images[1][RegisterKind.DISCRETE_INPUT][0] = 1
    fake.images[1][RegisterKind.INPUT_REGISTER][2] = 2500  # 25°
    res = await poller.poll(2.0)
    assert [e.kind for e in res.events] == ["cover_open"]
    assert res.events[0].ts == 2.0 and res.events[0].body["angle"] == 25.0
    assert (await poller.poll(3.0)).events == []  # still open: no new event
    fake.images[1][RegisterKind.DISCRETE_INPUT][0] = 0
    assert (await poller.poll(4.0)).events == []
    fake.images[1][RegisterKind.DISCRETE_INPUT][0] = 1
    assert len((await poller.poll(5.0)).events) == 1


def _wim_store(fake: FakeSlaves, n: int, t0: float = 1_764_000_000.0) -> None:
    ir = fake.images[1][RegisterKind.INPUT_REGISTER]
    rec = WimRecord(n, t0 + n, 1 + n % 2, 60.0, 20000.0 + n, (7000.0, 13000.0 + n * 10), (4.5,))
    addr = RECORDS.address_of(n)
    for i, w in enumerate(encode_record(rec)):
        ir[addr + i] = w
    ir[0], ir[1] = n >> 16, n & 0xFFFF


async def test_wim_counter_records_and_reset() -> None:
    poller, fake = make("wim", {"record_count": 0, "status": 0, "device_time": 0})
    assert (await poller.poll(1.0)).events == []
    for n in (1, 2, 3):
        _wim_store(fake, n)
    res = await poller.poll(2.0)
    assert [e.id.split("-")[0] for e in res.events] == ["1", "2", "3"]
    ev = res.events[1]
    assert ev.kind == "vehicle" and ev.ts == 1_764_000_002.0
    assert ev.body == {"lane": 1, "speed_kmh": 60.0, "axles": 2, "gross_kg": 20002.0,
                       "axle_kg": [7000.0, 13020.0], "spacing_m": [4.5]}
    assert (await poller.poll(3.0)).events == []
    # 20 more vehicles: only the 16 in the ring can be read
    for n in range(4, 24):
        _wim_store(fake, n)
    res = await poller.poll(4.0)
    assert [int(e.id.split("-")[0]) for e in res.events] == list(range(8, 24))
    assert poller.health.records_lost == 4
    # scale reboot: counter restarts
    for n in (1, 2):
        _wim_store(fake, n, t0=1_765_000_000.0)
    res = await poller.poll(5.0)
    assert [int(e.id.split("-")[0]) for e in res.events] == [1, 2]
    assert res.events[0].id != "1-" + str(round((1_764_000_000.0 + 1) * 1000))  # ids differ across boots


async def test_wim_first_poll_rereads_ring() -> None:
    poller, fake = make("wim", {"record_count": 0, "status": 0, "device_time": 0})
    for n in range(1, 6):
        _wim_store(fake, n)
    res = await poller.poll(1.0)
    assert len(res.events) == 5


async def test_quarantine_after_repeated_timeouts_and_recovery() -> None:
    poller, fake = make("water_gauge", GAUGE, quarantine_after=3)
    fake.fail[1] = NoResponse("silent")
    for t in (0.0, 10.0):
        with pytest.raises(NoResponse):
            await poller.poll(t)
        assert poller.health.quarantined_until is None
    with pytest.raises(NoResponse):
        await poller.poll(20.0)
    assert poller.health.quarantined_until == 30.0
    n = len(fake.requests)
    with pytest.raises(Quarantined):
        await poller.poll(25.0)
    assert len(fake.requests) == n  # nothing sent while quarantined
    with pytest.raises(NoResponse):
        await poller.poll(30.0)
    assert poller.health.quarantined_until == 30.0 + 20.0  # doubled
    del fake.fail[1]
    await poller.poll(50.0)
    assert poller.health.consecutive_failures == 0 and poller.health.quarantined_until is None


async def test_config_fault_quarantines_at_once_busy_backs_off() -> None:
    poller, fake = make("water_gauge", GAUGE, quarantine_max_s=600)
    fake.fail[1] = ConfigFault(2, 4)
    with pytest.raises(ConfigFault):
        await poller.poll(0.0)
    assert poller.health.quarantined_until == 600.0
    poller, fake = make("water_gauge", GAUGE)
    fake.fail[1] = SlaveBusy(6, 4)
    with pytest.raises(SlaveBusy):
        await poller.poll(0.0)
    assert poller.health.quarantined_until == 10.0
    with pytest.raises(SlaveBusy):
        await poller.poll(10.0)
    assert poller.health.quarantined_until == 30.0


async def test_bus_error_not_counted_against_device() -> None:
    poller, fake = make("water_gauge", GAUGE, quarantine_after=1)
    fake.fail[1] = BusError("port gone")
    with pytest.raises(BusError):
        await poller.poll(0.0)
    assert poller.health.quarantined_until is None and poller.health.consecutive_failures == 0


async def test_write_field_reads_back() -> None:
    vals = {"voltage": 230.0, "current": 0.5, "power": 100.0, "power_factor": 0.9, "energy": 1.0,
            "run_hours": 1, "status": 0, "temperature": 30.0, "dim_level": 100, "default_dim": 100, "relay": 0}
    poller, fake = make("lamp", vals)
    assert await poller.write_field("dim_level", 40, 1.0) == 40
    assert await poller.write_field("relay", 1, 1.0) == 1
    assert {r.metric: r.value for r in (await poller.poll(2.0)).readings}["dim_level"] == 40
    with pytest.raises(EncodeError):
        await poller.write_field("voltage", 1, 1.0)
    with pytest.raises(EncodeError):
        await poller.write_field("dim_level", 140, 1.0)
    fake.ignore_writes = True
    with pytest.raises(WriteMismatch):
        await poller.write_field("dim_level", 10, 1.0)


def test_build_pollers() -> None:
    cfg = FieldConfig.model_validate({
        "buses": [{"id": "b1", "type": "rtu", "serial": "/dev/null"}, {"id": "t1", "type": "tcp", "host": "x"}],
        "devices": [{"id": "a", "profile": "lamp", "bus": "t1", "unit_id": 1},
                    {"id": "b", "profile": "manhole", "bus": "b1", "unit_id": 1}],
    })
    buses, pollers = build_pollers(cfg)
    assert [b.id for b in buses] == ["b1", "t1"]
    assert pollers["b"].bus is buses[0] and pollers["a"].info.kind == "lamp"
