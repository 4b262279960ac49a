"""Ports over the real stores: ``cloud_ingest`` time series, ``case_bridge`` cases, alarms.

The console shows what these stores hold and asks them to change it; every translation of
their types and errors into console views happens here, once, through the stores' public APIs.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from case_bridge import Case, CaseStore, RateRow, deadlines
from case_bridge.errors import CaseConflict, CaseError, CaseNotFound, IllegalTransition, UnknownCategory
from case_bridge.incidence import Incidence, incidence
from case_bridge.media import media_of
from case_bridge.policy import StreetReading
from case_bridge.workflow import TERMINAL, Role, State, seat_actions, seat_role
from cloud_ingest.errors import IngestError
from cloud_ingest.store import Store
from console.errors import BadRequest, Conflict, StoreUnavailable
from console.views import (
    AlarmView,
    CaseFilter,
    CasePage,
    CaseView,
    Category,
    DeviceView,
    MetricValue,
    NewReport,
    SeriesPoint,
    Statistics,
    StatRow,
    TimelineEntry,
    UnitView,
)
from contracts.liveness import liveness
from rules.errors import AlarmStoreError
from rules.store import AlarmRecord, AlarmStore

_TERMINAL = sorted(s.value for s in TERMINAL)
_CASE_ID = re.compile(r"[0-9]{1,18}")


class DeviceAdapter:
    """Devices and readings from the ingest store; the registry+latest join is cached ``cache_s``.

    A wall screen with many viewers polls the same registry; one second of staleness costs
    nothing visible and keeps a 10 000-device registry query off every request.
    """

    def __init__(self, store: Store, cache_s: float = 1.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._lock = threading.Lock()  # single flight: one thread rebuilds, the others wait for it
        self._cached: tuple[float, list[DeviceView], dict[str, DeviceView]] | None = None

    def _load(self) -> tuple[list[DeviceView], dict[str, DeviceView]]:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1], cached[2]
        with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.cache_s:
                return cached[1], cached[2]
            return self._rebuild()

    def _rebuild(self) -> tuple[list[DeviceView], dict[str, DeviceView]]:
        now = time.monotonic()
        try:
            states = self.store.devices()
            latest = self.store.latest()
        except IngestError as exc:
            raise StoreUnavailable(f"time-series store: {exc}") from exc
        values: dict[str, dict[str, MetricValue]] = {}
        for r in latest:
            values.setdefault(r.device, {})[r.metric] = MetricValue(r.ts, r.value, r.unit, int(r.quality))
        wall = time.time()
        views = []
        for s in states:
            online, why = liveness(s.online, s.last_seen, s.updated_at, s.info.interval_s, wall)
            views.append(DeviceView(
                id=s.info.id, kind=s.info.kind, profile=s.info.profile, gateway=s.gateway, lat=s.info.lat,
                lon=s.info.lon, grid=s.info.grid, owner=s.info.owner, circuit=s.info.circuit, online=online,
                last_seen=s.last_seen,
                latest=values.get(s.info.id, {}), offline_reason=why,
            ))
        index = {v.id: v for v in views}
        self._cached = (now, views, index)
        return views, index

    def devices(self) -> list[DeviceView]:
        return self._load()[0]

    def device(self, device_id: str) -> DeviceView | None:
        return self._load()[1].get(device_id)

    def series(self, device_id: str, metric: str, start: float, end: float, bucket_s: float) -> list[SeriesPoint]:
        try:
            points = self.store.range(device_id, metric, start, end, bucket_s)
        except IngestError as exc:
            raise StoreUnavailable(f"time-series store: {exc}") from exc
        return [SeriesPoint(p.ts, p.value, p.min, p.max) for p in points]


def _case_id(case_id: str) -> int | None:
    """A case id from a URL: ASCII digits only (``'²'`` and ``'١٢'`` are digits to ``str.isdigit``)."""
    return int(case_id) if _CASE_ID.fullmatch(case_id) else None


class CaseAdapter:
    def __init__(self, store: CaseStore) -> None:
        self.store = store
        self._unit_names = {u.id: u.name for u in store.units()}
        self._seats = store.seats()

    def _view(self, c: Case) -> CaseView:
        return CaseView(
            id=str(c.id), category=c.service_code, category_name=c.category_name, unit=c.unit,
            unit_name=self._unit_names.get(c.unit, c.unit), state=c.state, urgency=c.urgency,
            created_at=c.created_at, updated_at=c.updated_at, deadline=c.deadline, closed_at=c.closed_at,
            device=c.device, rule=c.rule, alarm_id=(c.data.get("alarm") or {}).get("alarm_id"),
            description=c.description, lat=c.lat, lon=c.lon, address=c.address or "", source=c.source,
            status_note="延期待批 extension pending" if c.extension_pending else "", due_at=c.due_at,
            on_time=deadlines.handled_on_time(c.handled_at, c.due_at, c.overridden), overridden=c.overridden,
            vehicle=_vehicle_of(c.data), media=tuple(media_of(c.data)),
            media_url=str(c.data.get("media_url") or ""),
            contact={str(k): str(v) for k, v in (c.data.get("contact") or {}).items()},
            photos_required=self._photos_required(c.service_code),
        )

    def _photos_required(self, service_code: str) -> bool:
        try:
            return self.store.catalog.category(service_code).photos_required
        except UnknownCategory:
            return False

    def add_media(self, case_id: str, entry: dict[str, Any], *, actor: str, role: str, now: float) -> CaseView:
        cid = _case_id(case_id)
        if cid is None:
            raise Conflict(f"no case {case_id!r}")
        try:
            return self._view(self.store.add_media(cid, entry, actor, role, now))
        except CaseNotFound as exc:
            raise Conflict(str(exc)) from exc
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc

    def categories(self) -> list[Category]:
        return [Category(c.service_code, c.name, "部件" if c.kind.value == "component" else "事件",
                         f"{c.major or ''} {c.name}".strip(), c.major or "") for c in self.store.categories()]

    def units(self) -> list[UnitView]:
        return [UnitView(u.id, u.name) for u in self.store.units()]

    def get(self, case_id: str) -> CaseView | None:
        cid = _case_id(case_id)
        if cid is None:
            return None
        try:
            return self._view(self.store.get(cid))
        except CaseNotFound:
            return None
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc

    def worklist(self, flt: CaseFilter, now: float) -> CasePage:
        states: list[str] | None = list(flt.states) or None
        if flt.status == "closed":
            states = [s for s in (states or _TERMINAL) if s in _TERMINAL] or [State.CLOSED.value]
        ids = [i for i in (_case_id(x) for x in flt.ids) if i is not None] if flt.ids else None
        if flt.ids and not ids:
            return CasePage([], 0)  # only ids that cannot exist were asked for
        # a device's or a date range's cases read newest first; a worklist nearest deadline first
        by_time = flt.device is not None or flt.created_from is not None or flt.created_to is not None or ids
        try:
            page = self.store.worklist(
                unit=flt.unit, state=states, category=flt.category, overdue=flt.overdue,
                sort="-created_at" if by_time else "deadline", limit=flt.limit, offset=flt.offset, now=now,
                include_closed=flt.status != "open", device=flt.device, ids=ids,
                created_from=flt.created_from, created_to=flt.created_to,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc
        return CasePage([self._view(c) for c in page.items], page.total)

    def timeline(self, case_id: str) -> list[TimelineEntry]:
        cid = _case_id(case_id)
        if cid is None:
            return []
        try:
            entries = self.store.timeline(cid)
        except CaseNotFound:
            return []
        return [TimelineEntry(e.t, e.actor, e.action, e.from_state, e.to_state, e.note, e.data) for e in entries]

    def seats(self) -> dict[str, tuple[Role, ...]]:
        return dict(self._seats)

    def allowed_actions(self, case: CaseView, role: str) -> list[str]:
        c = self.store.get(int(case.id))
        return [a.value for a in seat_actions(c.position, role, self._seats)]

    def transition(self, case_id: str, action: str, *, actor: str, role: str, note: str, request_id: str,
                   now: float, override_reason: str | None = None, unit: str | None = None,
                   readings: Sequence[StreetReading] = ()) -> CaseView:
        cid = _case_id(case_id)
        if cid is None:
            raise Conflict(f"no case {case_id!r}")
        c = self.store.get(cid)
        wf_role = seat_role(c.position, role, action, self._seats)
        if wf_role is None:
            raise Conflict(f"role {role} may not {action!r} in state {c.state!r}")
        if unit is not None and self.store.catalog.unit(unit) is None:
            raise BadRequest(f"unknown unit {unit!r}")
        try:
            updated = self.store.transition(cid, action, actor, note=note, request_id=request_id, now=now,
                                            role=wf_role, expected_version=c.version,
                                            override_reason=override_reason, unit=unit, readings=readings)
        except (IllegalTransition, CaseConflict) as exc:
            raise Conflict(str(exc)) from exc
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc
        return self._view(updated)

    def create_reported(self, report: NewReport, now: float) -> CaseView:
        try:
            c = self.store.create_reported(
                category=report.service_code, description=report.description, lat=report.lat, lon=report.lon,
                address=report.address or None, source="open311", source_key=report.request_id,
                reporter=report.reporter, actor=f"apikey:{report.reporter}", request_id=report.request_id,
                data={"contact": report.contact, "attributes": report.attributes, "media_url": report.media_url},
                now=now,
            )
        except UnknownCategory as exc:
            raise BadRequest(str(exc)) from exc
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc
        return self._view(c)

    def statistics(self, start: float, end: float, now: float) -> Statistics:
        st = self.store.stats.report(start, end, now)

        def row(r: RateRow) -> StatRow:
            return StatRow(r.key, r.total, r.closed, r.due, r.on_time, r.on_time_rate, r.closure_rate,
                           r.overridden)

        return Statistics([row(r) for r in st.by_unit], [row(r) for r in st.by_category],
                          {(h, sc): n for h, sc, n in st.by_hour_category}, row(st.total))

    def incidence(self, start: float, end: float) -> Incidence:
        try:
            return incidence(self.store, start, end)
        except CaseError as exc:
            raise StoreUnavailable(f"case store: {exc}") from exc


def _vehicle_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The WIM vehicle evidence of the alarm that opened the case (``rules.wim``), if any."""
    alarm = data.get("alarm")
    evidence = alarm.get("evidence") if isinstance(alarm, dict) else None
    vehicle = evidence.get("vehicle") if isinstance(evidence, dict) else None
    return vehicle if isinstance(vehicle, dict) else None


class RulesAlarmAdapter:
    """Alarms from the rule engine's own store (``rules.store.AlarmStore``): the source of truth."""

    def __init__(self, store: AlarmStore) -> None:
        self.store = store
        self._lock = threading.Lock()  # one SQLite connection, shared by the handler thread pool

    @staticmethod
    def _view(r: AlarmRecord) -> AlarmView:
        state = "cleared" if not r.active else ("acknowledged" if r.acked_by else "active")
        return AlarmView(r.alarm_id, r.device, r.rule, r.severity.value, state, r.raised_t, r.updated_t, r.value,
                         r.acked_by)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._lock:
                return fn(*args, **kwargs)
        except AlarmStoreError as exc:
            raise StoreUnavailable(f"alarm store: {exc}") from exc

    def active(self) -> list[AlarmView]:
        return [self._view(r) for r in self._call(self.store.list, active_only=True, limit=1000)]

    def for_device(self, device_id: str, limit: int) -> list[AlarmView]:
        return [self._view(r) for r in self._call(self.store.list, device=device_id, limit=limit)]

    def recent(self, since: float, limit: int) -> list[AlarmView]:
        return [self._view(r) for r in self._call(self.store.list, since=since, limit=limit)]

    def get(self, alarm_id: str) -> AlarmView | None:
        r = self._call(self.store.get, alarm_id)
        return None if r is None else self._view(r)


class BridgeAlarmAdapter:
    """Alarms as the case bridge has recorded them (its ``alarm_state`` table).

    Used until/unless the rule engine's own alarm store is wired: the bridge applies every
    alarm transition it receives, acknowledgements included, so this is the same lifecycle
    one hop later.
    """

    _COLS = "alarm_id, device, rule, active, acked, severity, raised_at, last_t, value"

    def __init__(self, store: CaseStore) -> None:
        self.store = store

    @staticmethod
    def _view(r: Any) -> AlarmView:
        state = "cleared" if not r[3] else ("acknowledged" if r[4] else "active")
        raised = float(r[6]) if r[6] is not None else float(r[7])
        return AlarmView(str(r[0]), str(r[1]), str(r[2]), str(r[5]), state, raised, float(r[7]),
                         None if r[8] is None else float(r[8]), None)

    def active(self) -> list[AlarmView]:
        with self.store.db.read() as tx:
            rows = tx.execute(f"SELECT {self._COLS} FROM alarm_state WHERE active = 1 ORDER BY last_t DESC LIMIT 1000")
        return [self._view(r) for r in rows]

    def recent(self, since: float, limit: int) -> list[AlarmView]:
        with self.store.db.read() as tx:
            rows = tx.execute(f"SELECT {self._COLS} FROM alarm_state WHERE last_t >= ? ORDER BY last_t DESC LIMIT ?",
                              (since, limit))
        return [self._view(r) for r in rows]

    def for_device(self, device_id: str, limit: int) -> list[AlarmView]:
        with self.store.db.read() as tx:
            rows = tx.execute(f"SELECT {self._COLS} FROM alarm_state WHERE device = ? ORDER BY last_t DESC LIMIT ?",
                              (device_id, limit))
        return [self._view(r) for r in rows]

    def get(self, alarm_id: str) -> AlarmView | None:
        with self.store.db.read() as tx:
            rows = tx.execute(f"SELECT {self._COLS} FROM alarm_state WHERE alarm_id = ?", (alarm_id,))
        return self._view(rows[0]) if rows else None

