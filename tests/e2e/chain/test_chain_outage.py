"""A circuit outage is one fault in the street: the city should get one case for the circuit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chain.chain_expect import HERE, RULES, all_cases, linked
from tests.support.chain import ChainOptions, chain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_chain_a_dead_circuit_opens_exactly_one_case(tmp_path: Path) -> None:
    with chain(tmp_path, ChainOptions(scenario=HERE / "outage.yaml", rules_file=RULES)) as c:
        def circuit_cases() -> list[Any]:
            return [x for x in all_cases(c) if x.corr_key == "circuit:c-out-01"]

        c.wait_for(circuit_cases, 40, "a case for circuit c-out-01")
        # both lamps' alarms have arrived (each raises after 2 s of dark): let any second case appear
        c.wait_for(
            lambda: {a.device for x in circuit_cases() for a in linked(c, x.id)} == {"lamp-out-01", "lamp-out-02"},
            30, "both lamps linked",
        )
        time.sleep(3.0)
        cases = circuit_cases()
        assert len(cases) == 1, [(x.corr_key, x.rule) for x in cases]
