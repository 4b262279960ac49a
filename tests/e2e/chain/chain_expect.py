"""What the e2e district (``district.yaml`` + ``rules.yaml``) must produce, shared by the chain tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.chain import Chain, ChainOptions

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "district.yaml"
RULES = HERE / "rules.yaml"

def options(**kw: Any) -> ChainOptions:
    return ChainOptions(scenario=SCENARIO, rules_file=RULES, **kw)


def all_cases(c: Chain) -> list[Any]:
    store = c.case_store()
    try:
        return list(store.worklist(include_closed=True, limit=200).items)
    finally:
        store.close()


def find(cases: list[Any], **match: Any) -> list[Any]:
    return [x for x in cases if all(getattr(x, k) == v for k, v in match.items())]


def one_case_per_condition(cases: list[Any]) -> dict[str, int]:
    """corr_key -> number of cases (IoT cases only); every value must be 1."""
    return dict(Counter(x.corr_key for x in cases if x.source == "iot"))


def wait_case(c: Chain, timeout_s: float, what: str, **match: Any) -> Any:
    def look() -> Any:
        hits = find(all_cases(c), **match)
        return hits[0] if len(hits) == 1 else None

    return c.wait_for(look, timeout_s, what, every_s=0.5)


def first_case(c: Chain, timeout_s: float, what: str, **match: Any) -> Any:
    """The earliest matching case once there is one (each overloaded vehicle opens its own)."""
    def look() -> Any:
        hits = find(all_cases(c), **match)
        return min(hits, key=lambda x: x.id) if hits else None

    return c.wait_for(look, timeout_s, what, every_s=0.5)


def vehicle_of(c: Chain, case: Any) -> str:
    """The one vehicle (WIM event id) behind an enforcement case: every linked alarm names the same."""
    ids = {str(a.evidence["record"]["event_id"]) for a in linked(c, case.id) if "record" in a.evidence}
    assert len(ids) == 1, (case.id, ids)
    assert case.corr_key == f"vehicle:{case.device}:{case.device}/{next(iter(ids))}", case.corr_key
    return ids.pop()


def conditions(per_key: dict[str, int]) -> set[str]:
    """Correlation keys with each vehicle key (``vehicle:<scale>:<scale>/<event id>``) as ``vehicle:<scale>:*``."""
    return {k.rsplit(":", 1)[0] + ":*" if k.startswith("vehicle:") else k for k in per_key}


def linked(c: Chain, case_id: int) -> list[Any]:
    store = c.case_store()
    try:
        return list(store.linked_alarms(case_id))
    finally:
        store.close()


def act(c: Chain, case_id: int, action: str, note: str = "", role: str = "handler") -> Any:
    """A handler of the responsible unit works the case through the case store API."""
    store = c.case_store()
    try:
        return store.transition(case_id, action, "e2e-handler", note=note, role=role)
    finally:
        store.close()


def state_of(c: Chain, case_id: int) -> str:
    store = c.case_store()
    try:
        return str(store.get(case_id).state)
    finally:
        store.close()


def expected_conditions() -> set[str]:
    """The conditions the district raises (road water, cover, burnt lamp, circuit outage, overloaded
    vehicles: one case each, keyed by the vehicle); compare with :func:`conditions`."""
    return {
        "device:wl-e2e-01:road-water-depth",
        "incident:mh-e2e-01",
        "circuit:c-e2e-01",
        "circuit:c-e2e-02",
        "vehicle:wim-e2e-01:*",
    }
