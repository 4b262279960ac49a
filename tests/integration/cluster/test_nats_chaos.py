"""Chaos on the 3-node NATS cluster: the e2e district (real agents on simulated devices) plus a load
generator with the edge's outbox discipline, while nodes and services die with kill -9.

Faults: the ``$MQTT_msgs`` stream leader, a follower and the node holding a gateway's
connection, each killed several times (restarted after 2 s on the same ports and store), an
ingester (two share the durable) and a rules shard runner (two hash shards). The ledger must
show 0 lost and 0 duplicates after dedup; no alarm is raised twice, every device's rule state
lives in one shard, and every expected condition has exactly one case.

``scaled`` (about a minute of faults) is the CI run; ``long`` has five of each node kill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.chain.chain_expect import all_cases, conditions, expected_conditions, one_case_per_condition, options
from tests.support.nats_chain import NatsChain, nats_chain

pytestmark = [pytest.mark.integration]

Plan = list[tuple[float, str, Callable[[], object]]]


def scaled(c: NatsChain) -> Plan:
    return [
        (4.0, "stream leader kill -9 #1", lambda: c.kill_node("stream-leader")),
        (9.0, "ingest kill -9", lambda: c.bounce("ingest", 0.3)),
        (12.0, "holder of gw-e2e-01 kill -9 #1", lambda: c.kill_node("holder:gw-e2e-01")),
        (18.0, "follower kill -9 #1", lambda: c.kill_node("follower")),
        (23.0, "rules shard 0 kill -9", lambda: c.bounce("rules", 0.3)),
        (26.0, "stream leader kill -9 #2", lambda: c.kill_node("stream-leader")),
        (32.0, "holder of gw-e2e-02 kill -9 #2", lambda: c.kill_node("holder:gw-e2e-02")),
        (38.0, "follower kill -9 #2", lambda: c.kill_node("follower")),
        (42.0, "ingest-2 kill -9", lambda: c.bounce("ingest-2", 0.3)),
        (45.0, "rules shard 1 kill -9", lambda: c.bounce("rules-1", 0.3)),
        (48.0, "active case bridge kill -9 (the standby takes over)", lambda: c.bounce("cases", 0.3)),
    ]


def long(c: NatsChain) -> Plan:
    plan: Plan = []
    targets = ["stream-leader", "holder:gw-e2e-01", "follower", "holder:gw-e2e-03"]
    for i in range(5):
        for j, target in enumerate(targets):
            plan.append((5.0 + i * 40.0 + j * 9.0, f"{target} kill -9 #{i + 1}",
                         lambda t=target: c.kill_node(t)))
        plan.append((9.0 + i * 40.0, "ingest kill -9", lambda: c.bounce("ingest", 0.3)))
        plan.append((27.0 + i * 40.0, "rules shard kill -9", lambda i=i: c.bounce("rules" if i % 2 else "rules-1")))
    return sorted(plan, key=lambda p: p[0])


@pytest.mark.parametrize(
    "plan",
    [pytest.param(scaled, marks=pytest.mark.timeout(420)),
     pytest.param(long, marks=[pytest.mark.long, pytest.mark.timeout(900)])],
    ids=["scaled", "long"],
)
def test_cluster_chaos_loses_nothing_raises_no_alarm_twice_and_opens_one_case_per_condition(
    tmp_path: Path, plan: Callable[[NatsChain], Plan]
) -> None:
    load_s = 60.0 if plan is scaled else 230.0
    with nats_chain(tmp_path, options(), ingesters=2, rules_shards=2, load_gateways=3, load_rate=300.0,
                    load_duration_s=load_s) as c:
        t0 = time.monotonic()
        for at_s, what, action in plan(c):
            delay = at_s - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            action()
            print(f"[{time.monotonic() - t0:5.1f}s] {what}", flush=True)
        for name, p in c.procs.items():
            assert p.alive or name == "loadgen", f"{name} is not running after the faults:\n{p.tail()}"
        c.wait_for(lambda: expected_conditions() <= conditions(one_case_per_condition(all_cases(c))), 150,
                   "a case for every expected condition")
        c.quiesce(180)
        time.sleep(2.0)  # late alarms from the replayed backlog reach the bridge
        per_key = one_case_per_condition(all_cases(c))
        ledger = c.ledger()
        twice, multi_owner = c.alarm_audit()
        print(ledger.line(f"nats chaos ({plan.__name__})"))
        print(f"alarms raised twice {twice}, devices in more than one shard {multi_owner}, "
              f"cases per condition {per_key}")
        assert ledger.lost == 0 and ledger.pending == 0, ledger.line()
        assert ledger.dup_after_dedup == 0
        assert ledger.seq_gaps == 0
        assert ledger.generated > 5000
        assert twice == 0 and multi_owner == 0
        assert all(n == 1 for n in per_key.values()), per_key
