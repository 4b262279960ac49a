"""Technician tools: ``citywatch plan``, ``probe``, ``scan`` and ``profile check|new``.

Imported only when one of them is chosen; keeps to pydantic/pyserial (no FastAPI, psycopg).
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
    parser.add_argument("--profile", metavar="NAME|FILE",
                        help="library profile name or a site profile file; omit for a raw read")
    parser.add_argument("--dump", metavar="SPANS",
                        help="raw registers with every plausible decoding, e.g. holding:0-99,input:0-49")
    parser.add_argument("--save", metavar="FILE", help="with --dump: also write the registers as JSON "
                        "(for `citywatch profile new --from-dump`)")
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
        if args.dump:
            return await _dump(bus, args)
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
                shown = repr(d.text) if d.text is not None else f"{_fmt_value(d.value)}{unit}"
                line = f"  {name:<18} @{f.address:<5} {f.dtype.value:<4} raw {_fmt_words(d.words):<10} = {shown}"
                if d.quality:
                    line += f"  [{d.quality.name}]"
                if f.metric:
                    line += f"  -> {f.metric}"
                print(line)
                if f.dtype.width == 2 and f.bit is None:
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


async def _dump(bus: Bus, args: argparse.Namespace) -> int:
    """Read the requested spans (a refused read is bisected to find what is mapped) and print every decoding."""
    import json

    from gateway.errors import ConfigFault, GatewayError
    from gateway.technician import Span, chunks, decodings, parse_spans

    try:
        spans = parse_spans(args.dump)
    except ValueError as exc:
        print(f"citywatch probe: --dump {exc}", file=sys.stderr)
        return 2
    dump: dict[str, dict[int, int]] = {}
    failures = 0

    async def read(span: Span) -> None:
        nonlocal failures
        try:
            words = await bus.read(args.unit, span.kind, span.start, span.count)
        except ConfigFault as exc:
            if span.count > 1:  # exception 02 for a long read: find the mapped part
                half = span.count // 2
                await read(Span(span.table, span.start, half))
                await read(Span(span.table, span.start + half, span.count - half))
            elif getattr(exc, "code", None) not in (2,):
                print(f"  {span.table} {span.start}: {type(exc).__name__}: {exc}")
            return
        except GatewayError as exc:
            failures += 1
            print(f"  {span.table} {span.start}..{span.start + span.count - 1}: {type(exc).__name__}: {exc}")
            return
        dump.setdefault(span.table, {}).update(zip(range(span.start, span.start + span.count), words, strict=True))

    for span in spans:
        for c in chunks(span):
            await read(c)
    for table, regs in dump.items():
        print(f"\n{table} ({len(regs)} readable)")
        if TABLE_BITS.get(table):
            print("  set: " + (", ".join(str(a) for a, v in sorted(regs.items()) if v) or "none"))
            continue
        for a in sorted(regs):
            if regs[a] or regs.get(a + 1):
                print("  " + decodings(regs, a))
        zeros = sum(1 for v in regs.values() if not v)
        if zeros:
            print(f"  ({zeros} register(s) read 0000, not shown)")
    args.dumped = json.dumps({t: {str(a): v for a, v in sorted(r.items())} for t, r in dump.items()}, indent=1)
    return 1 if failures else 0


TABLE_BITS = {"coil": True, "discrete_input": True}


def cmd_probe(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    args.dumped = None
    rc = asyncio.run(_probe(args))
    if args.save and args.dumped is not None:
        Path(args.save).write_text(args.dumped, encoding="utf-8")
        print(f"\nsaved the registers to {args.save}")
    return rc


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


# ------------------------------------------------------------------ profile check / new


def args_profile(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate a profile and print its planned reads and bus time")
    check.add_argument("file", metavar="FILE", help="profile file (or a library profile name)")
    check.add_argument("--baud", type=int, default=9600, help="RS-485 line speed for the bus time (default 9600)")
    check.add_argument("--parity", choices=["N", "E", "O"], default="E")
    check.add_argument("--turnaround-ms", type=float, default=5.0, help="slave reply latency (default 5 ms)")
    check.add_argument("--tcp", action="store_true", help="bus time on Modbus TCP instead of RS-485")
    new = sub.add_parser("new", help="write a draft profile from a saved dump (citywatch probe --dump ... --save)")
    new.add_argument("--from-dump", required=True, metavar="DUMP", help="JSON written by probe --save")
    new.add_argument("--name", required=True, help="profile name (lower case, digits, _)")
    new.add_argument("--kind", default="generic", choices=["water_gauge", "manhole", "lamp", "wim", "generic"])
    new.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the draft (YAML)")


def cmd_profile(args: argparse.Namespace) -> int:
    from contracts.config import validate_config
    from contracts.errors import ConfigError
    from gateway import profiles
    from gateway.config import BusConfig
    from gateway.errors import ProfileError
    from gateway.technician import plan_report

    if args.action == "check":
        try:
            profile = profiles.get(args.file)
        except (ConfigError, ProfileError) as exc:
            print(f"citywatch profile check: {exc}", file=sys.stderr)
            return 1
        data: dict[str, object] = {"id": "check", "turnaround_ms": args.turnaround_ms}
        if args.tcp:
            data.update(type="tcp", host="127.0.0.1")
        else:
            data.update(type="rtu", serial="/dev/null", baud=args.baud, parity=args.parity)
        print(plan_report(profile, validate_config(data, BusConfig, "command line")), end="")
        print("ok")
        return 0
    return _profile_new(args)


def _profile_new(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import yaml

    from contracts.errors import ConfigError
    from gateway.profile_schema import parse_profile
    from gateway.technician import draft_profile

    try:
        raw = json.loads(Path(args.from_dump).read_text(encoding="utf-8"))
        dump = {table: {int(a): int(v) for a, v in regs.items()} for table, regs in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        print(f"citywatch profile new: cannot read dump {args.from_dump}: {exc}", file=sys.stderr)
        return 1
    try:
        text = yaml.safe_dump(draft_profile(dump, args.name, args.kind), sort_keys=False, allow_unicode=True)
        parse_profile(text, args.output)  # the draft must load as written
    except (ConfigError, KeyError) as exc:
        print(f"citywatch profile new: {exc}", file=sys.stderr)
        return 1
    header = ("# Draft profile from a register dump: every non-zero register became an internal field.\n"
              "# Rename fields, set scale/unit/metric, delete what you do not need, then run\n"
              f"# `citywatch profile check {args.output}`.\n")
    Path(args.output).write_text(header + text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0
