"""Line-protocol encoding of the InfluxDB backend (no server needed)."""

from __future__ import annotations

import pytest

from cloud_ingest.errors import StoreError
from cloud_ingest.store.influx import escape_tag, field_value, line, parse_url, reading_line


def test_reading_line() -> None:
    assert reading_line("wl-1", "depth", 1764057600123, 0.5, 0) == (
        "readings,device=wl-1,metric=depth value=0.5,quality=0i 1764057600123"
    )
    # an integral value stays a float field, or InfluxDB would refuse a type change
    assert reading_line("wl-1", "depth", 1, 2, 3) == "readings,device=wl-1,metric=depth value=2.0,quality=3i 1"
    assert "value=1e-05" in reading_line("a", "b", 1, 1e-05, 0)


def test_escaping() -> None:
    assert escape_tag("a b,c=d\\e") == r"a\ b\,c\=d\\e"
    assert field_value('say "hi"\nnow') == r'"say \"hi\" now"'
    assert field_value(True) == "true" and field_value(3) == "3i" and field_value(1.5) == "1.5"
    with pytest.raises(ValueError):
        field_value(float("nan"))
    assert line("dead_letters", {"topic": "citywatch/v1/gw/x y/telemetry", "empty": ""}, {"raw": "YQ=="}, 1) == (
        r'dead_letters,topic=citywatch/v1/gw/x\ y/telemetry raw="YQ==" 1'
    )
    assert line("m,x", {"b": "2", "a": "1"}, {"f": 1.0}, 5) == r"m\,x,a=1,b=2 f=1.0 5"  # tags sorted


def test_parse_url() -> None:
    assert parse_url("influxdb://tok%2Fen@db.local:8087/city/watch") == (
        "http://db.local:8087",
        "tok/en",
        "city",
        "watch",
    )
    assert parse_url("influxdbs://t@h/o/b")[0] == "https://h:8086"
    for bad in ("influxdb://h:8086/o/b", "influxdb://t@h:8086/o", "http://t@h/o/b"):
        with pytest.raises(StoreError):
            parse_url(bad)
