"""The astronomical switching task: every ``tick_s``, send the circuits' due steps as lamp commands.

It runs inside ``citywatch cases`` (and the all-in-one ``citywatch up``): the case bridge is
the one cloud process that runs exactly once per district (docs/deployment.md) — the console
may be replicated behind a proxy and the rule engine is sharded by gateway, and either would
send every step once per replica or shard. Its own MQTT client learns the lamps from the
gateways' retained birth messages, publishes on ``.../cmd`` and reads ``.../cmd/result``; a
refused or failed step is logged (the lamp rules raise what stays wrong: ``lampDarkAtNight``,
``lampUnexpectedOn``). Schedule arithmetic is :func:`lighting.schedule.tick` (pure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from contracts.paho import new_client
from lighting.schedule import Lamp, LightingSettings, tick

log = logging.getLogger(__name__)


class LampScheduler:
    def __init__(self, mqtt_settings: MqttSettings, settings: LightingSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.tz = ZoneInfo(settings.timezone)
        self.sent = 0
        self.failed = 0
        self._lamps: dict[str, list[Lamp]] = {}  # gateway -> its lamps (paho thread writes, loop reads)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._last: dict[str, float] = {}
        self._client, self._connect = new_client(mqtt_settings, settings.client_id, persistent=False)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def lamps(self) -> list[Lamp]:
        with self._lock:
            return [lamp for group in self._lamps.values() for lamp in group]

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, then tick until ``stop`` is set."""
        self._client.connect_async(**self._connect)
        self._client.loop_start()
        try:
            while not stop.is_set():
                if self._connected.is_set():
                    self.step(self.clock())
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.tick_s)
                except TimeoutError:
                    pass
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def step(self, now: float) -> int:
        """Send what is due now; returns the number of commands published."""
        commands, self._last = tick(self.settings, self.lamps(), self._last, now, self.tz)
        for gw, cmd in commands:
            info = self._client.publish(topics.cmd(gw), payloads.encode_command(cmd), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("lighting: %s %s not sent: %s", cmd.action, cmd.device, mqtt.error_string(info.rc))
        if commands:
            self.sent += len(commands)
            log.info("lighting: sent %d commands (%s)", len(commands),
                     ", ".join(sorted({f"{c.action} {c.device}" for _g, c in commands}))[:300])
        return len(commands)

    # paho thread ---------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("lighting: broker refused the connection: %s", reason)
            return
        client.subscribe([(topics.gw_filter("status"), 1), (topics.gw_filter("cmd/result"), 1)])
        if not self._connected.is_set():
            log.info("lighting: connected; %d circuits scheduled", len(self.settings.circuits))
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            gw, kind = topics.parse_gw_topic(msg.topic)
            if kind == "status" and msg.payload:
                st = payloads.decode_status(bytes(msg.payload), max_bytes=1 << 20)
                lamps = [Lamp(d.id, gw, d.circuit, d.lat, d.lon) for d in st.devices if d.kind == "lamp"]
                if lamps or st.state == "online":  # an offline will carries no devices: keep the last known
                    with self._lock:
                        self._lamps[gw] = lamps
            elif kind == "cmd/result":
                res = payloads.decode_command_result(bytes(msg.payload))
                if res.id.startswith("astro-") and not res.ok:
                    self.failed += 1
                    log.warning("lighting: step %s refused by %s: %s %s", res.id, gw, res.error,
                                res.detail.get("detail", ""))
        except (PayloadError, ContractError) as exc:
            log.debug("lighting: ignoring %s: %s", msg.topic, exc)
