"""The ``console`` section of the cloud config, validated once at load."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator

from console.policy import Role
from contracts.config import MqttSettings, StrictModel, parse_cloud_section
from contracts.errors import ConfigError
from lighting.schedule import LightingSettings

_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class UserSpec(StrictModel):
    """A console user. ``password_hash`` is an argon2 hash (``citywatch console --hash-password``)."""

    username: str
    password_hash: str
    role: Role
    unit: str | None = None  # responsible unit; required for case handlers
    display_name: str = ""

    @field_validator("username")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _USERNAME.fullmatch(value):
            raise ValueError("username must match [a-z0-9][a-z0-9_.-]{0,63}")
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash_ok(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash (never a plain password)")
        return value

    @model_validator(mode="after")
    def _handler_has_unit(self) -> UserSpec:
        if self.role is Role.CASE_HANDLER and not self.unit:
            raise ValueError("a case_handler needs a unit")
        return self


class ApiKeySpec(StrictModel):
    """A machine client (12319 hotline, citizen app). Only the SHA-256 of the key is stored."""

    name: str
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RateSpec(StrictModel):
    per_minute: float = Field(gt=0)
    burst: int = Field(ge=1)


class BackoffSpec(StrictModel):
    """Failed logins per (account, client address); see :class:`console.auth.LoginBackoff`."""

    free_failures: int = Field(default=5, ge=0, le=100)
    base_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=900.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _cap_above_base(self) -> BackoffSpec:
        if self.max_s < self.base_s:
            raise ValueError("max_s must be >= base_s")
        return self


class ConsoleSettings(StrictModel):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    production: bool = True  # OpenAPI docs need a login when true
    secret_key: str = Field(min_length=32)  # HMAC key for session tokens; keep it out of git
    token_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86400)
    timezone: str = "Asia/Shanghai"  # Open311 datetimes and page times
    users: tuple[UserSpec, ...] = ()
    api_keys: tuple[ApiKeySpec, ...] = ()
    login_rate: RateSpec = RateSpec(per_minute=10, burst=5)  # login attempts per client address
    login_backoff: BackoffSpec = BackoffSpec()  # failed logins per (account, client address)
    # reverse proxies whose X-Forwarded-For is believed (CIDRs); empty: the header is ignored
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    write_rate: RateSpec = RateSpec(per_minute=120, burst=30)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_page_size: int = Field(default=200, ge=1, le=10_000)
    ingest_store_url: str = "sqlite:///data/citywatch.db"  # the ingest section's store_url
    alarm_store_url: str = "sqlite:///data/rules.db"  # the rule engine's AlarmStore
    case_store_url: str = "sqlite:///data/cases.db"
    audit_store_url: str = "sqlite:///data/console.db"
    cookie_secure: bool = False  # set true behind TLS; browsers drop Secure cookies on plain http
    open311_public_read: bool = True  # GeoReport GET methods need no key, as the spec says
    live_feed: bool = True  # subscribe to alarms/telemetry on MQTT for the SSE stream
    sse_queue_max: int = Field(default=1000, ge=10)
    lamp_command_timeout_s: float = Field(default=10.0, gt=0, le=120)  # wait this long for each cmd/result
    overview_cache_s: float = Field(default=1.0, ge=0, le=60)  # one overview computation shared by all screens

    @model_validator(mode="after")
    def _unique(self) -> ConsoleSettings:
        names = [u.username for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError("duplicate username in users")
        return self


class CloudConsoleConfig(StrictModel):
    """What ``citywatch console`` needs from the cloud config file (``lighting``: to show lamp schedules)."""

    console: ConsoleSettings
    mqtt: MqttSettings
    lighting: LightingSettings = LightingSettings()


def load_console_config(path: str | Path) -> CloudConsoleConfig:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", str(path), f"cannot read: {exc.strerror}") from exc
    console = parse_cloud_section(text, "console", ConsoleSettings, source)
    mqtt = parse_cloud_section(text, "mqtt", MqttSettings, source)
    lighting = parse_cloud_section(text, "lighting", LightingSettings, source)
    return CloudConsoleConfig(console=console, mqtt=mqtt, lighting=lighting)
