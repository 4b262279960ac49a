"""Pure validation: topic/gateway/identity checks, the sample-time window, envelope salvage."""

from __future__ import annotations

import orjson
import pytest

from cloud_ingest.validate import Accepted, Limits, Rejected, classify, salvage_envelope
from contracts.payloads import Status, encode_events, encode_status, encode_telemetry
from contracts.reading import Event, Reading

NOW = 1_764_057_600.0
L = Limits(max_bytes=4096, late_limit_s=3600, skew_limit_s=60)
TOPIC = "citywatch/v1/gw/gw-1/telemetry"


def tele(ts: float, gw: str = "gw-1") -> bytes:
    return encode_telemetry(gw, "b1", 7, [Reading("wl-1", "depth", ts, 0.5, "m")])


def test_accepts_good_telemetry_as_rows() -> None:
    v = classify(TOPIC, tele(NOW - 10), NOW, L)
    assert isinstance(v, Accepted) and v.rows is not None
    assert v.rows.rows == [("wl-1", "depth", round((NOW - 10) * 1000), 0.5, 0)]


@pytest.mark.parametrize(
    ("ts", "ok"),
    [(NOW - 3600, True), (NOW - 3600.001, False), (NOW + 60, True), (NOW + 60.001, False), (5.0, False)],
)
def test_time_window_uses_now_parameter(ts: float, ok: bool) -> None:
    v = classify(TOPIC, tele(ts), NOW, L)
    assert isinstance(v, Accepted) is ok
    if not ok:
        assert isinstance(v, Rejected) and v.reason == "time_out_of_window"
        assert v.seq == ("b1", 7)  # still committed for the watermark


def test_gateway_mismatch_and_identity() -> None:
    v = classify(TOPIC, tele(NOW, gw="gw-2"), NOW, L)
    assert isinstance(v, Rejected) and v.reason == "gw_mismatch" and v.seq is None
    v = classify(TOPIC, tele(NOW), NOW, L, identity="gw-2")
    assert isinstance(v, Rejected) and v.reason == "identity_mismatch"
    assert isinstance(classify(TOPIC, tele(NOW), NOW, L, identity="gw-1"), Accepted)


def test_bad_topics() -> None:
    assert classify("citywatch/v1/gw/GW/telemetry", tele(NOW), NOW, L).reason == "bad_topic"  # type: ignore[union-attr]
    v = classify("citywatch/v1/gw/gw-1/cmd", b"{}", NOW, L)
    assert isinstance(v, Rejected) and v.reason == "unexpected_topic"


def test_events_and_status() -> None:
    ev = encode_events("gw-1", "b1", 3, [Event("wim-1", "vehicle", "9", NOW - 1, {"axles": 5})])
    v = classify("citywatch/v1/gw/gw-1/events", ev, NOW, L)
    assert isinstance(v, Accepted) and v.batch is not None and v.batch.events[0].id == "9"
    old = encode_events("gw-1", "b1", 4, [Event("wim-1", "vehicle", "9", NOW - 7200, {})])
    v = classify("citywatch/v1/gw/gw-1/events", old, NOW, L)
    assert isinstance(v, Rejected) and v.reason == "time_out_of_window" and v.seq == ("b1", 4)
    st = classify("citywatch/v1/gw/gw-1/status", encode_status(Status("offline", "b1")), NOW, L)
    assert isinstance(st, Accepted) and st.status is not None and st.status.state == "offline"


def test_rejection_keeps_seq_only_for_an_intact_envelope_of_this_gateway() -> None:
    bad_metric = orjson.dumps({"v": 1, "gw": "gw-1", "boot": "b1", "seq": 9, "e": [{"bn": "a/", "n": "x", "v": 1}]})
    v = classify(TOPIC, bad_metric, NOW, L)
    assert isinstance(v, Rejected) and v.reason == "unknown_metric" and v.seq == ("b1", 9)
    assert salvage_envelope(b"not json", "gw-1", 4096) is None
    assert salvage_envelope(orjson.dumps({"gw": "gw-2", "boot": "b", "seq": 1}), "gw-1", 4096) is None
    assert salvage_envelope(orjson.dumps({"gw": "gw-1", "boot": "b", "seq": True}), "gw-1", 4096) is None


def test_too_large_salvages_seq_from_the_head() -> None:
    big = encode_telemetry("gw-1", "b1", 11, [Reading(f"wl-{i}", "depth", NOW, 0.1, "m") for i in range(200)])
    assert len(big) > L.max_bytes
    v = classify(TOPIC, big, NOW, L)
    assert isinstance(v, Rejected) and v.reason == "too_large" and v.seq == ("b1", 11)
