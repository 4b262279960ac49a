"""Shared fixtures: private Mosquitto brokers, 3-node NATS clusters and fresh PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from citywatch.cluster import NatsCluster
from tests.support.nats_cluster import nats_cluster
from tests.support.services import Mosquitto, influxdb1, mosquitto, pg_database


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto on a free port for this test."""
    work = tmp_path / "mosquitto"
    work.mkdir()
    with mosquitto(work) as b:
        yield b


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    with pg_database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def influx1_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private InfluxDB 1.x server for this test session; yields its HTTP base URL."""
    with influxdb1(tmp_path_factory.mktemp("influxd")) as base:
        yield base


settings.register_profile("citywatch", deadline=None, print_blob=True)
settings.load_profile("citywatch")


@pytest.fixture
def nats3(tmp_path: Path) -> Iterator[NatsCluster]:
    """A provisioned 3-node NATS JetStream cluster with MQTT listeners on free loopback ports."""
    with nats_cluster(tmp_path / "nats") as c:
        yield c
