"""What the cloud services need from a broker, independent of the transport.

Ingest, rules and the case bridge consume through this interface; :class:`mqttlink.threaded.
ThreadedSource` implements it over MQTT, and another transport (a JetStream consumer) can
implement it without touching the services' cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Delivery:
    """One received message. ``token`` is the transport's acknowledgement handle (opaque here)."""

    topic: str
    payload: bytes
    token: object
    user_properties: tuple[tuple[str, str], ...] = ()


#: called for each delivery, possibly on a transport thread: it must only hand the delivery over
OnDelivery = Callable[[Delivery], None]


class MessageSource(Protocol):
    """At-least-once delivery with explicit acknowledgement after the consumer's commit."""

    #: set (on the loop) once every subscription is granted
    ready: asyncio.Event

    @property
    def connected(self) -> bool: ...

    def start(
        self,
        on_delivery: OnDelivery,
        *,
        on_published: Callable[[int], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        """Begin delivering; ``on_published(pub_id)`` and ``on_connected()`` run on the loop."""

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge one delivery (after its effects are committed); stale ones are ignored."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | None:
        """Publish at least once; returns the id ``on_published`` will report, or None if not queued."""

    def stop(self) -> None:
        """Disconnect on purpose (no reconnect, no warning)."""
