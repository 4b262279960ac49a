"""The ``rules`` section of the cloud config (broker settings come from the ``mqtt`` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from contracts.config import MqttSettings, StrictModel, parse_cloud_section
from contracts.ids import is_valid_id
from rules.errors import RulesError
from rules.sharding import parse_shard


class RulesSettings(StrictModel):
    """How the rule runner subscribes, stores and publishes."""

    #: rule files, loaded and merged in order (a rule name may be defined once)
    files: list[str] = Field(default_factory=lambda: ["configs/rules/default.yaml"], min_length=1)
    #: rule state + alarms: ``sqlite:///data/rules.db`` or ``postgresql://...``
    store_url: str = "sqlite:///data/rules.db"
    #: stable per instance: its persistent session keeps unacknowledged readings across a crash
    client_id: str = "citywatch-rules-1"
    #: ``$share/<group>/`` for telemetry and events. Rule state is per device, so a group must
    #: have ONE member per shard (see ``gateways``); null subscribes without a group.
    share_group: str | None = "rules"
    #: shard: evaluate only these gateways' devices (empty: all gateways)
    gateways: list[str] = Field(default_factory=list)
    #: hash shard ``"i/n"``: evaluate only gateways with ``shard_of(gw, n) == i`` (rules.sharding);
    #: run n runners with i = 0..n-1, each with its own store_url, and no share_group
    shard: str | None = None
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    #: unacknowledged messages in flight to us; a step takes every queued one (at most this many) and
    #: commits the state once, so under a backlog a device's state is written once per step, not per reading
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: messages evaluated between yields to the event loop within one step
    max_batch_messages: int = Field(default=500, ge=1)
    max_payload_bytes: int = Field(default=1 << 20, ge=256)
    #: how often staleness and self-clearing alarms are checked without new input
    tick_s: float = Field(default=1.0, gt=0)
    metrics_host: str = "127.0.0.1"
    #: Prometheus ``/metrics`` (readings evaluated, lag, step time); null (the default) serves none
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("share_group")
    @classmethod
    def _group_ok(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_id(value):
            raise ValueError("share_group must match [a-z0-9][a-z0-9-]{0,62}")
        return value

    @field_validator("shard")
    @classmethod
    def _shard_ok(cls, value: str | None) -> str | None:
        if value is not None:
            parse_shard(value)
        return value

    @property
    def shard_spec(self) -> tuple[int, int] | None:
        return None if self.shard is None else parse_shard(self.shard)

    @field_validator("gateways")
    @classmethod
    def _gws_ok(cls, value: list[str]) -> list[str]:
        for gw in value:
            if not is_valid_id(gw):
                raise ValueError(f"gateway id {gw!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
        return value

    @field_validator("store_url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("store_url must start with sqlite:///, postgresql:// or postgres://")
        return value


def load_settings(path: str | Path) -> tuple[MqttSettings, RulesSettings]:
    """Validate the ``mqtt`` and ``rules`` sections of a cloud config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read config {path}: {exc.strerror}") from exc
    src = str(path)
    return parse_cloud_section(text, "mqtt", MqttSettings, src), parse_cloud_section(text, "rules", RulesSettings, src)
