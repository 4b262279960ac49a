"""Active/standby case bridges: only the holder of the PostgreSQL advisory lock is active; the standby
takes over as soon as the active instance's database session ends."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from case_bridge.errors import CaseError
from case_bridge.standby import LOCK_KEY, active_lock

pytestmark = pytest.mark.integration


async def test_the_standby_waits_for_the_lock_and_takes_over_when_the_active_session_ends(pg_dsn: str) -> None:
    stop = asyncio.Event()
    async with active_lock(pg_dsn, stop, poll_s=0.1) as lost_a:
        assert not lost_a.is_set()
        standby_active = asyncio.Event()

        async def standby() -> None:
            async with active_lock(pg_dsn, stop, poll_s=0.1) as lost_b:
                assert not lost_b.is_set()
                standby_active.set()
                await stop.wait()

        task = asyncio.create_task(standby())
        await asyncio.sleep(0.6)
        assert not standby_active.is_set()  # one active at a time
    await asyncio.wait_for(standby_active.wait(), 5)  # the active one is gone: the standby holds the lock
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        held = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        assert held is not None and held[0] is False
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_store_without_advisory_locks_is_refused() -> None:
    with pytest.raises(CaseError):
        async with active_lock("sqlite:///x.db", asyncio.Event()):
            pass
