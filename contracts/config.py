"""Typed config: validate once at load, fail with file, key path and bad value.

Pure: callers read the file and pass its text; this module parses and validates.
Models derive from :class:`StrictModel` so unknown keys are rejected, never ignored.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from contracts.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _value_at(data: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return data


def validate_config(data: Any, model: type[M], source: str, prefix: str = "") -> M:
    """Validate already-parsed data; the first error becomes a ConfigError.

    ``prefix`` is the key path of ``data`` inside its file (``"ingest"`` for a section).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # an unknown key explains a "missing" one next to it (a typo), so report it first
        err = min(errors, key=lambda e: e["type"] != "extra_forbidden")
        # pydantic puts union/tagged-union branch names into loc; keep only real keys
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith("function-"))
        value = err.get("input", _value_at(data, loc))
        if err["type"] == "missing":
            value = "<missing>"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        path = _key_path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
        raise ConfigError(source, path, value, problem + more) from exc


def parse_yaml(text: str, source: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(source, where, text[:40], f"not valid YAML: {exc}") from exc
    return {} if data is None else data


def parse_config(text: str, model: type[M], source: str) -> M:
    """Parse YAML text and validate it against ``model``."""
    return validate_config(parse_yaml(text, source), model, source)


# The cloud config file (configs/cloud.example.yaml) has one section per process; each
# process validates its own section strictly and refuses unknown top-level sections.
CLOUD_SECTIONS = ("mqtt", "ingest", "rules", "cases", "console", "notify", "devices", "lighting", "jetstream")


def parse_cloud_section(text: str, section: str, model: type[M], source: str) -> M:
    """Validate one section of the cloud config; a missing section means all defaults."""
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", data, "the cloud config must be a mapping of sections")
    for key in data:
        if key not in CLOUD_SECTIONS:
            raise ConfigError(source, str(key), data[key], f"unknown section; known: {', '.join(CLOUD_SECTIONS)}")
    return validate_config(data.get(section) or {}, model, source, prefix=section)


class MqttSettings(StrictModel):
    """How a process reaches the broker. ``url`` is mqtt://host[:1883] or mqtts://host[:8883]."""

    url: str = "mqtt://127.0.0.1:1883"
    #: more nodes of the same broker cluster: clients rotate through ``url`` + these on connection loss
    failover_urls: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    client_id: str | None = None
    #: "5" (default), or "3.1.1" for brokers without MQTT 5 (the all-in-one's embedded amqtt)
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("failover_urls")
    @classmethod
    def _urls_ok(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parse_mqtt_url(url)
        return value

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node to try, in rotation order."""
        return (self.url, *self.failover_urls)

    def for_url(self, url: str) -> MqttSettings:
        """The same settings pointed at one node (for code that connects to a single URL)."""
        return self.model_copy(update={"url": url, "failover_urls": ()})

    @property
    def host(self) -> str:
        return parse_mqtt_url(self.url)[0]

    @property
    def port(self) -> int:
        return parse_mqtt_url(self.url)[1]

    @property
    def tls(self) -> bool:
        return parse_mqtt_url(self.url)[2]

    @property
    def protocol_level(self) -> int:
        """The CONNECT protocol level: 5 for MQTT 5, 4 for 3.1.1 (paho's MQTTv5 / MQTTv311)."""
        return 5 if self.protocol == "5" else 4


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an mqtt:// or mqtts:// URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls
