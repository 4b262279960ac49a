"""Technician tools: ``citywatch plan``, ``citywatch probe``, ``citywatch scan``.

Imported only when one of them is chosen; keeps to pydantic/pymodbus (no FastAPI, psycopg).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.bus import Bus
    from gateway.config import BusConfig
    from gateway.registers import Profile, WordOrder


def args_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="gateway config (YAML)")
    parser.add_argument("--max-utilisation", type=float, default=0.8, metavar="FRACTION",
                        help="largest share of bus time polling may use, normal and storm (default 0.8)")


def cmd_plan(args: argparse.Namespace) -> int:
    from gateway.budget import plan_config, render
    from gateway.config import load_field_config

    cfg = load_field_config(args.config)
    if not 0 < args.max_utilisation <= 1:
        print("citywatch plan: --max-utilisation must be in (0, 1]", file=sys.stderr)
        return 2
    budgets = plan_config(cfg, args.max_utilisation)
    print(render(budgets), end="")
    bad = [b for b in budgets if b.overbooked]
    if bad:
        for b in bad:
            print(f"citywatch plan: bus {b.bus} is overbooked: {b.utilisation * 100:.0f} % normal, "
                  f"{b.storm_utilisation * 100:.0f} % storm > {b.max_utilisation * 100:.0f} %; "
                  f"shortest common interval {b.shortest_interval_s:.3f} s", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ probe / scan


def _bus_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the device is (TCP or serial)")
    where.add_argument("--host", help="Modbus TCP host")
    where.add_argument("--port", type=int, default=502, help="Modbus TCP port (default 502)")
    where.add_argument("--serial", metavar="PATH", help="serial port for Modbus RTU, e.g. /dev/ttyUSB0")
    where.add_argument("--baud", type=int, default=9600)
    where.add_argument("--parity", choices=["N", "E", "O"], default="E")
    where.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    where.add_argument("--timeout-ms", type=int, default=500)
    where.add_argument("--retries", type=int, default=0)


def _bus_config(args: argparse.Namespace) -> BusConfig:
    from contracts.config import validate_config
    from gateway.config import BusConfig

    if bool(args.host) == bool(args.serial):
        raise SystemExit("give either --host (Modbus TCP) or --serial PATH (Modbus RTU)")
    data: dict[str, object] = {"id": "probe", "timeout_ms": args.timeout_ms, "retries": args.retries}
    if args.host:
        data.update(type="tcp", host=args.host, port=args.port)
    else:
        data.update(type="rtu", serial=args.serial, baud=args.baud, parity=args.parity, stopbits=args.stopbits)
    return validate_config(data, BusConfig, "command line")


def args_probe(parser: argparse.ArgumentParser) -> None:
    _bus_args(parser)
    conf = parser.add_argument_group("or a device of a gateway config (bus, unit, profile and word order from it)")
    conf.add_argument("-c", "--config", metavar="FILE", help="gateway config (YAML)")
    conf.add_argument("--device", metavar="ID", help="device id in the config")
    parser.add_argument("--unit", type=int, default=1, help="unit id (slave address), default 1")
    parser.add_argument("--profile", help="device profile (see docs/devices.md); omit for a raw read")
    parser.add_argument("--word-order", choices=["ABCD", "CDAB", "BADC", "DCBA"], help="override for decoding")
    raw = parser.add_argument_group("raw read (without --profile)")
    raw.add_argument("--kind", choices=["coil", "discrete_input", "input_register", "holding_register"],
                     default="holding_register")
    raw.add_argument("--address", type=int, default=0, help="0-based PDU address")
    raw.add_argument("--count", type=int, default=10)


def _fmt_words(words: list[int] | tuple[int, ...]) -> str:
    return " ".join(f"{w:04X}" for w in words)


def _fmt_value(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.7g}"


async def _probe(args: argparse.Namespace) -> int:
    from gateway import profiles
    from gateway.bus import Bus
    from gateway.errors import DeviceError, GatewayError
    from gateway.plan import plan_reads
    from gateway.registers import DataType, RegisterKind, WordOrder, decode_block, decode_value, quality_of

    if args.config or args.device:
        if not (args.config and args.device):
            raise SystemExit("give both -c FILE and --device ID")
        from gateway.config import load_field_config

        field_cfg = load_field_config(args.config)
        dev = next((d for d in field_cfg.devices if d.id == args.device), None)
        if dev is None:
            raise SystemExit(f"no device {args.device!r} in {args.config}")
        cfg = field_cfg.bus(dev.bus)
        args.unit, args.profile = dev.unit_id, dev.profile
        if args.word_order is None and dev.word_order is not None:
            args.word_order = dev.word_order.value
    else:
        cfg = _bus_config(args)
    failures = 0
    async with Bus(cfg) as bus:
        print(f"probe {cfg.endpoint} unit {args.unit}")
        if not bus.is_up:
            print(f"citywatch probe: bus not usable: {bus.down_reason}", file=sys.stderr)
            return 1
        if not args.profile:
            kind = RegisterKind(args.kind)
            try:
                words = await bus.read(args.unit, kind, args.address, args.count)
            except DeviceError as exc:
                print(f"  {kind.value} {args.address}+{args.count}: {type(exc).__name__}: {exc}")
                return 1
            for i, w in enumerate(words):
                extra = "" if kind.is_bit else f"  {w:5d}  {w - 0x10000 if w & 0x8000 else w:6d}"
                print(f"  {kind.value} {args.address + i:5d}: {w:04X}{extra}")
            return 0
        profile = profiles.get(args.profile)
        override = WordOrder(args.word_order) if args.word_order else None
        # read every field, configuration registers included, one block per mapped area
        blocks = plan_reads(profile.fields, profile.max_block_registers, profile.max_gap_registers)
        for block in blocks:
            print(f"\n{block.kind.value} {block.start}..{block.end - 1} (FC{block.function_code})")
            try:
                words = await bus.read(args.unit, block.kind, block.start, block.count)
            except GatewayError as exc:
                failures += 1
                print(f"  read failed: {type(exc).__name__}: {exc}")
                continue
            if not block.kind.is_bit:
                for i in range(0, len(words), 8):
                    print(f"  {block.start + i:5d}: {_fmt_words(words[i : i + 8])}")
            decoded = decode_block(profile, block.kind, block.start, words, override)
            for name in block.fields:
                f = profile.field(name)
                d = decoded[name]
                unit = f" {f.unit}" if f.unit else ""
                line = (f"  {name:<18} @{f.address:<5} {f.dtype.value:<4} raw {_fmt_words(d.words):<10} = "
                        f"{_fmt_value(d.value)}{unit}")
                if d.quality:
                    line += f"  [{d.quality.name}]"
                if f.metric:
                    line += f"  -> {f.metric}"
                print(line)
                if f.dtype.width == 2:
                    alts = []
                    for order in WordOrder:
                        v = decode_value(f, d.words, order)
                        bad = "" if quality_of(f, d.words, v, order) == 0 else "?"
                        mark = "*" if order == profile.word_order_of(f, override) else " "
                        alts.append(f"{mark}{order.value} {_fmt_value(v)}{bad}")
                    print("      word orders: " + "  ".join(alts))
                if f.dtype is DataType.U16 and profile.status_field == name and profile.status_bits:
                    raw = int(d.words[0])
                    set_bits = [m for bit, m in profile.status_bits if raw >> bit & 1]
                    print("      status bits: " + (", ".join(set_bits) if set_bits else "none set"))
        if profile.records is not None:
            failures += await _probe_last_record(bus, args.unit, profile, override)
    return 1 if failures else 0


async def _probe_last_record(bus: Bus, unit: int, profile: Profile, override: WordOrder | None) -> int:
    from gateway.errors import GatewayError
    from gateway.events import body_of, record_time, record_values
    from gateway.registers import decode_value

    layout = profile.records
    assert layout is not None
    counter = profile.field(layout.counter_field)
    try:
        words = await bus.read(unit, counter.kind, counter.address, counter.width)
        count = int(decode_value(counter, words, profile.word_order_of(counter, override)))
        if count < layout.start_at:
            print("\nno records since boot")
            return 0
        rec_words = await bus.read(unit, layout.kind, layout.address_of(count), layout.record_words)
    except GatewayError as exc:
        print(f"\nlast record: read failed: {type(exc).__name__}: {exc}")
        return 1
    values = record_values(layout, rec_words, lambda f: profile.word_order_of(f, override))
    print(f"\nlast record (#{count}, slot {layout.slot_of(count)}, t {record_time(layout, values)}): "
          f"{layout.event_kind} {body_of(layout, values)}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_probe(args))


def args_scan(parser: argparse.ArgumentParser) -> None:
    _bus_args(parser)
    parser.set_defaults(timeout_ms=200)
    parser.add_argument("--from", dest="first", type=int, default=1, help="first unit id (default 1)")
    parser.add_argument("--to", dest="last", type=int, default=247, help="last unit id (default 247)")
    parser.add_argument("--function", type=int, choices=[1, 2, 3, 4], default=3,
                        help="read used to ask (default 3, holding registers)")
    parser.add_argument("--address", type=int, default=0, help="register asked for (default 0)")


async def _scan(args: argparse.Namespace) -> int:
    from gateway.bus import Bus
    from gateway.errors import BadFrame, BusError, ModbusException, NoResponse
    from gateway.modbus_io import Request

    if not 0 <= args.first <= args.last <= 255 or args.last - args.first > 255:
        print("citywatch scan: unit range must lie within 0..255", file=sys.stderr)
        return 2
    cfg = _bus_config(args)
    found: list[str] = []
    total = args.last - args.first + 1
    async with Bus(cfg) as bus:
        if not bus.is_up:
            print(f"citywatch scan: bus not usable: {bus.down_reason}", file=sys.stderr)
            return 1
        for i, unit in enumerate(range(args.first, args.last + 1), 1):
            print(f"\rscanning {cfg.endpoint}: unit {unit} ({i}/{total}), {len(found)} found", end="",
                  file=sys.stderr, flush=True)
            try:
                words = await bus.transact(Request(unit, args.function, args.address, 1))
                found.append(f"unit {unit}: answers (register {args.address} = {words[0]:#06x})")
            except ModbusException as exc:
                found.append(f"unit {unit}: answers with exception {exc.code:#04x} (a slave is there)")
            except BadFrame as exc:
                found.append(f"unit {unit}: mangled reply ({exc}) - wrong baud/parity or a collision?")
            except NoResponse:
                pass
            except BusError as exc:
                print(f"\ncitywatch scan: bus failed: {exc}", file=sys.stderr)
                return 1
    print(file=sys.stderr)
    for line in found:
        print(line)
    print(f"{len(found)} responding unit(s) in {args.first}..{args.last}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_scan(args))
