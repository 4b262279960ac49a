"""firmware_sim: simulated field devices built from the gateway profiles.

Public API (see the modules for details)::

    from firmware_sim import SimServer, Scenario, load_sim_config

    cfg = load_sim_config("configs/sim/demo.yaml")
    Scenario(cfg).metrics("wl-0003", t=900.0)          # pure: what the gateway would publish
    async with SimServer(cfg, speed=0) as sim:         # Modbus TCP + RTU over pty pairs
        host, port, unit = sim.tcp_endpoints["lamp-0001"]
        path, unit = sim.pty_paths["wl-0001"]
        sim.clock.advance(600)
        sim.device("wl-0003").faults.set(no_answer=True)
"""

from __future__ import annotations

from firmware_sim.clock import SimClock
from firmware_sim.config import SimConfig, load_sim_config, parse_sim_config
from firmware_sim.device import SimDevice
from firmware_sim.gwconfig import field_config, gateway_document, write_gateway_configs
from firmware_sim.physics import GROSS_LIMIT_KG, Vehicle
from firmware_sim.scenarios import History, Scenario, expected_metrics, scenario_values
from firmware_sim.server import SimServer

__all__ = [
    "GROSS_LIMIT_KG",
    "History",
    "Scenario",
    "SimClock",
    "SimConfig",
    "SimDevice",
    "SimServer",
    "Vehicle",
    "expected_metrics",
    "field_config",
    "gateway_document",
    "load_sim_config",
    "parse_sim_config",
    "scenario_values",
    "write_gateway_configs",
]
