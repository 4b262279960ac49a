"""The astronomical switching task: every ``tick_s``, send the circuits' due steps as lamp commands.

It runs inside ``citywatch cases`` (and the all-in-one ``citywatch up``): the case bridge is
the one cloud process that runs exactly once per district (docs/deployment.md) — the console
may be replicated behind a proxy and the rule engine is sharded by gateway, and either would
send every step once per replica or shard. Its own MQTT link (:mod:`mqttlink.aio`) learns the lamps from the
gateways' retained birth messages, publishes on ``.../cmd`` and reads ``.../cmd/result``; a
refused or failed step is logged (the lamp rules raise what stays wrong: ``lampDarkAtNight``,
``lampUnexpectedOn``). Schedule arithmetic is :func:`lighting.schedule.tick` (pure).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from contracts import payloads, topics
from contracts.config import MqttSettings
from contracts.errors import ContractError, PayloadError
from lighting.schedule import Lamp, LightingSettings, tick
from mqttlink.aio import MqttLink, open_link
from mqttlink.backoff import backoff_delay
from mqttlink.errors import LinkError

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
        self._mqtt = mqtt_settings
        self._link: MqttLink | None = None
        self._rng = random.Random()

    def lamps(self) -> list[Lamp]:
        with self._lock:
            return [lamp for group in self._lamps.values() for lamp in group]

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (reconnecting with the project's backoff), then tick until ``stop`` is set."""
        ticker = asyncio.create_task(self._tick(stop))
        attempt = 0
        try:
            while not stop.is_set():
                try:
                    link = await open_link(self._mqtt, self.settings.client_id, will=None,
                                           on_message=self._on_message)
                except LinkError as exc:
                    if attempt == 0:
                        log.warning("lighting: cannot reach %s: %s; retrying", self._mqtt.url, exc)
                    await _sleep_or_stop(stop, backoff_delay(attempt, 1.0, 30.0, self._rng))
                    attempt += 1
                    continue
                attempt = 0
                try:
                    link.subscribe([(topics.gw_filter("status"), 1), (topics.gw_filter("cmd/result"), 1)])
                    self._link = link
                    self._connected.set()
                    log.info("lighting: connected; %d circuits scheduled", len(self.settings.circuits))
                    closed = asyncio.create_task(link.closed.wait())
                    stopped = asyncio.create_task(stop.wait())
                    await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    for t in (closed, stopped):
                        t.cancel()
                except LinkError as exc:
                    log.warning("lighting: subscribe failed: %s", exc)
                finally:
                    self._connected.clear()
                    self._link = None
                    if stop.is_set():
                        link.disconnect()
                    await link.close()
                if not stop.is_set():
                    log.warning("lighting: disconnected (%s); reconnecting", link.close_reason)
                    await _sleep_or_stop(stop, backoff_delay(0, 1.0, 30.0, self._rng))
        finally:
            ticker.cancel()

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._connected.is_set():
                self.step(self.clock())
            await _sleep_or_stop(stop, self.settings.tick_s)

    def step(self, now: float) -> int:
        """Send what is due now; returns the number of commands published."""
        commands, self._last = tick(self.settings, self.lamps(), self._last, now, self.tz)
        for gw, cmd in commands:
            link = self._link
            try:
                if link is None:
                    raise LinkError("not connected")
                link.publish(topics.cmd(gw), payloads.encode_command(cmd), qos=1)
            except LinkError as exc:
                log.warning("lighting: %s %s not sent: %s", cmd.action, cmd.device, exc)
        if commands:
            self.sent += len(commands)
            log.info("lighting: sent %d commands (%s)", len(commands),
                     ", ".join(sorted({f"{c.action} {c.device}" for _g, c in commands}))[:300])
        return len(commands)

    # loop thread ---------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            gw, kind = topics.parse_gw_topic(topic)
            if kind == "status" and payload:
                st = payloads.decode_status(payload, max_bytes=1 << 20)
                lamps = [Lamp(d.id, gw, d.circuit, d.lat, d.lon) for d in st.devices if d.kind == "lamp"]
                if lamps or st.state == "online":  # an offline will carries no devices: keep the last known
                    with self._lock:
                        self._lamps[gw] = lamps
            elif kind == "cmd/result":
                res = payloads.decode_command_result(payload)
                if res.id.startswith("astro-") and not res.ok:
                    self.failed += 1
                    log.warning("lighting: step %s refused by %s: %s %s", res.id, gw, res.error,
                                res.detail.get("detail", ""))
        except (PayloadError, ContractError) as exc:
            log.debug("lighting: ignoring %s: %s", topic, exc)


async def _sleep_or_stop(stop: asyncio.Event, delay_s: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        pass
