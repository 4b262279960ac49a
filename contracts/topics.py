"""The v1 topic scheme: ``citywatch/v1/gw/{gw}/{kind}`` and ``citywatch/v1/alarms/{device}``."""

from __future__ import annotations

from typing import Literal

from contracts.errors import ContractError
from contracts.ids import is_valid_id, validate_id

ROOT = "citywatch/v1"
GwKind = Literal["telemetry", "events", "status", "ack", "cmd", "cmd/result"]
GW_KINDS: tuple[str, ...] = ("telemetry", "events", "status", "ack", "cmd", "cmd/result")


def gw_topic(gw: str, kind: GwKind) -> str:
    return f"{ROOT}/gw/{validate_id(gw, 'gateway id')}/{kind}"


def telemetry(gw: str) -> str:
    return gw_topic(gw, "telemetry")


def events(gw: str) -> str:
    return gw_topic(gw, "events")


def status(gw: str) -> str:
    return gw_topic(gw, "status")


def ack(gw: str) -> str:
    return gw_topic(gw, "ack")


def cmd(gw: str) -> str:
    return gw_topic(gw, "cmd")


def cmd_result(gw: str) -> str:
    return gw_topic(gw, "cmd/result")


def alarms(device: str) -> str:
    return f"{ROOT}/alarms/{validate_id(device, 'device id')}"


def gw_filter(kind: GwKind, share_group: str | None = None) -> str:
    """Subscription filter for one kind over all gateways, optionally as a shared subscription."""
    base = f"{ROOT}/gw/+/{kind}"
    return f"$share/{share_group}/{base}" if share_group else base


ALARMS_FILTER = f"{ROOT}/alarms/+"


def alarm_ack(device: str) -> str:
    """Console -> rule engine: a person acknowledged an alarm of this device."""
    return f"{ROOT}/alarm-ack/{validate_id(device, 'device id')}"


ALARM_ACK_FILTER = f"{ROOT}/alarm-ack/+"


def case_open(device: str) -> str:
    """Case bridge -> rule engine (retained): which conditions of a device have an open case."""
    return f"{ROOT}/case-open/{validate_id(device, 'device id')}"


CASE_OPEN_FILTER = f"{ROOT}/case-open/+"

_GW_PREFIX = f"{ROOT}/gw/"


def parse_gw_topic(topic: str) -> tuple[str, str]:
    """Split a gateway topic into (gateway id, kind); raise ContractError if it is not one."""
    if not topic.startswith(_GW_PREFIX):
        raise ContractError(f"not a gateway topic: {topic!r}")
    gw, sep, kind = topic[len(_GW_PREFIX) :].partition("/")
    if not sep or not is_valid_id(gw) or kind not in GW_KINDS:
        raise ContractError(f"not a gateway topic: {topic!r}")
    return gw, kind
