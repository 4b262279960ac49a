"""The ``ingest`` section of the cloud config (the ``mqtt`` section is :class:`contracts.config.MqttSettings`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from cloud_ingest.errors import IngestError
from cloud_ingest.retention import RetentionSettings
from cloud_ingest.validate import Limits
from contracts.config import MqttSettings, StrictModel, parse_cloud_section
from contracts.ids import is_valid_id


class IngestSettings(StrictModel):
    """How the ingester batches, validates and acknowledges."""

    store_url: str = "sqlite:///data/citywatch.db"
    #: MQTT client id of this ingester: its persistent session holds unacknowledged messages
    #: across a crash, so it must be stable per instance and unique between instances.
    client_id: str = "citywatch-ingest-1"
    #: ``$share/<group>/...`` subscriptions for telemetry and events (status is never shared: it is
    #: retained, and shared subscriptions get no retained messages). ``null`` when the broker has none.
    share_group: str | None = "ingest"
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    #: unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum).
    #: With acks held until commit this bounds the ingester's memory while the store is down.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: concurrent commits, one store connection each (PostgreSQL: 2 lets the database use two
    #: cores; acknowledgements still go out in arrival order). SQLite has one writer: use 1.
    writers: int = Field(default=1, ge=1, le=8)
    batch_max_readings: int = Field(default=5000, ge=1)
    batch_max_messages: int = Field(default=500, ge=1)
    linger_ms: int = Field(default=50, ge=0)
    max_payload_bytes: int = Field(default=256 * 1024, ge=256)
    late_limit_s: float = Field(default=14 * 86400.0, gt=0)
    skew_limit_s: float = Field(default=300.0, ge=0)
    first_seq: int = Field(default=1, ge=0)
    ack_boots: int = Field(default=4, ge=1)
    gap_grace_s: float = Field(default=30.0, ge=0)
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    stall_warn_s: float = Field(default=10.0, gt=0)
    #: MQTT 5 user property in which the broker states the publisher's authenticated identity
    #: (e.g. an EMQX rule); when present it must equal the topic's gateway.
    identity_property: str | None = None
    metrics_host: str = "127.0.0.1"
    #: Prometheus ``/metrics``; null disables the endpoint.
    metrics_port: int | None = Field(default=9108, ge=0, le=65535)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("share_group")
    @classmethod
    def _group_ok(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_id(value):
            raise ValueError("share_group must match [a-z0-9][a-z0-9-]{0,62}")
        return value

    @field_validator("store_url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite:///", "postgresql://", "postgres://", "influxdb://", "influxdbs://", "influxdb1://", "influxdb1s://")
        ):
            raise ValueError(
                "store_url must start with sqlite:///, postgresql://, postgres://, influxdb:// or influxdb1://"
            )
        return value

    @model_validator(mode="after")
    def _compaction_after_late_limit(self) -> IngestSettings:
        self.retention.check_late_limit(self.late_limit_s)
        return self

    def limits(self) -> Limits:
        return Limits(self.max_payload_bytes, self.late_limit_s, self.skew_limit_s)


def load_settings(path: str | Path) -> tuple[MqttSettings, IngestSettings]:
    """Validate the ``mqtt`` and ``ingest`` sections of a cloud config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise IngestError(f"cannot read config {path}: {exc}") from exc
    src = str(path)
    return parse_cloud_section(text, "mqtt", MqttSettings, src), parse_cloud_section(
        text, "ingest", IngestSettings, src
    )
