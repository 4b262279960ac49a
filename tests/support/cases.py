"""Case-bridge test fixtures shared by unit and integration tests: alarms, devices, stores on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from case_bridge.model import Case
from case_bridge.store import CaseStore, open_case_store
from contracts.alarms import AlarmTransition, Severity, TransitionKind
from contracts.reading import DeviceInfo

CST = dt.timezone(dt.timedelta(hours=8))
# Wednesday 2026-11-25 10:00 +08:00: inside working hours
T0 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=CST).timestamp()

GAUGE = DeviceInfo("wl-0001", "radar-level", "water_gauge", 30.25, 120.13, grid="330106001001")
COVER_WATER = DeviceInfo("mh-0001", "tilt", "manhole", 30.26, 120.14, grid="330106002001",
                         component_id="3301060101000001")  # 上水井盖 -> water-supply
COVER_GAS = DeviceInfo("mh-0002", "tilt", "manhole", 30.26, 120.14, grid="330106002001",
                       component_id="3301060111000002", owner="gas")
COVER_UNKNOWN = DeviceInfo("mh-0003", "tilt", "manhole", grid="330102001001")
LAMP_A = DeviceInfo("lamp-0001", "lamp", "lamp", grid="330106001001", circuit="c-7")
LAMP_B = DeviceInfo("lamp-0002", "lamp", "lamp", grid="330106001001", circuit="c-7")


def alarm(device: str, rule: str, kind: str = "raised", severity: str = "major", t: float = T0,
          value: float | None = 1.0, alarm_id: str | None = None, evidence: dict[str, object] | None = None
          ) -> AlarmTransition:
    return AlarmTransition(
        alarm_id=alarm_id or f"{device}:{rule}:1",
        device=device,
        rule=rule,
        kind=TransitionKind(kind),
        severity=Severity(severity),
        t=t,
        value=value,
        evidence=evidence or {},
    )


@contextmanager
def pg_store(dsn: str, **kw: float) -> Iterator[CaseStore]:
    """A store in a schema of its own inside the session database, dropped afterwards."""
    import psycopg

    schema = f"cases_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in dsn else "?"
    store = open_case_store(f"{dsn}{sep}options=-csearch_path%3D{schema}", **kw)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def sqlite_store(tmp: Path, **kw: float) -> Iterator[CaseStore]:
    store = open_case_store(f"sqlite:///{tmp}/cases.db", **kw)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


def a_case(case_id: int = 7, state: str = "reported", urgency: str = "normal", *, device: str = "wl-0001",
           handled_at: float | None = None, auto_close: bool = False, extension_pending: bool = False) -> Case:
    """A case value as the store would read it, for the pure policy tests."""
    return Case(
        id=case_id, source="iot", source_key=f"alarm:{device}", kind="event", category_code="0111",
        service_code="S0111", category_name="道路积水", urgency=urgency, state=state,
        extension_pending=extension_pending, extensions=0, unit="lingyin-street", grid="330106001001", street=None,
        district=None, device=device, rule="road-water-depth", severity="major", corr_key=None,
        auto_close=auto_close, lat=None, lon=None, address=None, description="", reporter="iot", created_at=T0,
        filed_at=None, dispatched_at=None, handled_at=handled_at, verified_at=None, closed_at=None, deadline=None,
        due_at=None, updated_at=T0, version=1, data={}, overdue=False, time_to_deadline_s=None,
    )
