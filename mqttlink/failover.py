"""Rotation through the nodes of a broker cluster for paho's threaded clients (``loop_start``).

paho takes one host; when that node dies its own reconnect would knock on the dead node
forever. :class:`FailoverRotation` re-points the client at the next URL of
:attr:`contracts.config.MqttSettings.urls` whenever a reconnect attempt fails (paho's
``on_connect_fail``); paho's reconnect delay (``reconnect_delay_set``) spaces the attempts.
:func:`mqttlink.client.new_client` attaches one whenever ``failover_urls`` is set.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

from contracts.config import MqttSettings

log = logging.getLogger(__name__)


class FailoverRotation:
    """Which node a client uses now; ``advance`` moves it to the next one."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.index = 0
        self._connect: dict[str, Any] = {}

    @property
    def current(self) -> MqttSettings:
        urls = self.settings.urls
        return self.settings.for_url(urls[self.index % len(urls)])

    def remember(self, connect_kwargs: dict[str, Any]) -> None:
        """The keyword arguments of the first ``connect_async`` (clean start, properties, keepalive)."""
        self._connect = dict(connect_kwargs)

    def attach(self, client: mqtt.Client) -> None:
        """Also rotate when an attempt fails (paho reports those through ``on_connect_fail``)."""
        client.on_connect_fail = lambda c, _ud: self.advance(c)

    def advance(self, client: mqtt.Client) -> None:
        """Point ``client`` at the next node; a no-op with a single URL."""
        if len(self.settings.urls) < 2 or not self._connect:
            return
        self.index += 1
        nxt = self.current
        client.connect_async(**{**self._connect, "host": nxt.host, "port": nxt.port})
        log.debug("next connection attempt goes to %s", nxt.url)
