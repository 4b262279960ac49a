"""An overloaded truck is a matter for transport enforcement.

治超 limits: 《超限运输车辆行驶公路管理规定》 (交通运输部令2016年第62号).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.chain.chain_expect import HERE, RULES, first_case, linked, vehicle_of
from tests.support.chain import ChainOptions, chain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_chain_an_overload_case_goes_to_transport_enforcement(tmp_path: Path) -> None:
    with chain(tmp_path, ChainOptions(scenario=HERE / "truck.yaml", rules_file=RULES)) as c:
        case = first_case(c, 40, "overload case", device="wim-truck-01", rule="wim-overload")
        vehicle_of(c, case)  # one vehicle per enforcement case
        assert case.service_code == "S9901"
        assert any("record" in a.evidence for a in linked(c, case.id)), "vehicle record as evidence"
        assert case.unit == "transport-enforcement"
