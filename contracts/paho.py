"""One way to configure a paho-mqtt 2.x client from :class:`MqttSettings`, for every process.

Builds and configures the client object only (no network I/O happens here): MQTT 5 with a
persistent session (clean start off, session expiry, receive maximum), or MQTT 3.1.1 with
``clean_session=False`` for brokers without MQTT 5 (the all-in-one's embedded amqtt).
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.config import MqttSettings


def new_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    persistent: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> mqtt.Client:
    """A configured client; call :func:`connect_async` (or ``client.connect``) next."""
    v5 = settings.protocol_level == 5
    if v5:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=manual_ack)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=not persistent, manual_ack=manual_ack)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    client._citywatch_connect = {  # type: ignore[attr-defined]
        "persistent": persistent, "session_expiry_s": session_expiry_s, "receive_maximum": receive_maximum,
    }
    return client


def connect_kwargs(client: mqtt.Client, settings: MqttSettings) -> dict[str, Any]:
    """Arguments for ``connect``/``connect_async`` that match how the client was built."""
    opts = getattr(client, "_citywatch_connect", {"persistent": False, "session_expiry_s": 0,
                                                  "receive_maximum": None})
    kwargs: dict[str, Any] = {"host": settings.host, "port": settings.port, "keepalive": settings.keepalive_s}
    if settings.protocol_level == 5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if opts["session_expiry_s"]:
            props.SessionExpiryInterval = opts["session_expiry_s"]
        if opts["receive_maximum"]:
            props.ReceiveMaximum = opts["receive_maximum"]
        kwargs["clean_start"] = not opts["persistent"]
        kwargs["properties"] = props
    return kwargs


def connect_async(client: mqtt.Client, settings: MqttSettings) -> None:
    client.connect_async(**connect_kwargs(client, settings))


def sub_options(settings: MqttSettings, qos: int = 1) -> SubscribeOptions | int:
    """What ``subscribe([(topic, opts)])`` takes for this protocol (v3.1.1 wants a plain QoS)."""
    return SubscribeOptions(qos=qos) if settings.protocol_level == 5 else qos
