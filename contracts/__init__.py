"""What crosses a process boundary: readings, events, alarms, topics, payloads, errors.

Pure: nothing in this package opens a file, a socket or reads the clock. It is the only
package that both the edge (gateway, edge_agent, firmware_sim) and the cloud import.
"""

from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.errors import (
    CitywatchError,
    ConfigError,
    ContractError,
    InvalidId,
    PayloadError,
)
from contracts.ids import validate_id
from contracts.reading import DeviceInfo, Event, Quality, Reading

__all__ = [
    "AlarmTransition",
    "CitywatchError",
    "ConfigError",
    "ContractError",
    "DeviceInfo",
    "Event",
    "InvalidId",
    "PayloadError",
    "Quality",
    "Reading",
    "Severity",
    "TransitionKind",
    "validate_id",
]
