"""The all-in-one's embedded MQTT broker (amqtt), on 1883 when free, else on a free port.

amqtt speaks MQTT 3.1.1 only and has no shared subscriptions; every citywatch client falls
back to 3.1.1 and takes a plain subscription when its share group is unset. It listens on
loopback only: the all-in-one is a laptop or small-district demo, not a production broker.

amqtt 0.12 iterates its subscription table with ``await`` inside the loop (sending retained
messages to a connecting client; every broadcast). A SUBSCRIBE to a new filter from another
client during that await raised ``RuntimeError: dictionary changed size during iteration`` in
``client_connected_cb`` and dropped the connecting client: on a restart with existing data
(many retained messages, every agent connecting and subscribing at once) uplinks were lost.
The broker's table is therefore a :class:`_SnapshotDict`, whose iteration walks a copy.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

from contracts.errors import CitywatchError

log = logging.getLogger(__name__)


class BrokerStartError(CitywatchError):
    """The embedded broker could not listen."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str = "127.0.0.1", preferred: int = 1883) -> int:
    if port_is_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _SnapshotDict(dict[str, Any]):
    """A dict whose iteration is over a snapshot, so a concurrent insert or delete cannot break a loop."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


class EmbeddedBroker:
    """Start/stop an amqtt broker inside the current asyncio loop."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else pick_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 256}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        # the amqtt race above; the attribute exists in the pinned range (amqtt>=0.11,<0.13)
        if not isinstance(getattr(self._broker, "_subscriptions", None), dict):
            raise BrokerStartError("amqtt no longer keeps Broker._subscriptions: review the race work-around")
        self._broker._subscriptions = _SnapshotDict()
        try:
            await self._broker.start()
        except Exception as exc:  # amqtt raises its own BrokerError or OSError
            raise BrokerStartError(f"embedded broker could not listen on {self.host}:{self.port}: {exc}") from exc
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
