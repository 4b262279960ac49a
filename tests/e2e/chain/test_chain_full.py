"""The whole district as production runs it: separate processes, Mosquitto with per-gateway
credentials and the shipped ACL, PostgreSQL for ingest, rules and cases.

The simulator runs x20 (``district.yaml``): the storm rises and recedes within ~50 wall seconds,
the cover lifts and reseats, one lamp is burnt out, a two-lamp circuit loses supply, and trucks
cross the bridge scale. The rule file is the default one with hold times compressed to seconds.
Cases are read and worked through the case store API (``case_bridge.open_case_store``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.chain.chain_expect import (
    act,
    all_cases,
    conditions,
    expected_conditions,
    find,
    first_case,
    linked,
    one_case_per_condition,
    options,
    state_of,
    vehicle_of,
    wait_case,
)
from tests.support.chain import chain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_chain_storm_cover_lamps_truck_raise_the_right_cases_and_verified_fixes_close(tmp_path: Path) -> None:
    with chain(tmp_path, options(verify_hold_s=4.0, verify_grace_s=3.0)) as c:
        # -- the storm: road water (事件 S0111) goes to the street office of the gauge's grid
        water = wait_case(c, 60, "road-water case", device="wl-e2e-01", rule="road-water-depth")
        assert water.service_code == "S0111"
        assert water.unit == "lingyin-street"  # grid 330106001001 -> 灵隐街道
        assert water.kind == "event"
        # critical water is filed and dispatched at once (categories.yaml auto_dispatch_from: critical)
        c.wait_for(lambda: state_of(c, water.id) == "dispatched", 40, "road-water case dispatched")

        # -- the lifted cover: a 部件 case for its owner, the code taken from the component id
        cover = wait_case(c, 30, "manhole case", device="mh-e2e-01", rule="manhole-tilt")
        assert cover.service_code == "B0103"
        assert cover.unit == "drainage"
        assert cover.kind == "component"

        # -- the burnt-out lamp: a street-lamp case for its owner
        lamp = wait_case(c, 30, "burnt-out lamp case", corr_key="circuit:c-e2e-01")
        assert (lamp.service_code, lamp.unit, lamp.device) == ("B0118", "street-lighting", "lamp-e2e-01")

        # -- the circuit outage: one case per condition for the whole circuit, both lamps attached
        outage = wait_case(c, 40, "circuit outage case", corr_key="circuit:c-e2e-02")
        assert outage.service_code == "B0118"
        c.wait_for(
            lambda: {a.device for a in linked(c, outage.id)} == {"lamp-e2e-02", "lamp-e2e-03"},
            30,
            "both lamps of circuit c-e2e-02 on the one outage case",
        )

        # -- an overloaded truck: an enforcement case (local extension S9901) per vehicle, with its record
        truck = first_case(c, 40, "overload case", device="wim-e2e-01", rule="wim-overload")
        vehicle_of(c, truck)
        assert truck.service_code == "S9901"
        assert truck.kind == "event"
        evidence = [a.evidence for a in linked(c, truck.id)]
        records = [e["record"] for e in evidence if "record" in e]
        assert records, evidence
        rec = records[0]
        assert rec["gross_kg"] > 0 and len(rec["axle_kg"]) == rec["axles"]
        stored = c.ingest_query(
            "SELECT body FROM events WHERE device = 'wim-e2e-01' AND kind = 'vehicle' AND id = %s",
            (str(rec["event_id"]),),
        )
        assert stored and stored[0][0]["gross_kg"] == rec["gross_kg"], "the evidence is the stored vehicle record"

        # -- fixes. The cover reseated: the handler accepts and reports the fix; the sensor reads
        # normal for verify_hold_s, so the bridge verifies and (auto_close) closes the case.
        c.wait_for(lambda: not any(a.active for a in linked(c, cover.id)), 40, "tilt alarm cleared after reseat")
        act(c, cover.id, "accept")
        act(c, cover.id, "report_fix", note="cover reseated and locked")
        c.wait_for(lambda: state_of(c, cover.id) == "closed", 30, "cover case verified by the sensor and closed")

        # the water receded: same path for the road-water case
        c.wait_for(lambda: not any(a.active for a in linked(c, water.id)), 60, "road-water alarm cleared")
        act(c, water.id, "accept")
        act(c, water.id, "report_fix", note="drain cleared")
        c.wait_for(lambda: state_of(c, water.id) == "closed", 30, "road-water case verified and closed")

        # a fix that does not hold: the lamp is still dark, so the case comes back (回退) by itself
        if state_of(c, lamp.id) == "reported":
            act(c, lamp.id, "file", role="dispatcher")
            act(c, lamp.id, "dispatch", role="dispatcher")
        act(c, lamp.id, "report_fix", note="replaced the lamp (it was not)")
        c.wait_for(lambda: state_of(c, lamp.id) == "returned", 30, "unfixed lamp case returned by the sensor")

        # -- exactly one case per condition, and every expected condition has its case
        cases = all_cases(c)
        per_key = one_case_per_condition(cases)
        assert expected_conditions() <= conditions(per_key), per_key
        assert all(n == 1 for n in per_key.values()), per_key
        trucks = find(cases, device="wim-e2e-01", rule="wim-overload")
        assert len({vehicle_of(c, t) for t in trucks}) == len(trucks), "one enforcement case per vehicle"
        assert find(cases, corr_key="device:wl-e2e-01:road-water-depth")[0].state == "closed"

        # -- nothing lost on the way
        c.quiesce()
        ledger = c.ledger()
        print(ledger.line("full chain"))
        assert ledger.generated > 500
        assert ledger.lost == 0 and ledger.pending == 0
        assert ledger.dup_after_dedup == 0
        assert ledger.seq_gaps == 0
        assert ledger.dead_lettered == 0
