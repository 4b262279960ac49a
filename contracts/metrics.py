"""The metric catalogue: every metric name a device may report, with its SenML unit.

Ingest refuses metrics or units not listed here (they go to dead letters), so profiles
and the cloud share one table. Units follow RFC 8428/8798 (``m``, ``V``, ``A``, ``W``,
``%``, ``deg``...); ``""`` is a dimensionless value or a flag.
"""

from __future__ import annotations

from types import MappingProxyType

METRIC_UNITS = MappingProxyType(
    {
        # water gauge
        "depth": "m",
        "distance": "m",
        "install_height": "m",
        "battery": "V",
        "status": "",
        # manhole cover
        "tilt": "deg",
        "tilt_x": "deg",
        "tilt_y": "deg",
        "background_tilt": "deg",
        "cover_open": "",
        "water_under": "",
        # street lamp
        "voltage": "V",
        "current": "A",
        "power": "W",
        "power_factor": "/",
        "energy": "kWh",
        "run_hours": "h",
        "dim_level": "%",
        "relay": "",
        # WIM scale
        "record_count": "",
    }
)


def unit_of(metric: str) -> str | None:
    return METRIC_UNITS.get(metric)
