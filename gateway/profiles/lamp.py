"""Single-lamp controller (TALQ LampMonitor/LampActuator quantities) with a relay and a dimmer.

Electrical values are IEEE float32 as on most energy-metering chips; the word order differs
between controller vendors, so it is set per device (default CDAB, the common word swap).
"""

from __future__ import annotations

from gateway.registers import DataType, Field, Profile, RegisterKind, WordOrder

IR = RegisterKind.INPUT_REGISTER
HR = RegisterKind.HOLDING_REGISTER
CO = RegisterKind.COIL

STATUS_BITS = (
    (0, "lamp failure (on, no current) — TALQ lampFailure"),
    (1, "relay failure"),
    (2, "metering chip fault (electrical values invalid)"),
    (3, "over-temperature"),
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
        Field("status", 12, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)"),
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
    fault_mask=1 << 2,
    fault_affects=("voltage", "current", "power", "power_factor", "energy"),
    status_bits=STATUS_BITS,
)
