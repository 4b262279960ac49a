"""The ``console`` section of the cloud config, validated once at load."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Literal

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

class TiandituLayer(StrictModel):
    """天地图 WMTS (CGCS2000 ≈ WGS-84: no offset). ``key`` is your 天地图 browser key (tk)."""

    kind: Literal["tianditu"]
    name: str = "天地图 Tianditu"
    key: str = Field(min_length=8, pattern=r"^[0-9A-Za-z]+$")
    layer: Literal["vec", "img", "ter"] = "vec"  # 矢量 / 影像 / 地形
    labels: bool = True  # the matching annotation layer (cva / cia / cta) on top


class XyzLayer(StrictModel):
    """Any ``{z}/{x}/{y}`` tile server (OSM-style). ``gcj02``: its streets are drawn in GCJ-02."""

    kind: Literal["xyz"]
    name: str
    url: str = Field(pattern=r"^https?://[^\s]+$")
    attribution: str = ""
    max_zoom: int = Field(default=19, ge=1, le=22)
    gcj02: bool = False

    @field_validator("url")
    @classmethod
    def _has_xyz(cls, value: str) -> str:
        if not all(p in value for p in ("{z}", "{x}", "{y}")):
            raise ValueError("url must contain {z}, {x} and {y}")
        return value


class MbtilesLayer(StrictModel):
    """A local MBTiles (SQLite) raster archive, served by the console at ``/tiles/{z}/{x}/{y}``."""

    kind: Literal["mbtiles"]
    name: str
    path: Path
    max_zoom: int = Field(default=18, ge=1, le=22)
    gcj02: bool = False


BaseLayer = Annotated[TiandituLayer | XyzLayer | MbtilesLayer, Field(discriminator="kind")]


class MapSettings(StrictModel):
    """The one map (一张图): tile base layers, the district's own vector layer, the start view.

    Data are WGS-84. If the base layers are GCJ-02 (``gcj02: true``) the console shifts every
    point it sends to the browser, so all configured tile layers must agree on the datum.
    With no tile layer (offline, the demo) the district GeoJSON alone is the base map.
    """

    base_layers: tuple[BaseLayer, ...] = ()
    district_geojson: Path | None = None  # grids (layer=grid), streets (layer=street), river, ...
    center: tuple[float, float] | None = None  # (lat, lon); default: the middle of the devices
    zoom: int = Field(default=15, ge=1, le=20)
    cluster_below_zoom: int = Field(default=17, ge=1, le=21)  # markers cluster up to this zoom
    address_max_m: float = Field(default=400.0, gt=0)  # a device's address: streets this near

    @model_validator(mode="after")
    def _one_datum(self) -> MapSettings:
        datums = {getattr(b, "gcj02", False) for b in self.base_layers}
        if len(datums) > 1:
            raise ValueError("base_layers mix GCJ-02 and WGS-84 tiles; use one datum")
        return self

    @property
    def gcj02(self) -> bool:
        return any(getattr(b, "gcj02", False) for b in self.base_layers)


class PriorityEntry(StrictModel):
    """One board priority step: alarms whose rule (a glob) and severity match rank here."""

    rule: str = "*"
    severity: Literal["minor", "major", "critical"] | None = None

    def matches(self, rule: str, severity: str) -> bool:
        return fnmatch.fnmatchcase(rule, self.rule) and (self.severity is None or self.severity == severity)


DEFAULT_PRIORITY = (
    PriorityEntry(rule="road-water-*", severity="critical"),
    PriorityEntry(rule="road-water-*", severity="major"),
    PriorityEntry(rule="road-water-*"),
    PriorityEntry(severity="critical"),
    PriorityEntry(rule="manhole-*"),
    PriorityEntry(severity="major"),
)


class BoardSettings(StrictModel):
    """The alarm board: what the duty officer sees first (flood first), and what a person may clear."""

    priority: tuple[PriorityEntry, ...] = DEFAULT_PRIORITY  # first match wins; unmatched rank last
    manual_clear_rules: tuple[str, ...] = ("wim-overload", "wim-axle-overload")  # event alarms: no sensor clears
    sound: bool = True  # a new critical alarm beeps (each user can mute it)
    repeat_window_s: float = Field(default=86400.0, gt=0)  # repeats of a device+rule counted over this


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
    media_dir: Path = Path("data/media")  # case photos (处置前后照片), one sub-directory per case
    media_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)  # one upload
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
    rules_files: tuple[Path, ...] = ()  # = rules.files: charts draw the thresholds the engine uses
    map: MapSettings = MapSettings()
    board: BoardSettings = BoardSettings()

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
