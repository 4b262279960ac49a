"""The ingesters' shared JetStream durable: names and idempotent creation.

It lives with the ingester that binds to it (``cloud_ingest.jetstream``); ``citywatch cluster``
provisions it through here before any gateway publishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from cloud_ingest.errors import IngestError

#: the server's own stream of MQTT QoS 1 publishes (internal name, pinned with the server version)
MQTT_STREAM = "$MQTT_msgs"
MQTT_SUBJECT_PREFIX = "$MQTT.msgs."
#: the ingesters' shared durable consumer on :data:`MQTT_STREAM`
INGEST_DURABLE = "ingest"
INGEST_KINDS = ("telemetry", "events", "status")


def ingest_filter_subjects(kinds: Sequence[str] = INGEST_KINDS) -> list[str]:
    return [f"{MQTT_SUBJECT_PREFIX}citywatch.v1.gw.*.{k}" for k in kinds]


async def provision_ingest_consumer(
    nats_urls: Sequence[str],
    *,
    durable: str = INGEST_DURABLE,
    ack_wait_s: float = 30.0,
    max_ack_pending: int = 20000,
    timeout_s: float = 30.0,
    user: str | None = None,
    password: str | None = None,
) -> None:
    """Create (idempotently) the ingesters' durable pull consumer on ``$MQTT_msgs``.

    Call after an MQTT client has connected once (the stream exists then) and before any gateway
    publishes: the stream has interest retention, so a message with no consumer is not kept.
    """
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    nc = await nats.connect(servers=list(nats_urls), user=user, password=password, connect_timeout=5,
                            max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await js.stream_info(MQTT_STREAM)
                break
            except (NotFoundError, TimeoutError, nats.errors.Error) as exc:
                if time.monotonic() > deadline:
                    raise IngestError(f"stream {MQTT_STREAM} not found: connect an MQTT client first") from exc
                await asyncio.sleep(0.2)
        cfg = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            filter_subjects=ingest_filter_subjects(),
        )
        while True:
            try:
                await js.add_consumer(MQTT_STREAM, cfg)
                return
            except (TimeoutError, nats.errors.Error) as exc:
                if time.monotonic() > deadline:
                    raise IngestError(f"cannot create durable {durable} on {MQTT_STREAM}: {exc}") from exc
                await asyncio.sleep(0.3)
    finally:
        await nc.close()
