"""One enforcement case per weighed vehicle (``correlate: vehicle``), whichever overload rule fired."""

from __future__ import annotations

from functools import cache

from case_bridge.config import load_catalog
from case_bridge.mapping import map_alarm, vehicle_identity
from case_bridge.policy import LinkAlarm, OpenCase, PolicyConfig, Situation, decide, lookup_key
from contracts.reading import DeviceInfo
from tests.support.cases import T0, a_case, alarm

WIM = DeviceInfo("wim-0001", "wim", "wim", 30.28, 120.16, grid="330106001001")


@cache
def cfg() -> PolicyConfig:
    return PolicyConfig(load_catalog())


def _vehicle(event_id: str, **extra: object) -> dict[str, object]:
    v: dict[str, object] = {"id": f"wim-0001/{event_id}", "lane": 1, "axles": 2, "gross_kg": 21000.0,
                            "gross_limit_kg": 18000.0, "gross_over_pct": 16.7, **extra}
    return {"record": {"event_id": event_id}, "vehicle": v}


def test_gross_and_axle_overload_of_one_truck_share_one_key_the_next_truck_has_its_own() -> None:
    gross = alarm("wim-0001", "wim-overload", alarm_id="g1", evidence=_vehicle("7-1"))
    axle = alarm("wim-0001", "wim-axle-overload", alarm_id="a1", evidence=_vehicle("7-1"))
    other = alarm("wim-0001", "wim-overload", alarm_id="g2", evidence=_vehicle("8-2"))
    key = lookup_key(gross, WIM, cfg())
    assert key == lookup_key(axle, WIM, cfg()) == "vehicle:wim-0001:wim-0001/7-1"
    assert lookup_key(other, WIM, cfg()) != key


def test_the_second_alarm_of_a_truck_attaches_to_its_case_and_the_next_truck_opens_one() -> None:
    axle = alarm("wim-0001", "wim-axle-overload", alarm_id="a1", evidence=_vehicle("7-1"))
    truck_case = a_case(11, "reported", "urgent", device="wim-0001")
    d = decide(axle, Situation(correlated=truck_case, device=WIM), cfg(), T0)
    assert d.effect == "attached" and LinkAlarm(11, axle) in d.commands
    assert not any(isinstance(c, OpenCase) for c in d.commands)
    nxt = alarm("wim-0001", "wim-overload", alarm_id="g2", evidence=_vehicle("8-2"))
    assert decide(nxt, Situation(device=WIM), cfg(), T0).effect == "created"  # no correlated case: its own


def test_the_identity_falls_back_to_the_record_and_then_to_the_device_key() -> None:
    assert vehicle_identity({"record": {"event_id": "5-9"}}) == "5-9"
    assert vehicle_identity({}) is None
    bare = alarm("wim-0001", "wim-overload", alarm_id="x")
    assert lookup_key(bare, WIM, cfg()) == "device:wim-0001:wim-overload"


def test_the_description_names_the_vehicle() -> None:
    tr = alarm("wim-0001", "wim-overload", alarm_id="g1", value=21000.0, evidence=_vehicle("7-1", plate="浙A12345"))
    draft = map_alarm(cfg().catalog, tr, WIM)
    assert draft is not None
    assert "plate 浙A12345, lane 1, 2 axles, gross 21000 kg / limit 18000 kg (+16.7 %)" in draft.description
