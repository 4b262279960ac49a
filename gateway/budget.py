"""Bus-time budget: how much of each bus the configured polling uses, before deployment.

Why: an RS-485 line at 9600 baud carries about 870 characters a second; forty devices
polled every second do not fit, and no peer tool says so until data goes missing. This
module computes, from baud rate, parity and the planned frames, the time each poll takes
and the share of the bus the configured intervals (normal and storm) use.

Model (Modbus over serial line V1.02, §2.5.1.1): a character is start + 8 data + parity
(if any) + stop bits; frames are separated by ≥ 3.5 character times, fixed at 1.75 ms above
19200 baud (t1.5 = 0.75 ms). One transaction = request frame + max(t3.5, slave turnaround)
+ response frame + max(t3.5, configured inter-frame gap). TCP buses count the turnaround
and gap only (wire time is negligible at LAN speed). Pure functions throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway import profiles
from gateway.config import BusConfig, DeviceConfig, FieldConfig
from gateway.plan import Block, plan_profile

RTU_REQUEST_BYTES = 8  # unit, fc, start(2), count(2), crc(2)
TCP_MBAP_BYTES = 7
FIXED_T15_S = 750e-6
FIXED_T35_S = 1750e-6
TCP_LINK_BPS = 10_000_000  # conservative LAN


@dataclass(frozen=True, slots=True)
class SerialTiming:
    char_s: float
    t15_s: float
    t35_s: float


def char_time_s(baud: int, parity: str = "E", stopbits: int = 1, databits: int = 8) -> float:
    """Seconds per character on the wire (11 bits for 8E1 and 8N2)."""
    if baud <= 0:
        raise ValueError("baud must be positive")
    bits = 1 + databits + (0 if parity == "N" else 1) + stopbits
    return bits / baud


def serial_timing(baud: int, parity: str = "E", stopbits: int = 1) -> SerialTiming:
    ct = char_time_s(baud, parity, stopbits)
    if baud > 19200:
        return SerialTiming(ct, FIXED_T15_S, FIXED_T35_S)
    return SerialTiming(ct, 1.5 * ct, 3.5 * ct)


def _data_bytes(block: Block) -> int:
    return math.ceil(block.count / 8) if block.kind.is_bit else 2 * block.count


def request_bytes(block: Block, transport: str) -> int:
    """Bytes of the read request for ``block`` (RTU: with unit id and CRC; TCP: with MBAP)."""
    pdu = 5  # fc + start + count
    return pdu + 3 if transport == "rtu" else pdu + TCP_MBAP_BYTES


def response_bytes(block: Block, transport: str) -> int:
    pdu = 2 + _data_bytes(block)  # fc + byte count + data
    return pdu + 3 if transport == "rtu" else pdu + TCP_MBAP_BYTES


def transaction_s(block: Block, bus: BusConfig) -> float:
    """Bus time one read of ``block`` occupies, silence included."""
    req, resp = request_bytes(block, bus.type), response_bytes(block, bus.type)
    turnaround = bus.turnaround_ms / 1000.0
    gap = bus.inter_frame_gap_ms / 1000.0
    if bus.type == "tcp":
        return (req + resp) * 8 / TCP_LINK_BPS + turnaround + gap
    t = serial_timing(bus.baud, bus.parity, bus.stopbits)
    return req * t.char_s + max(t.t35_s, turnaround) + resp * t.char_s + max(t.t35_s, gap)


def device_blocks(device: DeviceConfig) -> tuple[Block, ...]:
    return plan_profile(profiles.get(device.profile), device.max_block_registers, device.max_gap_registers)


@dataclass(frozen=True, slots=True)
class DeviceBudget:
    device: str
    profile: str  # library name or profile file
    transactions: int  # per poll
    poll_s: float  # bus time per poll
    interval_s: float
    storm_interval_s: float
    utilisation: float
    storm_utilisation: float
    dead_poll_s: float  # bus time per poll while the device does not answer (timeouts x tries)


@dataclass(frozen=True, slots=True)
class BusBudget:
    bus: str
    endpoint: str
    timing: SerialTiming | None
    devices: tuple[DeviceBudget, ...]
    utilisation: float
    storm_utilisation: float
    dead_utilisation: float  # storm utilisation with the costliest device dead (before quarantine)
    shortest_interval_s: float  # shortest common poll interval for all devices at max_utilisation
    max_utilisation: float

    @property
    def overbooked(self) -> bool:
        return max(self.utilisation, self.storm_utilisation) > self.max_utilisation


def plan_bus(bus: BusConfig, devices: Sequence[DeviceConfig], max_utilisation: float = 0.8) -> BusBudget:
    """Budget of one bus; ``max_utilisation`` leaves headroom for retries and writes."""
    if not 0 < max_utilisation <= 1:
        raise ValueError("max_utilisation must be in (0, 1]")
    out: list[DeviceBudget] = []
    for d in devices:
        blocks = device_blocks(d)
        poll = sum(transaction_s(b, bus) for b in blocks)
        storm = d.storm_poll_interval_s or d.poll_interval_s
        timeout_s = (d.timeout_ms or bus.timeout_ms) / 1000.0
        tries = 1 + (bus.retries if d.retries is None else d.retries)
        # a dead slave costs the first block's timeouts: the poller stops at the first failure
        dead = tries * (timeout_s + (transaction_s(blocks[0], bus) if blocks else 0.0))
        out.append(DeviceBudget(d.id, d.profile, len(blocks), poll, d.poll_interval_s, storm,
                                poll / d.poll_interval_s, poll / storm, dead))
    util = sum(x.utilisation for x in out)
    storm_util = sum(x.storm_utilisation for x in out)
    dead_extra = max(((x.dead_poll_s - x.poll_s) / x.storm_interval_s for x in out), default=0.0)
    total_poll = sum(x.poll_s for x in out)
    return BusBudget(
        bus=bus.id,
        endpoint=bus.endpoint,
        timing=serial_timing(bus.baud, bus.parity, bus.stopbits) if bus.type == "rtu" else None,
        devices=tuple(out),
        utilisation=util,
        storm_utilisation=storm_util,
        dead_utilisation=storm_util + dead_extra,
        shortest_interval_s=total_poll / max_utilisation,
        max_utilisation=max_utilisation,
    )


def plan_config(cfg: FieldConfig, max_utilisation: float = 0.8) -> tuple[BusBudget, ...]:
    return tuple(plan_bus(b, cfg.devices_on(b.id), max_utilisation) for b in cfg.buses)


def render(budgets: Sequence[BusBudget]) -> str:
    """Human report for ``citywatch plan``."""
    lines: list[str] = []
    for b in budgets:
        head = f"bus {b.bus} ({b.endpoint})"
        if b.timing is not None:
            head += (f": char {b.timing.char_s * 1e3:.3f} ms, t1.5 {b.timing.t15_s * 1e3:.3f} ms, "
                     f"t3.5 {b.timing.t35_s * 1e3:.3f} ms")
        lines.append(head)
        lines.append(f"  {'device':<20} {'profile':<16} {'reads':>5} {'poll ms':>9} {'every s':>8} "
                     f"{'storm s':>8} {'use %':>7} {'storm %':>8}")
        for d in b.devices:
            name = profiles.get(d.profile).name
            lines.append(f"  {d.device:<20} {name:<16} {d.transactions:>5} {d.poll_s * 1e3:>9.2f} "
                         f"{d.interval_s:>8g} {d.storm_interval_s:>8g} {d.utilisation * 100:>7.1f} "
                         f"{d.storm_utilisation * 100:>8.1f}")
        state = "OVERBOOKED" if b.overbooked else "ok"
        lines.append(f"  utilisation {b.utilisation * 100:.1f} % normal, {b.storm_utilisation * 100:.1f} % storm "
                     f"(limit {b.max_utilisation * 100:.0f} %): {state}")
        lines.append(f"  with the costliest slave dead, until it is quarantined: {b.dead_utilisation * 100:.1f} % "
                     f"(its timeouts x tries every interval)")
        for d in b.devices:
            layout = profiles.get(d.profile).records
            if layout is not None and layout.style == "ring":
                per_read = (profiles.get(d.profile).max_block_registers - layout.record_words) // layout.stride + 1
                lines.append(f"  not counted: {d.device} record reads (one read per up to {per_read} new records)")
        lines.append(f"  shortest common poll interval for these {len(b.devices)} devices: "
                     f"{b.shortest_interval_s:.3f} s")
        if b.overbooked:
            lines.append(f"  bus {b.bus} is overbooked: lengthen poll intervals to at least "
                         f"{b.shortest_interval_s:.3f} s, raise the baud rate, or split the devices over more buses")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
