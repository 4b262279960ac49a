"""Smart manhole-cover sensor: accelerometer tilt, cover-open switch, water under the cover.

Tilt alarms are relative to the *background* (installed) angle stored in the device, as the
vendors do (|current - background| > threshold; > 90° always alarms), so the gateway
publishes ``tilt`` = |angle - background_angle| next to the raw axes.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.registers import DataType, Field, Profile, RegisterKind

IR = RegisterKind.INPUT_REGISTER
HR = RegisterKind.HOLDING_REGISTER
DI = RegisterKind.DISCRETE_INPUT

STATUS_BITS = (
    (0, "accelerometer fault"),
    (1, "battery low"),
    (2, "water sensor fault"),
    (3, "enclosure opened (tamper)"),
)


def _derive(values: Mapping[str, float]) -> dict[str, float]:
    if "angle" in values and "background_angle" in values:
        return {"tilt": round(abs(values["angle"] - values["background_angle"]), 2)}
    return {}


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
        Field("status", 4, IR, DataType.U16, 1.0, "", "status", description="status bits (see below)"),
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
    fault_mask=1 << 0,
    fault_affects=("tilt", "tilt_x", "tilt_y"),
    status_bits=STATUS_BITS,
    derived=(("tilt", "|angle − background_angle|, degrees"),),
    derive=_derive,
    derive_inputs=("angle", "background_angle"),
)
