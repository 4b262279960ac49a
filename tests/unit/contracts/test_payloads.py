from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import topics
from contracts.config import StrictModel, parse_config
from contracts.errors import ConfigError, ContractError, PayloadError
from contracts.ids import validate_id
from contracts.metrics import METRIC_UNITS
from contracts.payloads import (
    Command,
    decode_ack,
    decode_command,
    decode_events,
    decode_telemetry,
    encode_ack,
    encode_command,
    encode_events,
    encode_telemetry,
)
from contracts.reading import Event, Quality, Reading

ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
metrics = st.sampled_from(sorted(METRIC_UNITS))
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
times = st.integers(min_value=1_600_000_000_000, max_value=1_900_000_000_000).map(lambda ms: ms / 1000)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    m = draw(metrics)
    return Reading(draw(ids), m, draw(times), draw(finite), METRIC_UNITS[m], draw(st.sampled_from(list(Quality))))


@given(st.lists(readings(), max_size=60), st.integers(min_value=0, max_value=2**62))
def test_telemetry_round_trip_keeps_identity_and_values(rs: list[Reading], seq: int) -> None:
    batch = decode_telemetry(encode_telemetry("gw-1", "b00t", seq, rs))
    assert (batch.gw, batch.boot, batch.seq) == ("gw-1", "b00t", seq)
    assert batch.readings == rs


def test_senml_base_fields_carry_over() -> None:
    raw = (
        b'{"v":1,"gw":"gw-xihu-01","boot":"b7f3c2","seq":42,"e":['
        b'{"bn":"wl-0001/","bt":1764057600.0,"n":"depth","u":"m","v":0.12},'
        b'{"t":10,"n":"depth","u":"m","v":0.13},'
        b'{"bn":"mh-0007/","bt":1764057601.5,"n":"tilt","u":"deg","v":1.2,"q":0}]}'
    )
    b = decode_telemetry(raw)
    assert [(r.device, r.metric, r.ts, r.value) for r in b.readings] == [
        ("wl-0001", "depth", 1764057600.0, 0.12),
        ("wl-0001", "depth", 1764057610.0, 0.13),
        ("mh-0007", "tilt", 1764057601.5, 1.2),
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1]", "wrong_type"),
        (b'{"v":2,"gw":"g","boot":"b","seq":1,"e":[]}', "unsupported_version"),
        (b'{"v":1,"gw":"G/+","boot":"b","seq":1,"e":[]}', "bad_gateway_id"),
        (b'{"v":1,"gw":"g","boot":"b","seq":-1,"e":[]}', "bad_seq"),
        (b'{"v":1,"gw":"g","boot":"b","seq":true,"e":[]}', "bad_seq"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d/","bt":1,"n":"depth","u":"m","v":NaN}]}', "not_json"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d/","bt":1,"n":"depth","u":"m","v":1e999}]}', None),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d/","bt":1,"n":"bogus","u":"m","v":1}]}', "unknown_metric"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d/","bt":1,"n":"depth","u":"cm","v":1}]}', "unit_mismatch"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"n":"depth","u":"m","v":1}]}', "bad_device_id"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d\\u0000/","bt":1,"n":"depth","u":"m","v":1}]}', "nul_char"),
        (b'{"v":1,"gw":"g","boot":"b","seq":1,"e":[{"bn":"d/","bt":"1","n":"depth","u":"m","v":1}]}', "wrong_type"),
    ],
)
def test_bad_telemetry_has_a_reason(raw: bytes, reason: str | None) -> None:
    with pytest.raises(PayloadError) as info:
        decode_telemetry(raw)
    if reason:
        assert info.value.reason == reason
    else:
        assert info.value.reason in ("not_json", "not_finite")


def test_too_large_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadError, match="too_large"):
        decode_telemetry(b"x" * 100, max_bytes=10)


def test_events_round_trip_and_nul_in_body_refused() -> None:
    ev = Event("wim-0001", "vehicle", "18452", 1764057612.25, {"lane": 1, "axle_kg": [7100, 9800]})
    assert decode_events(encode_events("gw-b", "a1", 7, [ev])).events == [ev]
    bad = encode_events("gw-b", "a1", 7, [Event("wim-0001", "vehicle", "1", 1.0, {"x": "a\x00b"})])
    with pytest.raises(PayloadError, match="nul_char"):
        decode_events(bad)


def test_ack_and_command_round_trip() -> None:
    assert decode_ack(encode_ack({"b1": 5, "b2": 0})) == {"b1": 5, "b2": 0}
    cmd = Command("c-1", "dim", "lamp-0001", {"level_pct": 40})
    assert decode_command(encode_command(cmd)) == cmd


def test_topics_refuse_wildcards_and_parse_back() -> None:
    assert topics.telemetry("gw-1") == "citywatch/v1/gw/gw-1/telemetry"
    assert topics.parse_gw_topic("citywatch/v1/gw/gw-1/cmd/result") == ("gw-1", "cmd/result")
    assert topics.gw_filter("telemetry", "ingest") == "$share/ingest/citywatch/v1/gw/+/telemetry"
    for bad in ("gw/1", "gw+", "#", "", "Gw"):
        with pytest.raises(ContractError):
            topics.telemetry(bad)
    with pytest.raises(ContractError):
        topics.parse_gw_topic("citywatch/v1/gw/a+b/telemetry")
    assert validate_id("a" * 63) == "a" * 63
    with pytest.raises(ContractError):
        validate_id("a" * 64)


class _Inner(StrictModel):
    poll_interval_s: float


class _Cfg(StrictModel):
    devices: list[_Inner]


def test_config_error_names_file_key_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("devices:\n  - poll_interval_s: fast\n", _Cfg, "gw.yaml")
    assert "gw.yaml: devices[0].poll_interval_s" in str(info.value)
    assert "'fast'" in str(info.value)
    with pytest.raises(ConfigError, match="pol_interval_s"):
        parse_config("devices:\n  - pol_interval_s: 1\n", _Cfg, "gw.yaml")
    assert math.isclose(parse_config("devices: [{poll_interval_s: 2}]", _Cfg, "x").devices[0].poll_interval_s, 2)


def test_alarm_ack_and_open_cases_round_trip() -> None:
    from contracts.payloads import (
        AlarmAck,
        OpenCases,
        decode_alarm_ack,
        decode_open_cases,
        encode_alarm_ack,
        encode_open_cases,
    )

    ack = AlarmAck("a-1", "wl-0001", "duty1", 1764057600.0, "seen")
    assert decode_alarm_ack(encode_alarm_ack(ack)) == ack
    oc = OpenCases("wl-0001", {"road-water": "c-42"})
    assert decode_open_cases(encode_open_cases(oc)) == oc
    assert topics.alarm_ack("wl-0001") == "citywatch/v1/alarm-ack/wl-0001"
