"""The asyncio MQTT link against a real Mosquitto: a closed link must not touch a descriptor
number the kernel has since given to another link's socket."""

from __future__ import annotations

import asyncio

import pytest

from contracts.config import MqttSettings
from mqttlink.aio import MqttLink
from tests.support.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_releasing_a_closed_link_leaves_the_next_links_reused_descriptor_alone(broker: Mosquitto) -> None:
    # the all-in-one's "no CONNACK within 10 s": the lighting scheduler's MQTT 5 attempt was refused,
    # paho closed its socket, an agent's new socket got the same number, and the refused link's
    # clean-up then unregistered the agent's reader and writer
    settings = MqttSettings.model_validate({"url": broker.url, "protocol": "3.1.1"})
    got: asyncio.Queue[bytes] = asyncio.Queue()
    a = MqttLink(settings, "fd-a", will=None, on_message=lambda _t, _p: None, protocol="3.1.1")
    await a.connect()
    freed = a.fileno
    a.disconnect()  # paho writes DISCONNECT and closes the socket: the number is free again
    b = MqttLink(settings, "fd-b", will=None, on_message=lambda _t, p: got.put_nowait(p), protocol="3.1.1")
    try:
        await b.connect()
        assert b.fileno == freed, "precondition: the kernel reuses the lowest free descriptor number"
        await a.close()  # the late clean-up of the first link
        b.subscribe([("fd/echo", 1)])
        await asyncio.wait_for(b.subscribed.wait(), 10)
        b.publish("fd/echo", b"still-registered")
        assert await asyncio.wait_for(got.get(), 10) == b"still-registered"
    finally:
        await b.close()
