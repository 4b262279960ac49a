"""Prometheus metrics of one rule runner (served by :func:`cloud_ingest.metrics.serve_metrics`).

Why: a duty room needs to see that the rule engine keeps up (readings evaluated, how far behind the
newest sample it commits, how long a step takes) before a flood shows it; a private registry per
runner so several runners (tests, the all-in-one) live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class RulesMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("citywatch_rules_messages", "MQTT messages taken in", ["kind"], registry=r)
        self.readings = Counter("citywatch_rules_readings", "readings evaluated", registry=r)
        self.transitions = Counter("citywatch_rules_transitions", "alarm transitions committed", ["kind"], registry=r)
        self.step_seconds = Histogram(
            "citywatch_rules_step_seconds",
            "wall time of one step: evaluation, checkpoint and commit of the messages taken together",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "citywatch_rules_lag_seconds", "commit time minus the newest sample time of the last step", registry=r
        )
        self.devices = Gauge("citywatch_rules_devices", "devices in the registry (announced by births)", registry=r)
        self.active_alarms = Gauge("citywatch_rules_active_alarms", "alarms active now", registry=r)
        self.store_up = Gauge("citywatch_rules_store_up", "1 when the last state commit succeeded", registry=r)
        self.store_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
