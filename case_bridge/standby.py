"""One active case bridge, any number of standbys: a PostgreSQL advisory lock decides which.

Every instance runs with the same MQTT client id and waits for the session-level advisory
lock on the case database before it connects; the holder is active. When it dies, PostgreSQL
ends its session and releases the lock, a standby takes it and resumes the same persistent
MQTT session (queued alarms included). Idempotency by alarm id in the case store covers the
overlap of a kill between commit and acknowledgement, exactly as for a restart.

If the lock's connection fails while active, the lock may already be someone else's: the
instance stops (the service manager restarts it as a standby), never runs beside another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from case_bridge.errors import CaseError

log = logging.getLogger(__name__)

#: the advisory lock key (any constant shared by all instances of one district)
LOCK_KEY = 0x63777362  # "cwsb"


class LeadershipLost(CaseError):
    """The connection holding the active lock failed: stop, another instance may be active."""


@contextlib.asynccontextmanager
async def active_lock(dsn: str, stop: asyncio.Event, *, poll_s: float = 1.0, key: int = LOCK_KEY
                      ) -> AsyncIterator[asyncio.Event]:
    """Wait until this instance holds the lock (or ``stop``); yields an event set when the lock is lost."""
    import psycopg

    if not dsn.startswith(("postgresql://", "postgres://")):
        raise CaseError("a standby case bridge needs a PostgreSQL case store (advisory locks)")
    conn: psycopg.Connection[tuple[object, ...]] | None = None
    waiting_logged = False
    while not stop.is_set():
        try:
            held = conn or await asyncio.to_thread(psycopg.connect, dsn, autocommit=True, connect_timeout=5)
            conn = held
            assert held is not None
            cur = await asyncio.to_thread(held.execute, "SELECT pg_try_advisory_lock(%s)", (key,))
            row = cur.fetchone()
            if row is not None and row[0]:
                break
        except psycopg.Error as exc:
            log.warning("cannot ask for the active lock yet: %s", exc)
            conn = None
        if not waiting_logged:
            log.info("standby: another case bridge is active; waiting for its lock")
            waiting_logged = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
    lost = asyncio.Event()
    if stop.is_set() or conn is None:
        if conn is not None:
            conn.close()
        yield lost
        return
    log.info("active: holding the case bridge lock")

    async def watch() -> None:
        assert conn is not None
        while not stop.is_set():
            try:
                await asyncio.to_thread(conn.execute, "SELECT 1")
            except psycopg.Error as exc:
                log.error("lost the connection holding the active lock (%s): stopping", exc)
                lost.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)

    watcher = asyncio.create_task(watch(), name="cases.lock-watch")
    try:
        yield lost
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        with contextlib.suppress(Exception):
            conn.close()
