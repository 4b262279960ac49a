"""Faults during the whole chain: the district of ``district.yaml`` plays out while processes die.

Two schedules: ``full_schedule`` has the issue's counts at wall-clock scale (about 6 minutes; marked
``long``, so it runs in ``make test-long``); ``schedule`` below is a scaled-down one that runs in
under a minute within ``make test``:

Scaled down to fit the e2e time budget (the whole e2e set runs in under 6 minutes), within ~50
wall seconds while the storm, the cover lift, the outage and the trucks happen:

* Mosquitto ``kill -9`` x3 (restarted on the same port after 0.5 s; its persistence is the
  default snapshot, so sessions, queued messages and retained births of the moment are lost);
* ``citywatch ingest`` ``kill -9`` x3, ``citywatch rules`` x2, ``citywatch cases`` x2;
* the ingester's PostgreSQL paused for 6 s: its connections go through a TCP relay that is
  SIGSTOPped (a paused server as the ingester sees it: connected, silent). The shared system
  PostgreSQL itself is never stopped;
* the ingester frozen (``SIGSTOP``) for 3 s, then continued;
* gateway gw-e2e-01's uplink (gauge + cover) cut for 10 s, standing for a multi-minute outage
  (x20 simulated time: 200 simulated seconds): its relay to the broker is killed (connections
  reset, reconnects refused) and restarted.

Then: the ledger shows 0 readings lost, 0 duplicates stored, and there is exactly one case per
condition, each expected condition having its case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.chain.chain_expect import all_cases, conditions, expected_conditions, one_case_per_condition, options
from tests.support.chain import Chain, chain

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def schedule(c: Chain) -> list[tuple[float, str, Callable[[], None]]]:
    gw = "gw-e2e-01"
    return [
        (3.0, "broker kill -9 #1", lambda: c.bounce("broker", 0.5)),
        (6.0, "ingest kill -9 #1", lambda: c.bounce("ingest", 0.3)),
        (9.0, "rules kill -9 #1", lambda: c.bounce("rules", 0.3)),
        (12.0, f"uplink {gw} cut", lambda: c.cut_uplink(gw)),
        (15.0, "ingest kill -9 #2", lambda: c.bounce("ingest", 0.3)),
        (18.0, "cases kill -9 #1", lambda: c.bounce("cases", 0.3)),
        (22.0, f"uplink {gw} restored", lambda: c.restore_uplink(gw)),
        (24.0, "broker kill -9 #2", lambda: c.bounce("broker", 0.5)),
        (27.0, "ingest database paused", c.pause_database),
        (33.0, "ingest database resumed", c.resume_database),
        (35.0, "rules kill -9 #2", lambda: c.bounce("rules", 0.3)),
        (38.0, "ingest kill -9 #3", lambda: c.bounce("ingest", 0.3)),
        (41.0, "broker kill -9 #3", lambda: c.bounce("broker", 0.5)),
        (44.0, "cases kill -9 #2", lambda: c.bounce("cases", 0.3)),
        (46.0, "ingest SIGSTOP", lambda: c.pause("ingest")),
        (49.0, "ingest SIGCONT", lambda: c.resume("ingest")),
    ]


def full_schedule(c: Chain) -> list[tuple[float, str, Callable[[], None]]]:
    """The issue's counts at wall-clock scale: broker kill -9 x10, ingester x5, rules and cases x3 each,
    the ingester's database paused 30 s, gw-e2e-01's uplink cut for 5 minutes (about 6 minutes in all)."""
    gw = "gw-e2e-01"
    plan: list[tuple[float, str, Callable[[], None]]] = [
        (5.0, f"uplink {gw} cut", lambda: c.cut_uplink(gw)),
        (305.0, f"uplink {gw} restored", lambda: c.restore_uplink(gw)),
        (110.0, "ingest database paused", c.pause_database),
        (140.0, "ingest database resumed", c.resume_database),
    ]
    kills = {
        "broker": (0.5, [10.0 + 30.0 * i for i in range(10)]),
        "ingest": (0.3, [20.0, 80.0, 155.0, 215.0, 275.0]),
        "rules": (0.3, [50.0, 165.0, 255.0]),
        "cases": (0.3, [95.0, 185.0, 245.0]),
    }
    for name, (down_s, times) in kills.items():
        for i, at in enumerate(times):
            plan.append((at, f"{name} kill -9 #{i + 1}", lambda n=name, d=down_s: c.bounce(n, d)))
    return sorted(plan, key=lambda item: item[0])


@pytest.mark.parametrize("plan", [schedule, pytest.param(full_schedule, marks=[pytest.mark.long,
                                                                                pytest.mark.timeout(900)])],
                         ids=["scaled", "full"])
def test_chain_survives_kills_pauses_and_an_uplink_cut_losing_nothing_and_opening_one_case_per_condition(
    tmp_path: Path, plan: Callable[[Chain], list[tuple[float, str, Callable[[], None]]]],
) -> None:
    with chain(tmp_path, options()) as c:
        t0 = time.monotonic()
        for at_s, what, action in plan(c):
            delay = at_s - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            action()
            print(f"[{time.monotonic() - t0:5.1f}s] {what}", flush=True)
        for name, p in c.procs.items():
            assert p.alive, f"{name} is not running after the faults:\n{p.tail()}"

        # every expected condition gets its case, once
        c.wait_for(lambda: expected_conditions() <= conditions(one_case_per_condition(all_cases(c))), 120,
                   "a case for every expected condition")
        c.quiesce()
        time.sleep(2.0)  # late alarms from the replayed backlog reach the bridge
        cases = all_cases(c)
        per_key = one_case_per_condition(cases)
        ledger = c.ledger()
        print(ledger.line(f"chain faults ({plan.__name__})"))
        print("cases per condition:", per_key)
        assert all(n == 1 for n in per_key.values()), per_key
        units = {x.corr_key: x.unit for x in cases}
        assert units["device:wl-e2e-01:road-water-depth"] == "lingyin-street"
        assert units["incident:mh-e2e-01"] == "drainage"
        assert units["circuit:c-e2e-02"] == "street-lighting"
        assert ledger.lost == 0 and ledger.pending == 0
        assert ledger.dup_after_dedup == 0
        assert ledger.seq_gaps == 0
        assert ledger.dead_lettered == 0
        assert ledger.generated > 500
