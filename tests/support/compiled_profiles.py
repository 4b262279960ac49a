"""Today's compiled profiles (Python), kept as the baseline the YAML library is checked against.

``tests/unit/gateway/test_gateway_library.py`` asserts the YAML library equals these, field by
field; ``bench/field.py`` measures YAML-loaded against these in the same run.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.registers import (
    BodyItem,
    Command,
    DataType,
    Derivation,
    EdgeEvent,
    Field,
    Flag,
    Profile,
    RecordLayout,
    RegisterKind,
    WordOrder,
)

IR = RegisterKind.INPUT_REGISTER
HR = RegisterKind.HOLDING_REGISTER
CO = RegisterKind.COIL
DI = RegisterKind.DISCRETE_INPUT

STATUS_FLAGS = (
    Flag(0, "no echo (distance/depth invalid)", fault=True),
    Flag(1, "sensor fault", fault=True),
    Flag(2, "battery low"),
    Flag(3, "sensor submerged (radar head under water)"),
)

WATER_GAUGE = Profile(
    name="water_gauge",
    kind="water_gauge",
    description="Radar water-level gauge over a road dip or underpass; uint16 millimetres.",
    fields=(
        Field("depth", 0, IR, DataType.U16, 0.001, "m", "depth", valid_min=0.0, valid_max=3.0,
              sentinels=(0xFFFF,), description="water depth over the road surface, mm"),
        Field("distance", 1, IR, DataType.U16, 0.001, "m", "distance", valid_min=0.05, valid_max=15.0,
              sentinels=(0xFFFF,), description="raw distance from sensor to water surface, mm"),
        Field("battery", 2, IR, DataType.U16, 0.01, "V", "battery", valid_min=2.0, valid_max=15.0,
              description="battery voltage, 0.01 V"),
        Field("status", 3, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)",
              flags=STATUS_FLAGS),
        Field("temperature", 4, IR, DataType.I16, 0.1, "Cel", None, sentinels=(0x7FFF,),
              description="electronics temperature, 0.1 °C (internal)"),
        Field("install_height", 0, HR, DataType.U16, 0.01, "m", "install_height", writable=True,
              valid_min=0.1, valid_max=20.0, description="sensor height over the road surface, **cm**"),
        Field("datum_offset", 1, HR, DataType.I16, 0.001, "m", None, writable=True,
              description="datum correction added by the installer, mm (internal)"),
        Field("slave_address", 0x03F4, HR, DataType.U16, 1.0, "", None, writable=True, polled=False,
              valid_min=1, valid_max=247, description="Modbus unit id (configuration)"),
        Field("baud_div100", 0x03F6, HR, DataType.U16, 1.0, "", None, writable=True, polled=False,
              description="baud rate / 100 (configuration)"),
    ),
    status_field="status",
    fault_affects=("depth", "distance"),
)

WATER_GAUGE_I32 = Profile(
    name="water_gauge_i32",
    kind="water_gauge",
    description="Pressure/radar gauge with signed int32 millimetre registers (holding registers only).",
    fields=(
        Field("depth", 0, HR, DataType.I32, 0.001, "m", "depth", valid_min=-1.0, valid_max=5.0,
              sentinels=(0x7FFFFFFF,), description="water depth over the road surface, mm (negative: below)"),
        Field("distance", 2, HR, DataType.U32, 0.001, "m", "distance", valid_min=0.0, valid_max=30.0,
              sentinels=(0xFFFFFFFF,), description="raw distance to the water surface, mm"),
        Field("install_height", 4, HR, DataType.U16, 0.01, "m", "install_height", writable=True,
              valid_min=0.1, valid_max=20.0, description="sensor height over the road surface, **cm**"),
        Field("battery", 5, HR, DataType.U16, 0.001, "V", "battery", valid_min=2.0, valid_max=15.0,
              description="battery voltage, **mV**"),
        Field("status", 6, HR, DataType.U16, 1.0, "", "status", description="status bits (see below)",
              flags=STATUS_FLAGS),
    ),
    default_word_order=WordOrder.CDAB,
    max_block_registers=16,
    max_gap_registers=0,
    status_field="status",
    fault_affects=("depth", "distance"),
    notes="Firmware answers exception 02 for reads longer than 16 registers.",
)

MANHOLE_FLAGS = (
    Flag(0, "accelerometer fault", fault=True),
    Flag(1, "battery low"),
    Flag(2, "water sensor fault"),
    Flag(3, "enclosure opened (tamper)"),
)


def _tilt(values: Mapping[str, float]) -> float:
    return round(abs(values["angle"] - values["background_angle"]), 2)


MANHOLE = Profile(
    name="manhole",
    kind="manhole",
    description="Manhole-cover tilt sensor (NB-IoT/LoRa class device behind a Modbus concentrator).",
    fields=(
        Field("tilt_x", 0, IR, DataType.I16, 0.01, "deg", "tilt_x", valid_min=-180.0, valid_max=180.0,
              sentinels=(0x7FFF,), description="tilt about X, 0.01°"),
        Field("tilt_y", 1, IR, DataType.I16, 0.01, "deg", "tilt_y", valid_min=-180.0, valid_max=180.0,
              sentinels=(0x7FFF,), description="tilt about Y, 0.01°"),
        Field("angle", 2, IR, DataType.U16, 0.01, "deg", None, valid_min=0.0, valid_max=180.0,
              sentinels=(0xFFFF,), description="absolute angle of the cover normal from vertical, 0.01°"),
        Field("battery", 3, IR, DataType.U16, 0.001, "V", "battery", valid_min=2.0, valid_max=4.5,
              description="battery voltage, mV"),
        Field("status", 4, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)",
              flags=MANHOLE_FLAGS),
        Field("background_angle", 0, HR, DataType.U16, 0.01, "deg", "background_tilt", writable=True,
              valid_min=0.0, valid_max=180.0, description="installed (background) angle, 0.01°; set at install"),
        Field("tilt_threshold", 1, HR, DataType.U16, 0.01, "deg", None, writable=True, polled=False,
              description="device-local alarm threshold, 0.01° (configuration)"),
        Field("report_interval", 2, HR, DataType.U16, 1.0, "s", None, writable=True, polled=False,
              description="periodic report interval, s (configuration)"),
        Field("cover_open", 0, DI, DataType.BIT, 1.0, "", "cover_open", description="cover lifted (reed switch)"),
        Field("water_under", 1, DI, DataType.BIT, 1.0, "", "water_under", description="water under the cover (float)"),
    ),
    status_field="status",
    fault_affects=("tilt", "tilt_x", "tilt_y"),
    derived=(Derivation("tilt", "round(abs(angle - background_angle), 2)", _tilt, ("angle", "background_angle")),),
    edges=(EdgeEvent("cover_open", "cover_open", None, ("tilt_x", "tilt_y", "angle", "background_angle")),),
)

LAMP_FLAGS = (
    Flag(0, "lamp failure (on, no current) — TALQ lampFailure"),
    Flag(1, "relay failure"),
    Flag(2, "metering chip fault (electrical values invalid)", fault=True),
    Flag(3, "over-temperature"),
)

LAMP = Profile(
    name="lamp",
    kind="lamp",
    description="Street-lamp controller: metering (float32), run hours, relay coil, dim level.",
    fields=(
        Field("voltage", 0, IR, DataType.F32, 1.0, "V", "voltage", valid_min=0.0, valid_max=400.0,
              description="supply voltage, V"),
        Field("current", 2, IR, DataType.F32, 1.0, "A", "current", valid_min=0.0, valid_max=20.0,
              description="supply current, A"),
        Field("power", 4, IR, DataType.F32, 1.0, "W", "power", valid_min=0.0, valid_max=5000.0,
              description="active power, W"),
        Field("power_factor", 6, IR, DataType.F32, 1.0, "/", "power_factor", valid_min=0.0, valid_max=1.0,
              description="power factor 0–1"),
        Field("energy", 8, IR, DataType.F32, 1.0, "kWh", "energy", valid_min=0.0, valid_max=1.0e7,
              description="active energy, kWh"),
        Field("run_hours", 10, IR, DataType.U32, 1.0, "h", "run_hours", description="operating hours, h"),
        Field("status", 12, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)",
              flags=LAMP_FLAGS),
        Field("temperature", 13, IR, DataType.I16, 0.1, "Cel", None, sentinels=(0x7FFF,),
              description="controller temperature, 0.1 °C (internal)"),
        Field("dim_level", 0, HR, DataType.U16, 1.0, "%", "dim_level", writable=True, valid_min=0.0,
              valid_max=100.0, description="dim level 0–100 %"),
        Field("default_dim", 1, HR, DataType.U16, 1.0, "%", None, writable=True, polled=False,
              valid_min=0.0, valid_max=100.0, description="level after power-up, % (configuration)"),
        Field("relay", 0, CO, DataType.BIT, 1.0, "", "relay", writable=True, description="lamp relay, 1 = on"),
    ),
    default_word_order=WordOrder.CDAB,
    status_field="status",
    fault_affects=("voltage", "current", "power", "power_factor", "energy"),
    commands=(Command("lamp_on", "relay", 1.0), Command("lamp_off", "relay", 0.0),
              Command("dim", "dim_level", None, "level_pct")),
)

MAX_AXLES = 8

RECORD_FIELDS: tuple[Field, ...] = (
    Field("record_no", 0, IR, DataType.U32, description="record number (1-based since boot)"),
    Field("time_s", 2, IR, DataType.U32, 1.0, "s", description="passage time, Unix seconds"),
    Field("time_ms", 4, IR, DataType.U16, 1.0, "ms", description="passage time, milliseconds part"),
    Field("lane", 5, IR, DataType.U16, description="lane number (1-based)"),
    Field("speed", 6, IR, DataType.U16, 0.1, "km/h", description="speed, 0.1 km/h"),
    Field("axles", 7, IR, DataType.U16, valid_min=2, valid_max=MAX_AXLES, description="axle count"),
    Field("gross", 8, IR, DataType.U32, 1.0, "kg", description="gross vehicle weight, kg"),
    *(Field(f"axle_{i + 1}", 10 + i, IR, DataType.U16, 10.0, "kg", description=f"axle {i + 1} load, 10 kg")
      for i in range(MAX_AXLES)),
    *(Field(f"spacing_{i + 1}", 18 + i, IR, DataType.U16, 0.01, "m",
            description=f"spacing axle {i + 1}→{i + 2}, cm") for i in range(MAX_AXLES - 1)),
    Field("vehicle_class", 25, IR, DataType.U16, description="vehicle class code (device specific)"),
)

RECORDS = RecordLayout(
    counter_field="record_count", kind=IR, base=256, stride=32, slots=16, fields=RECORD_FIELDS,
    style="ring", event_kind="vehicle", number_field="record_no", time_field="time_s", time_ms_field="time_ms",
    body=(
        BodyItem("lane", "lane"),
        BodyItem("speed_kmh", "speed"),
        BodyItem("axles", "axles"),
        BodyItem("gross_kg", "gross"),
        BodyItem("axle_kg", fields=tuple(f"axle_{i + 1}" for i in range(MAX_AXLES)), count_field="axles"),
        BodyItem("spacing_m", fields=tuple(f"spacing_{i + 1}" for i in range(MAX_AXLES - 1)), count_field="axles",
                 count_less=1),
    ),
)

WIM_FLAGS = (
    Flag(0, "lane 1 sensor fault"),
    Flag(1, "lane 2 sensor fault"),
    Flag(2, "calibration due"),
    Flag(3, "clock not set"),
)

WIM = Profile(
    name="wim",
    kind="wim",
    description="Bridge WIM scale: record counter, status, and a 16-slot ring of vehicle records.",
    fields=(
        Field("record_count", 0, IR, DataType.U32, 1.0, "", "record_count",
              description="records since boot; advances by one per vehicle"),
        Field("status", 2, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)",
              flags=WIM_FLAGS),
        Field("device_time", 3, IR, DataType.U32, 1.0, "s", None, description="scale clock, Unix s (internal)"),
    ),
    default_word_order=WordOrder.ABCD,
    status_field="status",
    records=RECORDS,
    notes="Vehicle records are events (kind `vehicle`), not time series; see the record layout below.",
)

COMPILED: tuple[Profile, ...] = (LAMP, MANHOLE, WATER_GAUGE, WATER_GAUGE_I32, WIM)
