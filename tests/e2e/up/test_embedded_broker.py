"""The all-in-one's embedded broker under a start-up storm: many clients connecting while others subscribe.

amqtt 0.12 iterates its subscription table with ``await`` inside the loop (retained messages for
a connecting client, and every broadcast); a SUBSCRIBE to a new filter from another client in
that window raised ``RuntimeError: dictionary changed size during iteration`` in
``client_connected_cb`` and dropped the connecting client. That is what a second ``citywatch
up`` on existing data hit: many retained messages (births, acks, open cases) and every agent
connecting and subscribing to its own filters at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from citywatch.embedded_broker import EmbeddedBroker
from contracts.config import MqttSettings
from mqttlink.aio import MqttLink, open_link
from tests.support.services import free_port

pytestmark = pytest.mark.e2e
CLIENTS = 8
ROUNDS = 3
RETAINED = 5000


def _ignore(_topic: str, _payload: bytes) -> None:
    return None


async def test_clients_connecting_while_others_subscribe_all_connect_without_errors() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    settings = MqttSettings(url=broker.url, protocol="3.1.1")
    links: list[MqttLink] = []

    async def connect(client_id: str) -> MqttLink:
        link = await open_link(settings, client_id, will=None, on_message=_ignore, protocol="3.1.1")
        links.append(link)
        return link

    try:
        seed = await connect("seed")
        for i in range(RETAINED):  # births, acks and open-case sets a restarted district starts with
            seed.publish(f"citywatch/v1/case-open/dev-{i}", b"{}", qos=1, retain=True)
        seed.subscribe([("citywatch/v1/case-open/+", 1)])
        await asyncio.wait_for(seed.subscribed.wait(), 20)
        churner = await connect("churner")
        done = asyncio.Event()

        async def churn() -> None:  # agents subscribing to their own new filters meanwhile
            i = 0
            while not done.is_set():
                churner.subscribe([(f"citywatch/v1/gw/gw-{i}/cmd", 1)])
                i += 1
                await asyncio.sleep(0.005)

        churning = asyncio.create_task(churn())
        try:
            for round_ in range(ROUNDS):  # later rounds reconnect on the same client ids
                connected = await asyncio.gather(*(connect(f"c-{i}") for i in range(CLIENTS)))
                await asyncio.sleep(0.5)
                assert all(not link.closed.is_set() for link in connected), [link.close_reason for link in connected]
                for link in connected:
                    await link.close()
                assert not errors, (round_, [str(e.get("exception")) for e in errors[:3]])
        finally:
            done.set()
            await churning
    finally:
        for link in links:
            await link.close()
        await broker.stop()
        loop.set_exception_handler(previous)
    assert not errors, [str(e.get("exception")) for e in errors[:3]]
