"""One way to configure a paho-mqtt 2.x client from :class:`MqttSettings`, for every process.

Builds the client object and the arguments of its CONNECT only (no network I/O happens here):
MQTT 5 with a persistent session (clean start off, session expiry, receive maximum), or MQTT
3.1.1 with ``clean_session=False`` for brokers without MQTT 5 (the all-in-one's embedded amqtt).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.config import MqttSettings
from contracts.failover import FailoverRotation

log = logging.getLogger(__name__)


def new_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    persistent: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> tuple[mqtt.Client, dict[str, Any]]:
    """A configured client and the keyword arguments for its ``connect``/``connect_async``."""
    connect: dict[str, Any] = {"host": settings.host, "port": settings.port, "keepalive": settings.keepalive_s}
    if settings.protocol_level == 5:
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
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    if settings.failover_urls:  # a broker cluster: a failed reconnect moves on to the next node
        rotation = FailoverRotation(settings)
        rotation.remember(connect)
        rotation.attach(client)
    return client, connect


def sub_options(settings: MqttSettings, qos: int = 1) -> SubscribeOptions | int:
    """What ``subscribe([(topic, opts)])`` takes for this protocol (v3.1.1 wants a plain QoS)."""
    return SubscribeOptions(qos=qos) if settings.protocol_level == 5 else qos


class SubscriberCallbacks:
    """paho callbacks shared by the cloud subscribers: log state transitions once, signal readiness.

    The host class sets ``_connected``, ``_loop`` (the asyncio loop) and ``ready_event`` (set once
    every subscription is granted); the callbacks run on paho's thread and only hand over to the loop.
    """

    _connected: bool
    _loop: asyncio.AbstractEventLoop | None
    ready_event: asyncio.Event | None

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, rcs: list[ReasonCode], _p: Properties | None) -> None:
        bad = [str(rc) for rc in rcs if rc.is_failure]
        if bad:
            log.error("subscription refused: %s", ", ".join(bad))
        elif self._loop is not None and self.ready_event is not None:
            self._loop.call_soon_threadsafe(self.ready_event.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _ud: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self._connected:
            log.warning("disconnected from broker (%s); paho reconnects", rc)
        self._connected = False
