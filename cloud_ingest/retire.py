"""Retire an ingester's persistent MQTT session (single-broker Mosquitto layout).

Why: an ingester subscribes ``$share/ingest/...`` on a persistent session (7 days by default).
Renaming or removing an instance leaves its old session on the broker, still a member of the
share group: Mosquitto keeps routing every other message to it until the session expires, and
nobody acknowledges them (the edge's resend after ``ack_timeout_s`` is what recovers them).
Connecting once with the old client id and a clean start, with no session expiry, makes the
broker discard that session and its queue at once: run ``citywatch ingest --retire OLD_ID``
whenever an ingester is renamed or removed. (On the NATS cluster layout nothing like this is
needed: ingesters bind to the shared JetStream durable by name and hold no session.)
"""

from __future__ import annotations

import time

from cloud_ingest.errors import IngestError
from contracts.config import MqttSettings
from mqttlink.client import new_client


def retire_session(settings: MqttSettings, client_id: str, timeout_s: float = 10.0) -> None:
    """Connect as ``client_id`` with a clean start and session expiry 0, then disconnect."""
    client, connect = new_client(settings, client_id, persistent=False, session_expiry_s=0)
    try:
        client.connect(**connect)
    except OSError as exc:
        raise IngestError(f"cannot reach {settings.url} to retire session {client_id}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    try:
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise IngestError(f"no CONNACK from {settings.url} within {timeout_s:.0f} s")
            client.loop(0.1)
    finally:
        client.disconnect()
