"""The one paho-mqtt 2.x client factory of every process, from :class:`MqttSettings`.

Builds the client object and the arguments of its CONNECT only (no network I/O happens here):
MQTT 5 with a persistent session (clean start off, session expiry, receive maximum), or MQTT
3.1.1 with ``clean_session=False`` for brokers without MQTT 5 (the all-in-one's embedded amqtt).
How the client is then driven — paho's network thread (:mod:`mqttlink.threaded`) or the asyncio
loop (:mod:`mqttlink.aio`) — is the caller's choice between these two modules, not a copy.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.config import MqttSettings
from mqttlink.errors import LinkError
from mqttlink.failover import FailoverRotation

log = logging.getLogger(__name__)


def new_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    persistent: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
    protocol_level: int | None = None,
) -> tuple[mqtt.Client, dict[str, Any]]:
    """A configured client and the keyword arguments for its ``connect``/``connect_async``.

    ``protocol_level`` (5 or 4) overrides the settings' protocol, for the 3.1.1 fallback.
    Raises :class:`LinkError` when the TLS files cannot be loaded.
    """
    level = protocol_level if protocol_level is not None else settings.protocol_level
    connect: dict[str, Any] = {"host": settings.host, "port": settings.port, "keepalive": settings.keepalive_s}
    if level == 5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=manual_ack)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry_s:
            props.SessionExpiryInterval = session_expiry_s
        if receive_maximum:
            props.ReceiveMaximum = receive_maximum
        connect.update(clean_start=not persistent, properties=props)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=not persistent, manual_ack=manual_ack)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LinkError(f"TLS setup failed (ca/cert/key files): {exc}") from exc
    if settings.failover_urls:  # a broker cluster: a failed reconnect moves on to the next node
        rotation = FailoverRotation(settings)
        rotation.remember(connect)
        rotation.attach(client)
    return client, connect


def subscriptions(settings: MqttSettings, filters: Sequence[str], qos: int = 1) -> list[tuple[str, Any]]:
    """What ``subscribe`` takes for these filters on this protocol (v3.1.1 wants a plain QoS)."""
    opts: SubscribeOptions | int = SubscribeOptions(qos=qos) if settings.protocol_level == 5 else qos
    return [(f, opts) for f in filters]


def suback_ok(reason_codes: Sequence[ReasonCode], filters: Sequence[str]) -> bool:
    """Check a SUBACK: log the refused filters (an ACL denial is silent otherwise) and say if all were granted."""
    bad = [f"{f}: {rc}" for f, rc in zip(filters, reason_codes, strict=False) if rc.is_failure]
    if bad:
        log.error("subscription refused: %s", ", ".join(bad))
    return not bad
