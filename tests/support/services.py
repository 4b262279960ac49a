"""Real services for tests: a private Mosquitto per test and a fresh PostgreSQL database.

Every broker runs on a free port with its own config, so tests are isolated and
parallel-safe. When a binary or server is missing, tests skip locally with the reason and
fail under CI (``CI=true``), where ``.ci/run`` must have installed it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip locally, fail in CI: a CI run that silently skips proves nothing."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def mosquitto_binary() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@dataclass
class Mosquitto:
    """A private broker; ``stop``/``start``/``kill`` for fault tests keep the same port."""

    workdir: Path
    port: int
    extra_conf: str = ""
    allow_anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def ports(self) -> list[int]:
        """Every port the broker listens on: the main one and each ``listener`` of ``extra_conf``.

        ``start`` waits for all of them: a test that uses a second listener (TLS, a plain one for an
        acker) must not race the broker opening it.
        """
        return [self.port, *(int(p) for p in re.findall(r"^listener (\d+)", self.extra_conf, re.MULTILINE))]

    def start(self) -> None:
        binary = mosquitto_binary()
        assert binary is not None
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 20\n"
            # as root, Mosquitto drops to user "mosquitto", which cannot read pytest's 0700 tmp dirs
            + ("user root\n" if os.geteuid() == 0 else "")
            + "log_dest stderr\n"
            f"{self.extra_conf}\n"
        )
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        try:
            for port in self.ports:
                wait_port(self.host, port)
        except TimeoutError:
            self.proc.kill()
            err = (self.workdir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mosquitto did not start: {err}") from None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@contextmanager
def mosquitto(tmp: Path, extra_conf: str = "", allow_anonymous: bool = True) -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        missing("mosquitto binary not found (apt-get install mosquitto)")
    broker = Mosquitto(workdir=tmp, port=free_port(), extra_conf=extra_conf, allow_anonymous=allow_anonymous)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


PG_ADMIN_DSN = os.environ.get("CITYWATCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_reachable(dsn: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except Exception:
        return False


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database on the running PostgreSQL, dropped afterwards; yields its DSN."""
    import psycopg

    if not _pg_reachable(PG_ADMIN_DSN):
        missing(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield dsn
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def influxd_binary() -> str | None:
    for cand in (shutil.which("influxd"), "/usr/bin/influxd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@contextmanager
def influxdb1(tmp: Path) -> Iterator[str]:
    """A private InfluxDB 1.x (Debian's ``influxdb``) on free ports with its own data dir; yields
    its HTTP base URL once ``/ping`` answers. Continuous queries are checked every second."""
    import urllib.request

    binary = influxd_binary()
    if binary is None:
        missing("influxd not found (apt-get install influxdb)")
    assert binary is not None
    http, rpc = free_port(), free_port()
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n'
        f'[meta]\n  dir = "{tmp}/meta"\n'
        f'[data]\n  dir = "{tmp}/data"\n  wal-dir = "{tmp}/wal"\n  query-log-enabled = false\n'
        "[monitor]\n  store-enabled = false\n"
        f'[http]\n  bind-address = "127.0.0.1:{http}"\n  log-enabled = false\n'
        "[continuous_queries]\n  run-interval = \"1s\"\n  log-enabled = false\n"
    )
    log = open(tmp / "influxd.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([binary, "-config", str(conf)], stdout=log, stderr=log)
    log.close()
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = (tmp / "influxd.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"influxd did not start: {err}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
