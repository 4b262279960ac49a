"""Event bodies are checked against the schema the device profiles declare; bad ones are dead-lettered."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_ingest.validate import Accepted, Limits, Rejected, classify
from contracts.payloads import encode_events
from contracts.reading import Event

NOW = 1_764_057_600.0
L = Limits(max_bytes=65536, late_limit_s=3600, skew_limit_s=60)
TOPIC = "citywatch/v1/gw/gw-1/events"
GOOD: dict[str, Any] = {"lane": 1, "speed_kmh": 61.5, "axles": 3, "gross_kg": 30120,
                        "axle_kg": [7000.0, 11560.0, 11560.0], "spacing_m": [3.6, 1.3]}


def verdict(kind: str, body: dict[str, Any], seq: int = 5) -> Accepted | Rejected:
    good = Event("wim-1", "vehicle", "1-1", NOW - 2, GOOD)
    bad = Event("wim-1", kind, "2-2", NOW - 1, body)
    return classify(TOPIC, encode_events("gw-1", "b1", seq, [good, bad]), NOW, L)


def test_a_real_vehicle_and_a_cover_event_pass() -> None:
    assert isinstance(verdict("vehicle", GOOD), Accepted)
    assert isinstance(verdict("cover_open", {"tilt_x": 12.5, "angle": 25.0}), Accepted)
    assert isinstance(verdict("vehicle", {"axles": 5}), Accepted)  # keys are optional (bad readings are left out)


@pytest.mark.parametrize(("kind", "body", "reason", "detail"), [
    ("spaceship", GOOD, "unknown_event_kind", "'spaceship'"),
    ("vehicle", {**GOOD, "gross_kg": -5}, "bad_event_body", "body.gross_kg=-5 outside 0..4.29497e+09"),
    ("vehicle", {**GOOD, "axles": 0, "axle_kg": [], "spacing_m": []}, "bad_event_body", "body.axles=0 outside 2..8"),
    ("vehicle", {**GOOD, "axles": 4}, "bad_event_body", "body.axle_kg has 3 values but axles=4 asks for 4"),
    ("vehicle", {**GOOD, "lane": 1.5}, "bad_event_body", "body.lane=1.5 is not a whole number"),
    ("vehicle", {**GOOD, "colour": "red"}, "bad_event_body", "body.colour is not declared for vehicle"),
    ("vehicle", {**GOOD, "axle_kg": "heavy"}, "bad_event_body", "body.axle_kg must be a list"),
    ("cover_open", {"angle": 400.0}, "bad_event_body", "body.angle=400.0 outside 0..180"),
])
def test_bad_events_are_dead_lettered_with_their_reason(kind: str, body: dict[str, Any], reason: str,
                                                        detail: str) -> None:
    v = verdict(kind, body)
    assert isinstance(v, Rejected), v
    assert v.reason == reason and detail in v.detail and "events[1] wim-1 2-2" in v.detail
    assert v.seq == ("b1", 5)  # dead-lettered, still committed for the ack watermark
