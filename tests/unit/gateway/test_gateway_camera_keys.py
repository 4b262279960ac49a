"""A WIM vehicle event may carry the camera's plate and image references, and nothing else as text."""

from __future__ import annotations

from cloud_ingest.validate import event_schemas
from gateway.events import check_event

BODY = {"lane": 1, "axles": 2, "gross_kg": 20000, "axle_kg": [8000, 12000], "spacing_m": [3.5]}


def test_plate_and_images_are_accepted_on_a_vehicle() -> None:
    assert check_event(event_schemas(), "vehicle", {**BODY, "plate": "浙A12345", "images": ["a.jpg", "b.jpg"]}) is None


def test_bad_camera_fields_are_refused() -> None:
    s = event_schemas()
    assert (check_event(s, "vehicle", {**BODY, "plate": 12345}) or "").startswith("bad_event_body: body.plate")
    assert (check_event(s, "vehicle", {**BODY, "plate": "x" * 17}) or "").startswith("bad_event_body: body.plate")
    assert "list of at most 8 strings" in (check_event(s, "vehicle", {**BODY, "images": ["a"] * 9}) or "")
    assert (check_event(s, "vehicle", {**BODY, "images": "a.jpg"}) or "").startswith("bad_event_body: body.images")
    assert (check_event(s, "vehicle", {**BODY, "gross_kg": "heavy"}) or "").startswith("bad_event_body: body.gross")
