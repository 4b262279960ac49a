"""Prometheus metrics of one ingester, and a tiny asyncio ``/metrics`` endpoint.

A private registry per :class:`IngestMetrics` so several ingesters (tests) live in one process;
the endpoint runs on the ingester's own event loop instead of prometheus-client's server thread.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("citywatch_ingest_messages", "MQTT messages received", ["kind"], registry=r)
        self.readings = Counter("citywatch_ingest_readings", "readings written", ["result"], registry=r)
        self.events = Counter("citywatch_ingest_events", "events written", ["result"], registry=r)
        self.dead_letters = Counter("citywatch_ingest_dead_letters", "payloads dead-lettered", ["reason"], registry=r)
        self.gaps = Counter("citywatch_ingest_gaps", "seq gaps detected (data lost in transit)", registry=r)
        self.batch_latency = Histogram(
            "citywatch_ingest_batch_latency_seconds",
            "store commit time of one micro-batch",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "citywatch_ingest_lag_seconds", "commit time minus newest sample time of the last batch", registry=r
        )
        self.hold = Gauge(
            "citywatch_ingest_hold_seconds",
            "receipt-to-commit time of the oldest message of the last batch",
            registry=r,
        )
        self.unacked = Gauge(
            "citywatch_ingest_unacked_messages", "messages received but not yet acknowledged", registry=r
        )
        self.store_up = Gauge("citywatch_ingest_store_up", "1 when the last store write succeeded", registry=r)
        self.store_errors = Counter("citywatch_ingest_store_errors", "failed store writes", ["kind"], registry=r)
        self.store_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Renders(Protocol):
    """Anything with a Prometheus text exposition (the ingester's and the rule runner's metrics)."""

    def render(self) -> bytes: ...


async def serve_metrics(metrics: Renders, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` (anything else: 404) on the running loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if path.split(b"?")[0] == b"/metrics":
                body, status = metrics.render(), b"200 OK"
                ctype = CONTENT_TYPE_LATEST.encode()
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
