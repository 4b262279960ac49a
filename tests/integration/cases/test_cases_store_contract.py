"""One contract suite over both case-store backends: SQLite (file, WAL) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cases_support import COVER_GAS, GAUGE, LAMP_A, LAMP_B, T0, alarm, pg_store, sqlite_store

from case_bridge.db import migrate
from case_bridge.errors import CaseConflict, CaseNotFound, IllegalTransition, SensorNotClear, UnknownCategory
from case_bridge.store import CaseStore
from contracts.reading import DeviceInfo

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CaseStore]:
    if request.param == "sqlite":
        with sqlite_store(tmp_path, verify_hold_s=300.0) as s:
            yield s
    else:
        dsn = request.getfixturevalue("pg_dsn")
        with pg_store(dsn, verify_hold_s=300.0) as s:
            yield s


def _audit_count(store: CaseStore) -> int:
    with store.db.read() as tx:
        return int(tx.execute("SELECT COUNT(*) FROM case_audit")[0][0])


def test_create_reported_and_get(store: CaseStore) -> None:
    c = store.create_reported("S0111", "路面积水 20 cm", 30.2, 120.1, "灵隐路 1 号", grid="330106001001",
                              source="open311", reporter="citizen-1", now=T0)
    assert (c.state, c.unit, c.service_code, c.category_name) == ("reported", "lingyin-street", "S0111", "道路积水")
    assert c.street == "lingyin-street" and c.district == "xihu"
    assert c.deadline is not None and c.deadline > T0 and not c.overdue
    assert c.time_to_deadline_s == c.deadline - T0
    again = store.get(c.id, now=T0)
    assert again == c
    (entry,) = store.timeline(c.id)
    assert (entry.action, entry.from_state, entry.to_state, entry.actor) == ("report", None, "reported", "citizen-1")
    assert c.to_json()["state_label"] == "上报"


def test_create_is_idempotent_by_source_key(store: CaseStore) -> None:
    a = store.create_reported("B0118", "路灯不亮", source_key="tok-1", now=T0)
    b = store.create_reported("B0118", "路灯不亮", source_key="tok-1", now=T0 + 5)
    assert a.id == b.id
    assert store.worklist(now=T0).total == 1


def test_unknown_category_and_case(store: CaseStore) -> None:
    with pytest.raises(UnknownCategory):
        store.create_reported("S0999", "x", now=T0)
    with pytest.raises(CaseNotFound):
        store.get(424242)
    with pytest.raises(CaseNotFound):
        store.transition(424242, "file", "u")


def test_full_path_writes_one_audit_row_per_transition(store: CaseStore) -> None:
    c = store.create_reported("B0118", "路灯不亮", grid="330106001001", now=T0)
    steps = [("file", "supervisor"), ("dispatch", "dispatcher"), ("accept", "handler"), ("report_fix", "handler"),
             ("verify", "supervisor"), ("close", "supervisor")]
    for i, (action, role) in enumerate(steps):
        c = store.transition(c.id, action, f"user-{role}", note=f"step {i}", request_id=f"r{i}", now=T0 + 60 * (i + 1),
                             role=role)
    assert c.state == "closed" and not c.is_open and c.deadline is None and c.closed_at == T0 + 360
    assert c.filed_at == T0 + 60 and c.dispatched_at == T0 + 120 and c.handled_at == T0 + 240
    tl = store.timeline(c.id)
    assert [e.action for e in tl] == ["report", *[a for a, _ in steps]]
    assert [e.to_state for e in tl] == [
        "reported", "filed", "dispatched", "in_handling", "handled", "verified", "closed"
    ]
    assert [e.from_state for e in tl[1:]] == [e.to_state for e in tl[:-1]]
    assert tl[3].request_id == "r2" and tl[3].note == "step 2" and tl[3].actor == "user-handler"
    assert c.version == 7


def test_illegal_transition_changes_nothing(store: CaseStore) -> None:
    c = store.create_reported("B0118", "x", now=T0)
    before = _audit_count(store)
    with pytest.raises(IllegalTransition) as err:
        store.transition(c.id, "close", "u", now=T0 + 1)
    assert err.value.allowed == ("file", "reject", "cancel")
    with pytest.raises(IllegalTransition, match="role 'handler'"):
        store.transition(c.id, "file", "u", role="handler", now=T0 + 1)
    assert _audit_count(store) == before
    assert store.get(c.id).version == c.version


def test_request_id_retry_is_a_noop_and_versions_conflict(store: CaseStore) -> None:
    c = store.create_reported("B0118", "x", now=T0)
    a = store.transition(c.id, "file", "u", request_id="req-1", now=T0 + 1)
    b = store.transition(c.id, "file", "u", request_id="req-1", now=T0 + 2)
    assert a == store.get(c.id, now=T0 + 1) and b.version == a.version
    with pytest.raises(CaseConflict):
        store.transition(c.id, "dispatch", "u", expected_version=a.version - 1, now=T0 + 3)
    store.transition(c.id, "dispatch", "u", expected_version=a.version, now=T0 + 3)


def test_dispatch_to_another_unit_and_return(store: CaseStore) -> None:
    c = store.create_reported("S0111", "x", grid="330106001001", now=T0)
    c = store.transition(c.id, "file", "s", now=T0)
    c = store.transition(c.id, "dispatch", "d", unit="drainage", now=T0)
    assert c.unit == "drainage"
    assert store.timeline(c.id)[-1].data["unit"] == {"from": "lingyin-street", "to": "drainage"}
    c = store.transition(c.id, "return", "h", note="not ours", now=T0 + 10)
    assert c.state == "returned"
    c = store.transition(c.id, "dispatch", "d", unit="lingyin-street", now=T0 + 20)
    assert (c.state, c.unit) == ("dispatched", "lingyin-street")
    with pytest.raises(IllegalTransition, match="only a dispatch"):
        store.transition(c.id, "accept", "h", unit="drainage", now=T0 + 30)


def test_extension_moves_the_due_time_and_park_stops_the_clock(store: CaseStore) -> None:
    c = store.create_reported("B0118", "x", now=T0)
    c = store.transition(c.id, "file", "s", now=T0)
    c = store.transition(c.id, "dispatch", "d", now=T0)
    due = c.due_at
    assert due is not None and c.deadline == due
    c = store.transition(c.id, "request_extension", "h", note="need parts", now=T0 + 10)
    assert c.extension_pending and c.state == "dispatched"
    c = store.transition(c.id, "approve_extension", "d", now=T0 + 20)
    assert not c.extension_pending and c.extensions == 1 and c.due_at is not None and c.due_at > due
    c = store.transition(c.id, "park", "d", note="waits for road works", now=T0 + 30)
    assert c.deadline is None and not c.overdue and c.time_to_deadline_s is None
    c = store.transition(c.id, "resume", "d", now=T0 + 40)
    assert c.state == "dispatched" and c.deadline is not None


def test_worklist_filters_sorts_pages(store: CaseStore) -> None:
    ids = []
    for i in range(7):
        c = store.create_reported("S0111" if i % 2 else "B0118", f"case {i}", grid="330106001001", now=T0 + i)
        ids.append(c.id)
    store.transition(ids[0], "file", "s", now=T0 + 10)
    store.transition(ids[1], "reject", "s", now=T0 + 10)
    page = store.worklist(unit="lingyin-street", now=T0 + 20)
    # S0111 cases 1, 3, 5 go to the street office (1 was rejected); B0118 cases to street-lighting
    assert page.total == 2
    assert [c.id for c in page.items] == [ids[3], ids[5]]
    all_open = store.worklist(now=T0 + 20, limit=2)
    assert all_open.total == 6 and len(all_open.items) == 2
    dl = [c.deadline for c in store.worklist(now=T0 + 20).items]
    assert dl == sorted(dl)  # type: ignore[type-var]
    assert store.worklist(state="filed", now=T0 + 20).total == 1
    assert store.worklist(state=["filed", "reported"], now=T0 + 20).total == 6
    assert store.worklist(category="B0118", now=T0 + 20).total == 4
    assert store.worklist(include_closed=True, now=T0 + 20).total == 7
    assert store.worklist(state="rejected", now=T0 + 20).items[0].id == ids[1]
    late = T0 + 86400 * 30
    assert store.worklist(overdue=True, now=late).total == 6
    assert all(c.overdue and c.time_to_deadline_s is not None and c.time_to_deadline_s < 0
               for c in store.worklist(overdue=True, now=late).items)
    assert store.worklist(overdue=False, now=late).total == 0
    second = store.worklist(now=T0 + 20, limit=2, offset=2, sort="-created_at")
    assert [c.id for c in second.items] == [ids[4], ids[3]]
    with pytest.raises(ValueError, match="unknown sort"):
        store.worklist(sort="random")
    with pytest.raises(ValueError):
        store.worklist(state="nonsense")


def test_alarm_is_idempotent(store: CaseStore) -> None:
    tr = alarm("wl-0001", "road-water-depth", severity="critical", value=0.45)
    first = store.apply_alarm(tr, GAUGE, T0)
    audits = _audit_count(store)
    again = store.apply_alarm(tr, GAUGE, T0 + 1)
    assert first.effect == "created" and again.effect == "duplicate"
    assert store.worklist(now=T0).total == 1 and _audit_count(store) == audits


def test_one_open_case_per_condition_and_circuit(store: CaseStore) -> None:
    a = store.apply_alarm(alarm("wl-0001", "road-water-depth", alarm_id="x1", severity="minor"), GAUGE, T0)
    b = store.apply_alarm(alarm("wl-0001", "road-water-depth", alarm_id="x2", severity="minor", t=T0 + 5), GAUGE,
                          T0 + 5)
    assert (a.effect, b.effect, a.case_id) == ("created", "attached", b.case_id)
    # the lamps of one circuit share a case
    la = store.apply_alarm(alarm("lamp-0001", "lampFailure"), LAMP_A, T0)
    lb = store.apply_alarm(alarm("lamp-0002", "lampFailure"), LAMP_B, T0 + 1)
    assert la.case_id == lb.case_id and lb.effect == "attached"
    assert store.open_cases_for(["lamp-0001", "lamp-0002", "nobody"]) == {
        "lamp-0001": {"lampFailure": str(la.case_id)},
        "lamp-0002": {"lampFailure": str(la.case_id)},
        "nobody": {},
    }
    # once closed, the same condition opens a new case
    assert a.case_id is not None
    store.transition(a.case_id, "cancel", "s", now=T0 + 10)
    c = store.apply_alarm(alarm("wl-0001", "road-water-depth", alarm_id="x3", t=T0 + 20), GAUGE, T0 + 20)
    assert c.effect == "created" and c.case_id != a.case_id
    assert store.open_cases_for(["wl-0001"]) == {"wl-0001": {"road-water-depth": str(c.case_id)}}


def test_one_manhole_incident_is_one_case(store: CaseStore) -> None:
    cover = store.apply_alarm(alarm("mh-0002", "manhole-cover-open", alarm_id="c1", severity="major"), COVER_GAS, T0)
    tilt = store.apply_alarm(alarm("mh-0002", "manhole-tilt", alarm_id="t1", severity="critical", t=T0 + 5),
                             COVER_GAS, T0 + 5)
    assert (cover.effect, tilt.effect) == ("created", "attached") and cover.case_id == tilt.case_id
    assert tilt.case is not None and tilt.case.urgency == "very_urgent" and "manhole-tilt" in tilt.case.description
    assert store.worklist(device="mh-0002", now=T0 + 5).total == 1
    assert store.open_cases_for(["mh-0002"]) == {"mh-0002": {"manhole-cover-open": str(cover.case_id),
                                                             "manhole-tilt": str(cover.case_id)}}


def test_escalation_auto_dispatches_and_raises_urgency(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("wl-0001", "road-water-depth", severity="minor"), GAUGE, T0)
    assert o.case is not None and o.case.state == "reported" and o.case.urgency == "normal"
    o2 = store.apply_alarm(alarm("wl-0001", "road-water-depth", "escalated", "critical", t=T0 + 60), GAUGE, T0 + 60)
    assert o2.case is not None and o2.case.state == "dispatched" and o2.case.urgency == "very_urgent"
    assert "(minor)" in o.case.description and "(critical)" in o2.case.description
    assert "(minor)" not in o2.case.description
    assert o2.actions == ("file", "dispatch")
    assert [e.action for e in store.timeline(o2.case.id)] == ["report", "escalate", "file", "dispatch"]


def test_no_case_for_health_rules(store: CaseStore) -> None:
    assert store.apply_alarm(alarm("wl-0001", "battery-low"), GAUGE, T0).effect == "no_case"
    assert store.worklist(now=T0).total == 0


def test_sensor_verification_fail_and_hold(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("mh-0002", "manhole-tilt", value=35.0), COVER_GAS, T0)
    assert o.case_id is not None
    store.transition(o.case_id, "report_fix", "h", now=T0 + 100)
    (fail,) = store.due_verifications(now=T0 + 110)  # grace 0: the cover still reads tilted
    assert fail.case is not None and fail.case.state == "returned" and fail.actions == ("fail_verification",)
    ev = store.timeline(o.case_id)[-1].data
    assert ev["alarms"][0]["value"] == 35.0 and ev["alarms"][0]["active"]
    store.transition(o.case_id, "dispatch", "d", now=T0 + 200)
    store.apply_alarm(alarm("mh-0002", "manhole-tilt", "cleared", t=T0 + 250, value=0.5), COVER_GAS, T0 + 250)
    store.transition(o.case_id, "report_fix", "h", now=T0 + 300)
    assert store.due_verifications(now=T0 + 400) == []  # hold 300 s from the fix
    (ok,) = store.due_verifications(now=T0 + 600)
    assert ok.case is not None and ok.case.state == "closed" and ok.actions == ("verify", "close")
    assert store.open_cases_for(["mh-0002"]) == {"mh-0002": {}}


def test_verify_and_close_wait_for_the_street_unless_a_supervisor_overrides(store: CaseStore) -> None:
    o = store.apply_alarm(alarm("wl-0001", "road-water-depth", value=0.21), GAUGE, T0)
    assert o.case_id is not None
    cid = o.case_id
    for action, actor in (("file", "s"), ("dispatch", "d"), ("report_fix", "h")):
        store.transition(cid, action, actor, now=T0 + 60)
    with pytest.raises(SensorNotClear, match=r"0\.21"):
        store.transition(cid, "verify", "sup", role="supervisor", now=T0 + 120)
    with pytest.raises(IllegalTransition, match="may not override"):
        store.transition(cid, "verify", "bridge", role="system", now=T0 + 120, override_reason="dry")
    assert store.get(cid).state == "handled"
    store.transition(cid, "verify", "sup", role="supervisor", now=T0 + 120, override_reason="gauge silted, road dry")
    with pytest.raises(SensorNotClear):
        store.transition(cid, "close", "sup", role="supervisor", now=T0 + 130)
    c = store.transition(cid, "close", "sup", role="supervisor", now=T0 + 130, override_reason="as verified")
    assert c.state == "closed" and c.overridden
    overrides = [e for e in store.timeline(cid) if e.action == "override"]
    assert [e.note for e in overrides] == ["gauge silted, road dry", "as verified"]
    assert overrides[0].data["alarms"][0]["value"] == 0.21 and overrides[0].actor == "sup"
    st = store.stats.report(T0 - 1, T0 + 3600, now=T0 + 3600)
    assert (st.total.closed, st.total.due, st.total.on_time, st.total.overridden) == (1, 1, 0, 1)


def test_statistics(store: CaseStore) -> None:
    a = store.create_reported("S0111", "a", grid="330106001001", now=T0)
    b = store.create_reported("S0111", "b", grid="330106001001", now=T0 + 3600)
    store.create_reported("B0118", "c", grid="330102001001", now=T0 + 7200)
    for cid, fix_after in ((a.id, 600), (b.id, 5 * 86400)):
        store.transition(cid, "file", "s", now=T0 + 60)
        store.transition(cid, "dispatch", "d", now=T0 + 120)
        store.transition(cid, "report_fix", "h", now=T0 + 120 + fix_after)
        store.transition(cid, "verify", "s", now=T0 + 200 + fix_after)
        store.transition(cid, "close", "s", now=T0 + 300 + fix_after)
    st = store.stats.report(T0 - 1, T0 + 86400, now=T0 + 10 * 86400)
    by_unit = {r.key: r for r in st.by_unit}
    lingyin = by_unit["lingyin-street"]
    assert (lingyin.total, lingyin.closed, lingyin.due, lingyin.on_time) == (2, 2, 2, 1)
    assert lingyin.on_time_rate == 0.5 and lingyin.closure_rate == 1.0
    assert st.total.total == 3 and st.total.closure_rate == pytest.approx(2 / 3)
    assert {r.key for r in st.by_category} == {"S0111", "B0118"}
    assert (10, "S0111", 1) in st.by_hour_category and (11, "S0111", 1) in st.by_hour_category
    assert (12, "B0118", 1) in st.by_hour_category
    assert st.by_grid[0] == ("330106001001", 2)
    assert st.stage_median_s["close"] == pytest.approx(100.0)
    assert st.stage_median_s["file"] is not None


def test_notify_dedup_and_migrate_twice(store: CaseStore) -> None:
    n = {"key": "k", "title": "t"}
    assert store.notices.enqueue_notice(["a", "b"], n, T0, 60) == ["a", "b"]
    assert store.notices.enqueue_notice(["a", "b"], n, T0 + 30, 60) == []
    assert store.notices.enqueue_notice(["a"], n, T0 + 61, 60) == ["a"]
    assert store.notices.pending_notices() == 3
    claimed = store.notices.take_notices(T0 + 61, lease_s=30, limit=2)
    assert [(t, b["key"], a) for _i, t, b, a in claimed] == [("a", "k", 0), ("b", "k", 0)]
    (third,) = store.notices.take_notices(T0 + 61, lease_s=30)  # the first two are leased
    assert store.notices.take_notices(T0 + 62, lease_s=30) == []
    store.notices.notice_done(claimed[0][0])
    store.notices.notice_retry(claimed[1][0], 1, T0 + 70)
    # the retry is due, and the third's lease ran out (its sender "crashed"): both come back
    assert [i for i, *_ in store.notices.take_notices(T0 + 95, lease_s=30)] == [claimed[1][0], third[0]]
    assert migrate(store.db) == 4  # 1 to 4 (versions in schema_version); a second run is a no-op
    store.devices.remember([GAUGE, COVER_GAS], T0)
    store.devices.remember([GAUGE], T0 + 1)
    assert store.devices.known()["mh-0002"] == COVER_GAS


def test_a_thousand_device_birth_with_a_repeated_id(store: CaseStore) -> None:
    """A city's birth is 1 000 devices in one write; a repeated id keeps its last entry (as it always did)."""
    devs = [DeviceInfo(f"wl-{i:04d}", "radar", "water_gauge", grid=f"g{i % 7}") for i in range(1000)]
    moved = DeviceInfo("wl-0007", "radar", "water_gauge", grid="moved")
    store.devices.remember([*devs, moved], T0)
    known = store.devices.known()
    assert len(known) == 1000 and known["wl-0007"] == moved and known["wl-0999"] == devs[999]
    store.devices.remember([DeviceInfo("wl-0001", "radar", "water_gauge", grid="again")], T0 + 1)
    assert store.devices.known()["wl-0001"].grid == "again" and len(store.devices.known()) == 1000


def test_device_ids_and_date_filters_and_console_roles(store: CaseStore) -> None:
    la = store.apply_alarm(alarm("lamp-0001", "lampFailure"), LAMP_A, T0)
    store.apply_alarm(alarm("lamp-0002", "lampFailure"), LAMP_B, T0 + 1)
    other = store.create_reported("S0111", "x", now=T0 + 100)
    assert [c.id for c in store.worklist(device="lamp-0002", now=T0).items] == [la.case_id]
    assert store.worklist(ids=[other.id], now=T0).items[0].id == other.id
    assert store.worklist(ids=[], now=T0).total == 0
    assert store.worklist(created_from=T0 + 50, now=T0).total == 1
    assert store.worklist(created_to=T0 + 50, now=T0).total == 1
    # the console's login roles map onto workflow roles
    assert store.allowed_actions(other, "duty_officer") == ("file", "cancel")
    assert store.allowed_actions(other, "case_handler") == ()
    with pytest.raises(ValueError, match="unknown role"):
        store.allowed_actions(other, "mayor")


def test_two_writers_race_for_one_correlation_key(store: CaseStore, tmp_path: Path) -> None:
    """Two bridges (two connections) get alarms of one lamp circuit at once: one case, both linked."""
    import threading

    from case_bridge.store import open_case_store

    if store.dialect == "postgresql":
        other = open_case_store(store.db._dsn)  # type: ignore[union-attr]  # same DSN, same schema
    else:
        other = open_case_store(f"sqlite:///{tmp_path}/cases.db")
    try:
        errors: list[BaseException] = []
        n = 12

        def run(s: CaseStore, first: int) -> None:
            try:
                for i in range(first, n, 2):
                    dev = LAMP_A if i % 4 < 2 else LAMP_B
                    s.apply_alarm(alarm(dev.id, "lampFailure", alarm_id=f"race-{i}", t=T0 + i), dev, T0 + i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s, k)) for k, s in ((0, store), (1, other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        page = store.worklist(now=T0)
        assert page.total == 1
        with store.db.read() as tx:
            assert int(tx.execute("SELECT COUNT(*) FROM case_links")[0][0]) == n
    finally:
        other.close()


def test_escalations_are_kept_in_the_store(store: CaseStore) -> None:
    n1, n2 = {"key": "k1", "title": "t"}, {"key": "k2", "title": "t"}
    store.notices.enqueue_notice(["duty"], n1, T0, 3600, ("a1", T0 + 600, n1))
    store.notices.enqueue_notice(["duty"], n1, T0 + 10, 3600, ("a1", T0 + 900, n1))  # duplicate: nothing new
    store.notices.enqueue_notice(["duty"], n2, T0, 3600, ("a2", T0 + 600, n2))
    store.notices.cancel_escalation("a2")
    assert store.notices.take_due_escalations(T0 + 599) == []
    assert store.notices.take_due_escalations(T0 + 600) == [{"key": "k1", "title": "t"}]
    assert store.notices.take_due_escalations(T0 + 10_000) == []
