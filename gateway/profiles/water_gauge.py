"""Road water-level gauges (radar / ultrasonic above the road, pressure in the drain).

Modelled on the public HLK-LD8001H / DFRobot SEN0676 radar map (esphome ``hlk_ld8001h``):
distance in mm, installation height in **cm**, mixed units in one map, 0xFFFF when the echo
is lost. The gauge computes depth over the road surface itself
(``install_height - distance - datum_offset``); we read both so a wrong datum is visible.

Two variants: ``water_gauge`` (uint16 mm, FC4 + FC3) and ``water_gauge_i32`` (signed int32
mm in holding registers, word-swapped CDAB by default, firmware that refuses reads longer
than 16 registers or across holes).
"""

from __future__ import annotations

from gateway.registers import DataType, Field, Profile, RegisterKind, WordOrder

IR = RegisterKind.INPUT_REGISTER
HR = RegisterKind.HOLDING_REGISTER

STATUS_NO_ECHO = 1 << 0
STATUS_SENSOR_FAULT = 1 << 1
STATUS_LOW_BATTERY = 1 << 2
STATUS_SUBMERGED = 1 << 3

STATUS_BITS = (
    (0, "no echo (distance/depth invalid)"),
    (1, "sensor fault"),
    (2, "battery low"),
    (3, "sensor submerged (radar head under water)"),
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
        Field("status", 3, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)"),
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
    fault_mask=STATUS_NO_ECHO | STATUS_SENSOR_FAULT,
    fault_affects=("depth", "distance"),
    status_bits=STATUS_BITS,
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
        Field("status", 6, HR, DataType.U16, 1.0, "", "status", description="status bits (see below)"),
    ),
    default_word_order=WordOrder.CDAB,
    max_block_registers=16,
    max_gap_registers=0,
    status_field="status",
    fault_mask=STATUS_NO_ECHO | STATUS_SENSOR_FAULT,
    fault_affects=("depth", "distance"),
    status_bits=STATUS_BITS,
    notes="Firmware answers exception 02 for reads longer than 16 registers.",
)
