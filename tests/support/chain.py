"""The whole district as separate OS processes on this machine: the production layout, for e2e tests.

One :class:`Chain` runs a private Mosquitto with per-identity credentials (``scripts/add-gateway.sh``)
and the shipped ACL (``configs/mosquitto/citywatch.acl``), three fresh PostgreSQL databases (ingest,
rules, cases), the simulator (``citywatch sim``), one ``citywatch agent`` per simulated gateway,
``citywatch ingest``, ``citywatch rules`` and ``citywatch cases``, each with its own generated
config and broker account. Everything is a child process, so a test can ``kill -9``, ``SIGSTOP``
and restart any part exactly as an operator's bad day would.

Two TCP relays (this module's ``relay`` entry point, each its own process) make network faults:

* every agent reaches the broker through its own relay: killing the relay cuts that gateway's
  uplink (connections reset, reconnects refused); restarting it on the same port restores it;
* the ingester reaches PostgreSQL through a relay: ``SIGSTOP`` on the relay freezes the
  ingester's database connections like a paused server (the kernel still accepts TCP, nothing
  answers), without touching the shared system PostgreSQL.

The :class:`Ledger` counts every sample end to end (docs/reliability.md): ``generated`` (appended to
the agents' outboxes), ``stored`` (rows in the ingest database), ``dropped_by_policy`` (outbox
budget), ``dead_lettered``, ``pending`` (still in an outbox), ``lost`` (the rest), duplicates
before dedup (the ingester's own duplicate counter, scraped before every kill and at the end: a
lower bound) and after dedup (rows sharing an identity in the database).

Run a relay by hand: ``python -m tests.support.chain relay LISTEN_PORT TARGET_HOST TARGET_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from tests.support.services import Mosquitto, free_port, missing, mosquitto_binary, pg_database, wait_port

REPO = Path(__file__).resolve().parents[2]
ACL_FILE = REPO / "configs" / "mosquitto" / "citywatch.acl"
ADD_GATEWAY = REPO / "scripts" / "add-gateway.sh"
SERVICES = ("cw-ingest", "cw-rules", "cw-cases", "cw-console")


# ------------------------------------------------------------------ processes


@dataclass
class Proc:
    """One child process with its log file; every fault is a method."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        assert not self.alive, f"{self.name} already running"
        with open(self.log, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1} {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGCONT)  # a stopped process dies just the same; no zombie left waiting
            self.popen.kill()
            self.popen.wait(10)
            self.kills += 1
        self.popen = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the graceful path), then SIGKILL when it does not exit in time."""
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.popen = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)

    def tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""


def citywatch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "citywatch", *args]


class Relay:
    """A TCP relay process ``127.0.0.1:port -> target``; kill it to cut the link, SIGSTOP to freeze it."""

    def __init__(self, name: str, target_host: str, target_port: int, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = Proc(
            name,
            [sys.executable, "-m", "tests.support.chain", "relay", str(self.port), target_host, str(target_port)],
            log,
        )

    def start(self) -> None:
        self.proc.start()
        wait_port("127.0.0.1", self.port, 10)

    def cut(self) -> None:
        """The link goes away: open connections reset, new ones refused."""
        self.proc.kill9()

    def restore(self) -> None:
        self.start()

    def pause(self) -> None:
        """The link hangs: bytes are accepted by the kernel and go nowhere."""
        self.proc.pause()

    def unpause(self) -> None:
        self.proc.resume()

    def close(self) -> None:
        self.proc.kill9()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def run_relay(listen_port: int, target_host: str, target_port: int) -> None:
    """Forward every connection on ``listen_port`` to the target, byte for byte, until killed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pipe(reader, up_writer))
            tg.create_task(_pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------ broker with credentials + ACL


def make_password_file(path: Path, identities: list[str]) -> dict[str, str]:
    """One account per identity via ``scripts/add-gateway.sh``; returns identity -> password."""
    out: dict[str, str] = {}
    for ident in identities:
        res = subprocess.run(["bash", str(ADD_GATEWAY), str(path), ident], capture_output=True, text=True, check=True)
        name, password = res.stdout.strip().splitlines()[-1].split(" ", 1)
        assert name == ident
        out[ident] = password
    return out


def secure_broker(workdir: Path, identities: list[str]) -> tuple[Mosquitto, dict[str, str]]:
    """A private Mosquitto (not started) with anonymous refused, the password file and the shipped ACL."""
    if mosquitto_binary() is None:
        missing("mosquitto binary not found (apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    passwords = make_password_file(workdir / "passwd", identities)
    conf = f"password_file {workdir / 'passwd'}\nacl_file {ACL_FILE}\n"
    return Mosquitto(workdir=workdir, port=free_port(), extra_conf=conf, allow_anonymous=False), passwords


# ------------------------------------------------------------------ ledger


@dataclass(frozen=True)
class Ledger:
    generated: int
    stored: int
    lost: int
    dup_before_dedup: int
    dup_after_dedup: int
    dead_lettered: int
    dropped_by_policy: int
    pending: int = 0
    seq_gaps: int = 0  # batches the agents formed (current boot) that the ingester never committed
    faults: str = ""

    def line(self, label: str = "ledger") -> str:
        return (
            f"{label}: generated {self.generated}, stored {self.stored}, lost {self.lost}, "
            f"dup_before_dedup {self.dup_before_dedup}, dup_after_dedup {self.dup_after_dedup}, "
            f"dead_lettered {self.dead_lettered}, dropped_by_policy {self.dropped_by_policy}, "
            f"pending {self.pending}, seq_gaps {self.seq_gaps}" + (f"; faults: {self.faults}" if self.faults else "")
        )


def outbox_boot(path: Path) -> tuple[str, int]:
    """(boot, last formed seq) of an agent's outbox."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return str(meta.get("boot", "")), int(meta.get("last_seq", "0"))


def outbox_ledger(path: Path) -> tuple[int, int, int, int]:
    """(appended, acked, dropped, present) over both record classes of one agent's outbox."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        appended, acked, dropped = db.execute(
            "SELECT sum(appended), sum(acked), sum(dropped) FROM ledger"
        ).fetchone()
        present = db.execute("SELECT (SELECT count(*) FROM telemetry) + (SELECT count(*) FROM events)").fetchone()[0]
    finally:
        db.close()
    return int(appended or 0), int(acked or 0), int(dropped or 0), int(present or 0)


_DUP = re.compile(r'^citywatch_ingest_(readings|events)_total\{result="duplicate"\} ([0-9.e+]+)$', re.M)


def scrape_duplicates(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return int(sum(float(m.group(2)) for m in _DUP.finditer(text)))


# ------------------------------------------------------------------ the chain


@dataclass
class ChainOptions:
    scenario: Path  # simulator config
    rules_file: Path
    verify_hold_s: float = 5.0
    verify_grace_s: float = 3.0
    ack_timeout_s: float = 3.0
    linger_s: float = 0.2
    categories_file: Path = REPO / "configs" / "categories.yaml"
    units_file: Path = REPO / "configs" / "units.yaml"
    speed: float | None = None  # overrides the scenario's clock speed
    relays: bool = True  # False: agents and the ingester connect directly (benchmarks: no extra hop)
    extra_identities: tuple[str, ...] = ()  # more broker accounts (load generators' gateways)
    ingest: dict[str, Any] = field(default_factory=dict)  # overrides of the generated ingest section


class Chain:
    """The production layout as processes. Use :func:`chain` to get one that is started and torn down."""

    def __init__(self, tmp: Path, opts: ChainOptions, dsns: dict[str, str]) -> None:
        self.tmp = tmp
        self.opts = opts
        self.dsns = dsns  # ingest / rules / cases -> postgresql://...
        self.scenario = yaml.safe_load(opts.scenario.read_text(encoding="utf-8"))
        self.gateways: list[str] = sorted({b["gateway"] for b in self.scenario["buses"]})
        self.devices: dict[str, dict[str, Any]] = {d["id"]: d for d in self.scenario["devices"]}
        self.broker, self.passwords = self._make_broker([*SERVICES, *self.gateways, *opts.extra_identities])
        self.procs: dict[str, Proc] = {}
        self.uplinks: dict[str, Relay] = {}
        self.pg_relay: Relay | None = None
        self.sim_info: dict[str, Any] = {}
        self.metrics_port = free_port()
        self._dups_seen = 0  # duplicates counted by ingester lifetimes that were killed
        self.fault_log: list[str] = []
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _make_broker(self, identities: list[str]) -> tuple[Any, dict[str, str]]:
        """The broker (``start``/``stop``/``kill``/``port``) and a password per identity."""
        return secure_broker(self.tmp / "broker", identities)

    def _live_duplicates(self) -> int:
        """Duplicates counted by the running ingester(s) so far."""
        return scrape_duplicates(self.metrics_port) or 0

    # ---- config generation

    def _mqtt(self, user: str, port: int | None = None) -> dict[str, Any]:
        return {
            "url": f"mqtt://127.0.0.1:{port or self.broker.port}",
            "username": user,
            "password": self.passwords[user],
            "keepalive_s": 5,
        }

    def _write_cloud(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.tmp / f"cloud-{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def ingest_config(self, store_url: str | None = None) -> Path:
        return self._write_cloud(
            "ingest",
            {
                "mqtt": self._mqtt("cw-ingest"),
                "ingest": {
                    "store_url": store_url or self.ingest_store_url,
                    "client_id": "e2e-ingest-1",
                    "share_group": "ingest",
                    "linger_ms": 20,
                    "writers": 1,
                    "gap_grace_s": 5.0,
                    "retry_initial_s": 0.1,
                    "retry_max_s": 1.0,
                    "metrics_port": self.metrics_port,
                    **self.opts.ingest,
                },
            },
        )

    def rules_config(self) -> Path:
        return self._write_cloud(
            "rules",
            {
                "mqtt": self._mqtt("cw-rules"),
                "rules": {
                    "files": [str(self.opts.rules_file)],
                    "store_url": self.dsns["rules"],
                    "client_id": "e2e-rules-1",
                    "share_group": "rules",
                    "tick_s": 0.5,
                },
            },
        )

    def cases_config(self) -> Path:
        return self._write_cloud(
            "cases",
            {
                "mqtt": self._mqtt("cw-cases"),
                "cases": {
                    "store_url": self.dsns["cases"],
                    "categories_file": str(self.opts.categories_file),
                    "units_file": str(self.opts.units_file),
                    "verify_hold_s": self.opts.verify_hold_s,
                    "verify_grace_s": self.opts.verify_grace_s,
                    "tick_s": 0.5,
                    "client_id": "e2e-cases-1",
                },
            },
        )

    def cases_argv(self) -> list[str]:
        return citywatch_argv("cases", "-c", str(self.cases_config()))

    def agent_config(self, gw: str, generated: Path) -> Path:
        doc = yaml.safe_load(generated.read_text(encoding="utf-8"))
        fields = {"buses": doc.pop("buses"), "devices": doc.pop("devices")}
        doc["mqtt"] = self._mqtt(gw, self.uplinks[gw].port if gw in self.uplinks else None)
        doc["outbox"] = {"path": str(self.outbox_path(gw)), "budget_bytes": 64 * 1024 * 1024}
        doc["publish"] = {
            "linger_s": self.opts.linger_s,
            "ack_timeout_s": self.opts.ack_timeout_s,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "connect_timeout_s": 3.0,
        }
        doc.update(fields)
        path = self.tmp / f"agent-{gw}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def outbox_path(self, gw: str) -> Path:
        return self.tmp / "outbox" / f"{gw}.db"

    @property
    def ingest_store_url(self) -> str:
        """The ingester goes to PostgreSQL through the pausable relay (when relays are on)."""
        if self.pg_relay is None:
            return self.dsns["ingest"]
        return re.sub(r"@[^/]+/", f"@127.0.0.1:{self.pg_relay.port}/", self.dsns["ingest"], count=1)

    # ---- lifecycle

    def start(self) -> None:
        self.broker.start()
        if self.opts.relays:
            pg_host, pg_port = _host_port(self.dsns["ingest"])
            self.pg_relay = Relay("pg-relay", pg_host, pg_port, self.logs / "pg-relay.log")
            self.pg_relay.start()
            for gw in self.gateways:
                self.uplinks[gw] = Relay(f"uplink-{gw}", "127.0.0.1", self.broker.port, self.logs / f"uplink-{gw}.log")
                self.uplinks[gw].start()
        self._start_sim()
        # cloud first, so the first batches find their consumers (they would be queued anyway)
        self.procs["ingest"] = Proc("ingest", citywatch_argv("ingest", "-c", str(self.ingest_config())),
                                    self.logs / "ingest.log")
        self.procs["rules"] = Proc("rules", citywatch_argv("rules", "-c", str(self.rules_config())),
                                   self.logs / "rules.log")
        self.procs["cases"] = Proc("cases", self.cases_argv(),
                                   self.logs / "cases.log")
        for name in ("ingest", "rules", "cases"):
            self.procs[name].start()
        self.wait_for(lambda: scrape_duplicates(self.metrics_port) is not None, 30, "ingest metrics endpoint")
        time.sleep(1.0)  # rules/cases subscribe
        for gw in self.gateways:
            cfg = self.agent_config(gw, Path(self.sim_info["gateway_configs"][gw]))
            self.procs[f"agent-{gw}"] = Proc(f"agent-{gw}", citywatch_argv("agent", "-c", str(cfg)),
                                             self.logs / f"agent-{gw}.log")
            self.procs[f"agent-{gw}"].start()
        for name, p in self.procs.items():
            assert p.alive, f"{name} died at start:\n{p.tail()}"

    def _start_sim(self) -> None:
        args = ["sim", "-c", str(self.opts.scenario), "--gateway-configs", str(self.tmp / "gw-generated"), "--json"]
        if self.opts.speed is not None:
            args += ["--speed", str(self.opts.speed)]
        log = open(self.logs / "sim.log", "ab")  # noqa: SIM115 - owned by the process
        popen = subprocess.Popen(citywatch_argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                                 stdin=subprocess.DEVNULL)
        log.close()
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if not line:
            popen.wait(5)
            raise RuntimeError(f"simulator did not start:\n{(self.logs / 'sim.log').read_text(errors='replace')}")
        self.sim_info = orjson.loads(line)
        self.procs["sim"] = Proc("sim", popen.args, self.logs / "sim.log", popen=popen, starts=1)  # type: ignore[arg-type]

    def close(self) -> None:
        for name in [n for n in self.procs if n.startswith("agent-")] + ["rules", "cases", "ingest", "sim"]:
            if name in self.procs:
                self.procs[name].stop(5)
        for relay in [*self.uplinks.values(), *([self.pg_relay] if self.pg_relay else [])]:
            relay.close()
        self.broker.stop()

    # ---- faults

    def kill9(self, name: str) -> None:
        """``kill -9`` one process (``broker``, ``ingest``, ``rules``, ``cases``, ``agent-<gw>``, ``sim``)."""
        if name == "broker":
            self.broker.kill()
        else:
            if name == "ingest":
                self._dups_seen += scrape_duplicates(self.metrics_port) or 0
            self.procs[name].kill9()
        self.fault_log.append(f"kill9 {name}")

    def restart(self, name: str) -> None:
        if name == "broker":
            self.broker.start()  # same port, same config
        else:
            self.procs[name].start()

    def bounce(self, name: str, down_s: float = 0.3) -> None:
        """kill -9, wait ``down_s``, start again."""
        self.kill9(name)
        time.sleep(down_s)
        self.restart(name)

    def cut_uplink(self, gw: str) -> None:
        self.uplinks[gw].cut()
        self.fault_log.append(f"uplink cut {gw}")

    def restore_uplink(self, gw: str) -> None:
        self.uplinks[gw].restore()

    def pause_database(self) -> None:
        """The ingester's PostgreSQL connections freeze (its relay is SIGSTOPped); the shared server is untouched."""
        assert self.pg_relay is not None
        self.pg_relay.pause()
        self.fault_log.append("ingest db paused")

    def resume_database(self) -> None:
        assert self.pg_relay is not None
        self.pg_relay.unpause()

    def pause(self, name: str) -> None:
        self.procs[name].pause()
        self.fault_log.append(f"SIGSTOP {name}")

    def resume(self, name: str) -> None:
        self.procs[name].resume()

    # ---- observation

    def wait_for(self, cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = cond()
            except Exception:  # a store being created, a process restarting: try again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n" + self.diagnostics())
            time.sleep(every_s)

    def diagnostics(self) -> str:
        parts = []
        for name, p in self.procs.items():
            state = "alive" if p.alive else "DEAD"
            parts.append(f"--- {name} ({state}, starts {p.starts}) log tail:\n{p.tail(1500)}")
        return "\n".join(parts)

    def sim_time(self, wall: float | None = None) -> float:
        """Simulated seconds since the simulator's t = 0."""
        now = time.time() if wall is None else wall
        return (now - float(self.sim_info["start_unix"])) * float(self.sim_info["speed"])

    def wait_sim_time(self, t_s: float) -> None:
        remaining = (t_s - self.sim_time()) / float(self.sim_info["speed"])
        if remaining > 0:
            time.sleep(remaining)

    def case_store(self) -> Any:
        from case_bridge import load_catalog, open_case_store

        return open_case_store(
            self.dsns["cases"],
            load_catalog(self.opts.categories_file, self.opts.units_file),
            verify_hold_s=self.opts.verify_hold_s,
            verify_grace_s=self.opts.verify_grace_s,
            migrate_schema=False,
        )

    def ingest_query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsns["ingest"], connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    def outboxes(self) -> dict[str, tuple[int, int, int, int]]:
        return {gw: outbox_ledger(self.outbox_path(gw)) for gw in self.gateways if self.outbox_path(gw).exists()}

    def quiesce(self, timeout_s: float = 60.0) -> None:
        """End production and wait until the cloud has acked everything: the simulator stops (the
        agents' polls then fail and make no readings), then every outbox drains. Call before
        :meth:`ledger`, which needs a still picture."""
        if self.procs["sim"].alive:
            self.procs["sim"].stop(5)
            time.sleep(1.5)  # polls in flight finish (device timeouts are well under this)
        self.wait_for(self.drained, timeout_s, "agents' outboxes drained (every batch acked by the cloud)")

    def drained(self) -> bool:
        return all(present == 0 for _a, _k, _d, present in self.outboxes().values())

    def ledger(self) -> Ledger:
        """Count every sample of the chain's devices end to end (call after :meth:`drained`)."""
        boxes = self.outboxes()
        generated = sum(b[0] for b in boxes.values())
        dropped = sum(b[2] for b in boxes.values())
        pending = sum(b[3] for b in boxes.values())
        devices = list(self.devices)
        stored_r = self.ingest_query("SELECT count(*) FROM readings WHERE device = ANY(%s)", (devices,))[0][0]
        stored_e = self.ingest_query("SELECT count(*) FROM events WHERE device = ANY(%s)", (devices,))[0][0]
        dup_r = self.ingest_query(
            "SELECT count(*) - count(DISTINCT (device, metric, ts)) FROM readings WHERE device = ANY(%s)", (devices,)
        )[0][0]
        dup_e = self.ingest_query(
            "SELECT count(*) - count(DISTINCT (device, kind, id)) FROM events WHERE device = ANY(%s)", (devices,)
        )[0][0]
        dead = self.ingest_query("SELECT count(*) FROM dead_letters WHERE gw = ANY(%s)", (self.gateways,))[0][0]
        dups = self._dups_seen + self._live_duplicates()
        gaps = 0
        for gw in self.gateways:
            if self.outbox_path(gw).exists():
                boot, last_seq = outbox_boot(self.outbox_path(gw))
                committed = self.ingest_query(
                    "SELECT count(*) FROM batches WHERE gw = %s AND boot = %s AND seq BETWEEN 1 AND %s",
                    (gw, boot, last_seq),
                )[0][0]
                gaps += last_seq - int(committed)
        stored = int(stored_r) + int(stored_e)
        return Ledger(
            generated=generated,
            stored=stored,
            lost=generated - stored - dropped - int(dead) - pending,
            dup_before_dedup=dups,
            dup_after_dedup=int(dup_r) + int(dup_e),
            dead_lettered=int(dead),
            dropped_by_policy=dropped,
            pending=pending,
            seq_gaps=gaps,
            faults=_summarise(self.fault_log),
        )


def _summarise(faults: list[str]) -> str:
    counts: dict[str, int] = {}
    for f in faults:
        counts[f] = counts.get(f, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def _host_port(dsn: str) -> tuple[str, int]:
    m = re.match(r"^postgres(?:ql)?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?/", dsn)
    assert m, dsn
    return m.group(1), int(m.group(2) or 5432)


@contextlib.contextmanager
def chain(tmp: Path, opts: ChainOptions) -> Iterator[Chain]:
    """A started :class:`Chain` on three fresh PostgreSQL databases; everything is stopped afterwards."""
    with pg_database() as ingest_dsn, pg_database() as rules_dsn, pg_database() as cases_dsn:
        c = Chain(tmp, opts, {"ingest": ingest_dsn, "rules": rules_dsn, "cases": cases_dsn})
        try:
            c.start()
            yield c
        finally:
            c.close()


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "relay":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_relay(int(argv[1]), argv[2], int(argv[3])))
        return 0
    print("usage: python -m tests.support.chain relay LISTEN_PORT TARGET_HOST TARGET_PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


