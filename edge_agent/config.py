"""The gateway config file as the agent sees it: every section, validated once at load.

Sections ``gateway``, ``mqtt``, ``outbox``, ``publish``, ``storm`` are defined here; ``buses`` and
``devices`` are :mod:`gateway.config`'s models, embedded unchanged. Errors name the file, the
key path and the bad value (:class:`contracts.errors.ConfigError`). Nothing is clamped or fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field as PydField
from pydantic import field_validator, model_validator

from contracts.config import MqttSettings, StrictModel, parse_yaml, validate_config
from contracts.errors import ConfigError
from contracts.ids import is_valid_id
from gateway.config import BusConfig, DeviceConfig, check_field_sections, resolve_profile_paths


class GatewaySection(StrictModel):
    """Who this gateway is. ``id`` is its MQTT identity (topics ``citywatch/v1/gw/{id}/...``)."""

    id: str
    description: str | None = None
    status_interval_s: float = PydField(60.0, ge=1.0, le=3600.0)  # retained health refresh

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not is_valid_id(v):
            raise ValueError("gateway id must match [a-z0-9][a-z0-9-]{0,62}")
        return v


class OutboxConfig(StrictModel):
    """The on-disk outbox. ``budget_bytes`` caps stored records (their estimated encoded size)."""

    path: str
    budget_bytes: int = PydField(256 * 1024 * 1024, ge=64 * 1024)
    overflow_policy: Literal["drop_oldest_telemetry_first"] = "drop_oldest_telemetry_first"


class PublishConfig(StrictModel):
    """Batching, windowing, acknowledgement and reconnect timing."""

    batch_max_readings: int = PydField(500, ge=1, le=20000)
    batch_max_bytes: int = PydField(64 * 1024, ge=1024, le=8 * 1024 * 1024)
    linger_s: float = PydField(2.0, ge=0.0, le=3600.0)
    max_inflight_batches: int = PydField(16, ge=1, le=1000)
    ack_timeout_s: float = PydField(30.0, gt=0.0, le=3600.0)
    reconnect_min_s: float = PydField(1.0, gt=0.0, le=600.0)
    reconnect_max_s: float = PydField(120.0, gt=0.0, le=3600.0)
    connect_timeout_s: float = PydField(10.0, gt=0.0, le=120.0)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"

    @model_validator(mode="after")
    def _ordered(self) -> PublishConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class StormConfig(StrictModel):
    """Adaptive sampling of water gauges (devices with ``storm_poll_interval_s``).

    Enter storm mode when depth >= ``enter_depth_m`` or it rises at >= ``enter_rise_m_per_h``;
    leave only when depth < ``exit_depth_m`` *and* the rise rate < ``exit_rise_m_per_h`` *and*
    at least ``min_hold_s`` passed since entering (hysteresis: no flapping around a threshold).
    """

    enabled: bool = True
    metric: str = "depth"
    enter_depth_m: float | None = 0.15
    exit_depth_m: float | None = 0.10
    enter_rise_m_per_h: float | None = 0.3
    exit_rise_m_per_h: float | None = 0.05
    rate_window_s: float = PydField(900.0, gt=0.0, le=86400.0)
    #: a rate from samples spanning less than this is noise (1 mm over 0.1 s reads as 36 m/h)
    rate_min_span_s: float = PydField(60.0, ge=0.0, le=86400.0)
    min_hold_s: float = PydField(900.0, ge=0.0, le=86400.0)

    @model_validator(mode="after")
    def _hysteresis(self) -> StormConfig:
        if self.rate_min_span_s > self.rate_window_s:
            raise ValueError("rate_min_span_s must be <= rate_window_s")
        if (self.enter_depth_m is None) != (self.exit_depth_m is None):
            raise ValueError("give both enter_depth_m and exit_depth_m, or neither")
        if self.enter_depth_m is not None and self.exit_depth_m is not None and self.exit_depth_m > self.enter_depth_m:
            raise ValueError("exit_depth_m must be <= enter_depth_m (hysteresis)")
        if (self.enter_rise_m_per_h is None) != (self.exit_rise_m_per_h is None):
            raise ValueError("give both enter_rise_m_per_h and exit_rise_m_per_h, or neither")
        if (
            self.enter_rise_m_per_h is not None
            and self.exit_rise_m_per_h is not None
            and self.exit_rise_m_per_h > self.enter_rise_m_per_h
        ):
            raise ValueError("exit_rise_m_per_h must be <= enter_rise_m_per_h (hysteresis)")
        return self


class AgentConfig(StrictModel):
    """A whole gateway file."""

    gateway: GatewaySection
    mqtt: MqttSettings
    outbox: OutboxConfig
    publish: PublishConfig = PublishConfig()
    storm: StormConfig = StormConfig()
    buses: tuple[BusConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()

    @model_validator(mode="after")
    def _cross(self) -> AgentConfig:
        check_field_sections(self.buses, self.devices)
        window_bytes = self.publish.max_inflight_batches * self.publish.batch_max_bytes
        if window_bytes * 2 > self.outbox.budget_bytes:
            # formed batches are exempt from policy drops (the cloud may hold them already),
            # so the in-flight window must leave room for the policy to work in
            raise ValueError(
                f"outbox.budget_bytes ({self.outbox.budget_bytes}) must be at least twice "
                f"publish.max_inflight_batches x publish.batch_max_bytes ({window_bytes})"
            )
        return self


def parse_agent_config(text: str, source: str) -> AgentConfig:
    data = parse_yaml(text, source)
    if isinstance(data, dict):  # site profile files named relative to the config file
        data = resolve_profile_paths(data, source)
    return validate_config(data, AgentConfig, source)


def load_agent_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", str(p), f"cannot read: {exc.strerror or exc}") from exc
    return parse_agent_config(text, str(p))
