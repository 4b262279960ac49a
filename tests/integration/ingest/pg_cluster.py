"""A throwaway PostgreSQL cluster for fault tests that pause or restart the database.

Never SIGSTOP the shared system PostgreSQL: other suites use it. ``initdb`` refuses to run as
root, so when we are root the cluster is created and run as the ``postgres`` user via
``runuser``. Skips locally (fails in CI) when that cannot be done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port, missing

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PgCluster:
    root: Path
    port: int
    as_postgres: bool

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart_immediate(self) -> None:
        """Crash-like restart: immediate shutdown (no checkpoint), then start with WAL recovery."""
        self.stop("immediate")
        self.start()

    def pids(self) -> list[int]:
        pid_file = self.datadir / "postmaster.pid"
        master = int(pid_file.read_text().splitlines()[0])
        out = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    out.append(int(entry))
        return out

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    if not (PG_BIN / "initdb").exists():
        missing(f"PostgreSQL binaries not found in {PG_BIN}")
    as_postgres = os.geteuid() == 0
    if as_postgres and shutil.which("runuser") is None:
        missing("running as root and runuser is not available to run initdb as postgres")
    root = Path(tempfile.mkdtemp(prefix="cw-pg-"))
    root.chmod(0o777)
    cluster = PgCluster(root, free_port(), as_postgres)
    try:
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        init = cluster._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(cluster.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            check=False,
        )
        if init.returncode != 0:
            missing(f"initdb failed: {init.stderr[-300:]}")
        with (cluster.datadir / "postgresql.conf").open("a") as f:
            f.write(
                f"port = {cluster.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "max_wal_size = 1GB\nshared_buffers = 32MB\nfsync = on\n"
            )
        cluster.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (
                cluster._run(
                    str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(cluster.port), check=False
                ).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.signal_all(signal.SIGCONT)
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
