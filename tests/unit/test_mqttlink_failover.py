"""Rotation through a broker cluster's nodes for paho's threaded clients (no network: connect_async only stores)."""

from __future__ import annotations

import pytest

from contracts.config import MqttSettings
from mqttlink.client import new_client


def test_a_failed_attempt_moves_the_client_to_the_next_node_and_wraps_around() -> None:
    s = MqttSettings(url="mqtt://n1:1883", failover_urls=("mqtt://n2:1884", "mqtt://n3:1885"), protocol="3.1.1")
    client, connect = new_client(s, "t")
    client.connect_async(**connect)
    assert (client.host, client.port) == ("n1", 1883)
    seen = []
    for _ in range(3):
        client.on_connect_fail(client, None)
        seen.append((client.host, client.port))
    assert seen == [("n2", 1884), ("n3", 1885), ("n1", 1883)]


def test_a_single_url_gets_no_rotation_and_bad_failover_urls_are_refused() -> None:
    client, _ = new_client(MqttSettings(url="mqtt://n1:1883"), "t")
    assert client.on_connect_fail is None
    with pytest.raises(ValueError):
        MqttSettings(url="mqtt://n1:1883", failover_urls=("http://n2",))
    assert MqttSettings(url="mqtt://a", failover_urls=("mqtt://b",)).for_url("mqtt://b").urls == ("mqtt://b",)
