"""The gateway error tree.

    GatewayError(CitywatchError)
    ├── ProfileError        a profile or field definition is inconsistent (programming error)
    ├── EncodeError         a value cannot be written to a field (out of the type's range, read-only)
    ├── DecodeError         registers cannot be decoded (wrong length, field not in block)
    ├── BusError            the bus itself failed (port vanished, TCP refused); the whole bus backs off
    │   └── BusClosed       the bus is not open (or was closed while waiting)
    └── DeviceError         one device failed; the poller counts it and may quarantine the device
        ├── NoResponse      timeout: the slave did not answer in time (after retries)
        ├── BadFrame        CRC error, truncated or garbage frame, wrong unit/function in the reply
        ├── ModbusException the slave answered with an exception code
        │   ├── ConfigFault     01 illegal function / 02 illegal address / 03 illegal value: the
        │   │                   config or profile is wrong for this device; never hot-retried
        │   └── SlaveBusy       04 failure / 05 ack / 06 busy / 0A / 0B gateway path/target: back off
        ├── WriteMismatch   a write was accepted but the read-back differs
        └── Quarantined     the device is in quarantine until ``until``; not even tried

The poller raises these; the edge agent maps them to health and quality. Framing faults
are found in :mod:`gateway.modbus_io`; pyserial, termios and socket errors are translated
once, in :mod:`gateway.bus`.
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class GatewayError(CitywatchError):
    """Base of every error the gateway package raises on purpose."""


class ProfileError(GatewayError):
    """A profile or field definition is inconsistent."""


class EncodeError(GatewayError):
    """A value cannot be encoded into a field's registers."""


class DecodeError(GatewayError):
    """Registers cannot be decoded for a field."""


class BusError(GatewayError):
    """The bus (serial port, TCP connection) failed; every device on it is affected."""


class BusClosed(BusError):
    """The bus is not open."""


class DeviceError(GatewayError):
    """One device failed to answer correctly."""

    #: True when repeating the same request cannot help (config/profile is wrong)
    permanent: bool = False


class NoResponse(DeviceError):
    """No (complete) answer within the timeout, after the configured retries."""


class BadFrame(DeviceError):
    """A mangled reply: CRC error, truncated, garbage, or not matching the request."""


EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

#: exception codes meaning "this request is wrong for this device": a config error, no hot retry
CONFIG_EXCEPTION_CODES = frozenset({1, 2, 3})


class ModbusException(DeviceError):
    """The slave answered with a Modbus exception response."""

    def __init__(self, code: int, function_code: int, detail: str = "") -> None:
        self.code = code
        self.function_code = function_code
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        extra = f" ({detail})" if detail else ""
        super().__init__(f"exception {code:#04x} {name} on function {function_code}{extra}")


class ConfigFault(ModbusException):
    """Exception 01/02/03: the profile/config does not match the device. Not retried hot."""

    permanent = True


class SlaveBusy(ModbusException):
    """Exception 04/05/06/08/0A/0B: the device or the gateway path is busy or failing; back off."""


def exception_for(code: int, function_code: int, detail: str = "") -> ModbusException:
    """Map a Modbus exception code to its typed error (pure)."""
    if code in CONFIG_EXCEPTION_CODES:
        return ConfigFault(code, function_code, detail)
    return SlaveBusy(code, function_code, detail)


class WriteMismatch(DeviceError):
    """The write was accepted but reading the field back gave another value."""

    def __init__(self, field: str, wanted: float, got: float) -> None:
        self.field = field
        self.wanted = wanted
        self.got = got
        super().__init__(f"{field}: wrote {wanted}, read back {got}")


class Quarantined(DeviceError):
    """The device failed repeatedly and is not polled until ``until`` (Unix seconds)."""

    def __init__(self, device: str, until: float, last_error: str) -> None:
        self.device = device
        self.until = until
        self.last_error = last_error
        super().__init__(f"{device} quarantined until {until:.3f}: {last_error}")
