"""Lamp command planning and result reading (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from console.errors import NotFound, StoreUnavailable
from console.lamps import LampCommandBody, circuits, lamps_of, outcome, plan
from console.views import DeviceView
from contracts.payloads import Command, CommandResult

DEVS = [DeviceView("lamp-2", "lamp", gateway="gw1", circuit="c1"), DeviceView("lamp-1", "lamp", gateway="gw1",
                                                                                circuit="c1"),
        DeviceView("lamp-3", "lamp", gateway="gw2", circuit="c2"), DeviceView("wl-1", "water_gauge", gateway="gw1"),
        DeviceView("lamp-9", "lamp", gateway=None, circuit=None)]


def test_targets() -> None:
    assert [d.id for d in lamps_of(DEVS, circuit="c1")] == ["lamp-1", "lamp-2"]
    assert [d.id for d in lamps_of(DEVS, device="lamp-3")] == ["lamp-3"]
    with pytest.raises(NotFound):
        lamps_of(DEVS, device="wl-1")  # not a lamp
    with pytest.raises(NotFound):
        lamps_of(DEVS, circuit="c9")
    assert {c: [d.id for d in ds] for c, ds in circuits(DEVS).items()} == {
        "": ["lamp-9"], "c1": ["lamp-1", "lamp-2"], "c2": ["lamp-3"]}


def test_plan_one_command_per_lamp_on_its_gateway() -> None:
    assert plan(lamps_of(DEVS, circuit="c1"), "dim", 40.0, "r1") == [
        ("gw1", Command("r1-0", "dim", "lamp-1", {"level_pct": 40.0})),
        ("gw1", Command("r1-1", "dim", "lamp-2", {"level_pct": 40.0}))]
    assert plan(lamps_of(DEVS, device="lamp-3"), "off", None, "r2") == [("gw2", Command("r2-0", "lamp_off", "lamp-3"))]
    with pytest.raises(StoreUnavailable):
        plan([DEVS[4]], "on", None, "r3")  # no birth message yet: no gateway to send to


def test_outcomes() -> None:
    cmd = Command("r-0", "dim", "lamp-1", {"level_pct": 40})
    ok = outcome("gw1", cmd, CommandResult("r-0", True, None, {"device": "lamp-1", "dim_level_pct": 40.0}))
    assert (ok.status, ok.readback, ok.error) == ("success", {"dim_level_pct": 40.0}, None)
    bad = outcome("gw1", cmd, CommandResult("r-0", False, "readback_mismatch", {"detail": "wrote 40, read back 0"}))
    assert (bad.status, bad.error, bad.detail) == ("refused", "readback_mismatch", "wrote 40, read back 0")
    late = outcome("gw1", cmd, None)
    assert (late.status, late.error, late.device, late.gateway) == ("timed_out", "timeout", "lamp-1", "gw1")


@pytest.mark.parametrize("body", [
    {"action": "on", "device": "lamp-1"},  # not confirmed
    {"action": "on", "confirm": True},  # no target
    {"action": "on", "device": "lamp-1", "circuit": "c1", "confirm": True},  # two targets
    {"action": "dim", "device": "lamp-1", "confirm": True},  # no level
    {"action": "on", "level_pct": 10, "device": "lamp-1", "confirm": True},  # a level for on
    {"action": "dim", "level_pct": -1, "device": "lamp-1", "confirm": True},
    {"action": "blink", "device": "lamp-1", "confirm": True},
    {"action": "on", "device": "../x", "confirm": True},
    {"action": "on", "device": "lamp-1", "confirm": True, "force": True},  # unknown key
])
def test_body_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LampCommandBody.model_validate(body)
