"""The MQTT message source of the cloud services: paho's network thread, handing over to asyncio.

Why a thread here (and the asyncio adapter in :mod:`mqttlink.aio` elsewhere): the ingester's
hot path is one Python call per message; paho's own loop thread reads and parses packets while
the asyncio loop decodes and commits, and ``on_delivery`` only appends to a deque. Driving paho
from asyncio socket callbacks costs a loop round trip per packet (the design's performance notes
measured aiomqtt, which does that, at about twice paho's cost per message). Every other
callback is handed to the loop with ``call_soon_threadsafe``.

Delivery is QoS 1 with ``manual_ack`` on a persistent session; a message is PUBACKed only when
the service calls :meth:`ThreadedSource.ack` after its commit. A PUBACK is meaningful only on
the connection that delivered the message, so each delivery carries its connection generation
and stale ones are not acknowledged (the broker redelivers them on the new connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contracts.config import MqttSettings
from mqttlink.client import new_client, suback_ok, subscriptions
from mqttlink.source import Delivery, OnDelivery

log = logging.getLogger(__name__)


class ThreadedSource:
    """A persistent, manually acknowledged MQTT subscription driven by paho's network thread."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        filters: Sequence[str],
        *,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        max_inflight: int = 20,
        ready: asyncio.Event | None = None,
        name: str = "mqtt",
    ) -> None:
        self.settings = settings
        self.filters = list(filters)
        self.name = name
        self.ready = ready or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._gen = 0
        self._connected = False
        self._on_delivery: OnDelivery | None = None
        self._on_published: Callable[[int], None] | None = None
        self._on_connected: Callable[[], None] | None = None
        # MQTT 3.1.1 (the all-in-one's embedded broker) has no Receive Maximum: there the broker's
        # own in-flight limit bounds what we hold unacknowledged
        client, self._connect_args = new_client(settings, client_id, manual_ack=True,
                                                session_expiry_s=session_expiry_s, receive_maximum=receive_maximum)
        client.reconnect_delay_set(1, 10)
        client.max_inflight_messages_set(max_inflight)
        client.on_connect = self._cb_connect
        client.on_subscribe = self._cb_subscribe
        client.on_disconnect = self._cb_disconnect
        client.on_message = self._cb_message
        client.on_publish = self._cb_publish
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected

    def start(
        self,
        on_delivery: OnDelivery,
        *,
        on_published: Callable[[int], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._on_delivery = on_delivery
        self._on_published = on_published
        self._on_connected = on_connected
        self._client.connect_async(**self._connect_args)
        self._client.loop_start()

    def stop(self) -> None:
        self._connected = False  # an intentional disconnect is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, delivery: Delivery) -> None:
        token = delivery.token
        assert isinstance(token, tuple)
        mid, qos, gen = token
        if qos > 0 and gen == self._gen:
            self._client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        return int(info.mid) if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    # ------------------------------------------------------------ paho thread

    def _cb_connect(
        self, client: mqtt.Client, _ud: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            log.error("%s: broker refused the connection: %s", self.name, rc)
            return
        self._gen += 1
        if self.filters:
            client.subscribe(subscriptions(self.settings, self.filters))
        else:  # publish-only (e.g. the JetStream ingester's ack watermarks): ready once connected
            self._loop.call_soon_threadsafe(self.ready.set)
        if not self._connected:
            log.info("%s: connected to %s (session present: %s)", self.name, self.settings.url, flags.session_present)
        self._connected = True
        if self._on_connected is not None:
            self._loop.call_soon_threadsafe(self._on_connected)

    def _cb_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, rcs: list[ReasonCode], _p: Properties | None) -> None:
        if suback_ok(rcs, self.filters):
            self._loop.call_soon_threadsafe(self.ready.set)

    def _cb_disconnect(
        self, _c: mqtt.Client, _ud: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self._connected:
            log.warning("%s: disconnected from broker (%s); reconnecting", self.name, rc)
        self._connected = False

    def _cb_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", None) or ())
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        assert self._on_delivery is not None
        self._on_delivery(Delivery(msg.topic, payload, (msg.mid, msg.qos, self._gen), user))

    def _cb_publish(self, _c: mqtt.Client, _ud: Any, mid: int, rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            log.error("%s: publish refused by the broker: %s", self.name, rc)
            return
        if self._on_published is not None:
            self._loop.call_soon_threadsafe(self._on_published, mid)
