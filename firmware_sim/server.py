"""Serve simulated slaves: Modbus TCP (one port per bus, unit ids behind it) and Modbus RTU over
pty pairs (one pty per RS-485 bus, several unit ids on it).

Thin asyncio shells around :mod:`firmware_sim.frames` (bytes) and :class:`SimDevice` (what
to answer): the shells only read, frame, wait and write, which is what makes byte-level
fault injection (split frames with long gaps, bad CRC, stray bytes) easy to get exactly right.

Everything runs in the caller's event loop. The server owns plain tasks (cancelled and
awaited by :meth:`SimServer.stop`) rather than one ``TaskGroup``, because tests start it in a
fixture and stop it in the fixture's teardown, which may run in another task; a crashed bus
worker is logged and counted in :attr:`SimServer.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import time
import tty
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from firmware_sim.clock import SimClock
from firmware_sim.config import BusSpec, SimConfig, load_sim_config
from firmware_sim.device import Reply, SimDevice
from firmware_sim.errors import SimTransportError, UnknownDevice
from firmware_sim.frames import (
    FrameError,
    exception_response,
    mbap_adu,
    parse_request_pdu,
    rtu_adu,
    split_mbap,
    split_rtu_request,
    t35_s,
)
from firmware_sim.gwconfig import field_config, write_gateway_configs
from firmware_sim.scenarios import Scenario
from gateway.config import FieldConfig

log = logging.getLogger(__name__)

GARBAGE = b"\x00\xff\x13"


def mangle_rtu(adu: bytes, reply: Reply) -> list[bytes]:
    """The byte pieces to write for one RTU reply (pure): CRC flip, stray prefix, split."""
    data = adu
    if reply.crc_corrupt:
        data = data[:-2] + bytes((data[-2] ^ 0x5A, data[-1]))
    if reply.garbage_prefix:
        data = GARBAGE + data
    return split_bytes(data, reply.split_pieces) if reply.split_gap_s is not None else [data]


def mangle_tcp(adu: bytes, reply: Reply) -> list[bytes]:
    """TCP has no CRC: "corrupt" means an MBAP length that does not match the frame."""
    data = adu
    if reply.crc_corrupt:
        data = data[:4] + (int.from_bytes(data[4:6], "big") + 3).to_bytes(2, "big") + data[6:]
    if reply.garbage_prefix:
        data = GARBAGE + data
    return split_bytes(data, reply.split_pieces) if reply.split_gap_s is not None else [data]


def wire_time_s(chars: int, baudrate: int, parity: str = "N", stopbits: int = 1) -> float:
    """Time ``chars`` characters plus one t3.5 take on a serial line (1 start + 8 data + parity + stop bits)."""
    bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
    return chars * bits / baudrate + t35_s(baudrate)


def split_bytes(data: bytes, pieces: int) -> list[bytes]:
    pieces = max(1, min(pieces, len(data)))
    size, extra = divmod(len(data), pieces)
    out = []
    pos = 0
    for i in range(pieces):
        n = size + (1 if i < extra else 0)
        out.append(data[pos : pos + n])
        pos += n
    return out


@dataclass
class BusStats:
    frames_in: int = 0
    replies: int = 0
    silent: int = 0
    garbage_bytes: int = 0
    unknown_unit: int = 0


class _Bus:
    def __init__(self, spec: BusSpec, devices: dict[int, SimDevice], server: SimServer) -> None:
        self.spec = spec
        self.id = spec.id
        self.devices = devices
        self.server = server
        self.stats = BusStats()

    def answer(self, unit: int, pdu: bytes) -> Reply:
        """Decode a request PDU for ``unit`` and let the device decide the reply (pure apart from the clock)."""
        self.stats.frames_in += 1
        if unit == 0:  # broadcast: writes go to everyone, nobody answers
            for dev in self.devices.values():
                with contextlib.suppress(FrameError):
                    req = parse_request_pdu(dev.unit, pdu)
                    if req.is_write:
                        dev.handle(req)
            return Reply(None)
        found = self.devices.get(unit)
        if found is None:
            self.stats.unknown_unit += 1
            return Reply(None)
        try:
            req = parse_request_pdu(unit, pdu)
        except FrameError as exc:
            faults = found.faults.active(found.now())
            if faults.absent or faults.no_answer:
                return Reply(None)
            return Reply(exception_response(pdu[0] if pdu else 0, exc.code))
        return found.handle(req)


class TcpBus(_Bus):
    """Modbus TCP: one listening port; the MBAP unit id selects the device."""

    def __init__(self, spec: BusSpec, devices: dict[int, SimDevice], server: SimServer) -> None:
        super().__init__(spec, devices, server)
        self._server: asyncio.Server | None = None
        self.host = spec.host
        self.port = spec.port
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.spec.host, self.spec.port)
        except OSError as exc:
            where = f"{self.spec.host}:{self.spec.port}"
            raise SimTransportError(f"bus {self.id}: cannot listen on {where}: {exc}") from exc
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        buf = b""
        try:
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                buf += chunk
                while True:
                    part = split_mbap(buf)
                    if part.error:
                        log.info("bus %s: closing a connection: bad MBAP header (%s)", self.id, part.error)
                        return
                    if part.frame is None:
                        break
                    buf = buf[part.consumed :]
                    tid, unit, pdu = part.frame
                    reply = self.answer(unit, pdu)
                    if reply.pdu is None:
                        self.stats.silent += 1
                        continue
                    await self._send(writer, mangle_tcp(mbap_adu(tid, unit, reply.pdu), reply), reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:
            self.server.errors += 1
            log.exception("bus %s: connection handler failed; closing the connection", self.id)
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, pieces: list[bytes], reply: Reply) -> None:
        wait = reply.delay_s + self.spec.turnaround_ms / 1000.0
        if wait > 0:
            await asyncio.sleep(wait)
        for i, piece in enumerate(pieces):
            if i and reply.split_gap_s:
                await asyncio.sleep(reply.split_gap_s)
            writer.write(piece)
            await writer.drain()
        self.stats.replies += 1

    async def close_connections(self) -> None:
        """Drop every client connection (a TCP concentrator rebooting); the port keeps listening."""
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.close_connections()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def go_down(self) -> None:
        """The concentrator loses power: connections drop and connecting is refused until :meth:`come_up`."""
        await self.stop()
        log.info("bus %s: down", self.id)

    async def come_up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
            log.info("bus %s: up on %s:%d", self.id, self.host, self.port)

    @property
    def is_up(self) -> bool:
        return self._server is not None


class RtuBus(_Bus):
    """Modbus RTU on one pty pair: the gateway opens :attr:`path` (the slave side) with pyserial.

    Requests are framed by length and CRC (see :func:`split_rtu_request`); a partial frame
    that then stays silent longer than ``idle_reset_s`` is discarded, as a slave discards a
    frame interrupted by a gap. Replies go out one at a time (it is one wire).
    """

    def __init__(self, spec: BusSpec, devices: dict[int, SimDevice], server: SimServer) -> None:
        super().__init__(spec, devices, server)
        self.master_fd: int | None = None
        self.slave_fd: int | None = None
        self.pty_path: str | None = None
        self.idle_reset_s = max(0.02, t35_s(spec.baudrate))
        self._buf = b""
        self._last_rx = 0.0
        self._queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.plugged = False

    @property
    def path(self) -> str:
        """The path a gateway should open: the stable symlink if configured, else the pty."""
        if self.spec.link is not None:
            return self.spec.link
        if self.pty_path is None:
            raise SimTransportError(f"bus {self.id} is not started")
        return self.pty_path

    async def start(self) -> None:
        self._open_pty()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"sim-rtu-{self.id}")
        self.server.track(self._worker)

    def _open_pty(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise SimTransportError(f"bus {self.id}: cannot open a pty pair: {exc}") from exc
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self.master_fd, self.slave_fd = master, slave
        self.pty_path = os.ttyname(slave)
        if self.spec.link is not None:
            link = Path(self.spec.link)
            if link.is_symlink() or link.exists():
                if not link.is_symlink():
                    raise SimTransportError(f"bus {self.id}: {link} exists and is not a symlink")
                link.unlink()
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.pty_path)
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self._buf = b""
        self.plugged = True

    def _close_pty(self) -> None:
        if self.master_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master_fd)
            for fd in (self.master_fd, self.slave_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        self.master_fd = self.slave_fd = None
        if self.spec.link is not None:
            link = Path(self.spec.link)
            if link.is_symlink():
                link.unlink()
        self.plugged = False

    def unplug(self) -> None:
        """The USB-serial adapter vanishes: the pty is closed (the gateway's reads fail) and the link removed."""
        self._close_pty()
        log.info("bus %s: unplugged", self.id)

    def replug(self) -> str:
        """A new adapter appears (a new pty; the symlink, if any, points to it). Returns the gateway path."""
        if self.plugged:
            self._close_pty()
        self._open_pty()
        log.info("bus %s: plugged in at %s", self.id, self.pty_path)
        return self.path

    def _on_readable(self) -> None:
        if self.master_fd is None:
            return
        try:
            data = os.read(self.master_fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody has the slave side open right now
            return
        if not data:
            return
        now = time.monotonic()
        if self._buf and now - self._last_rx > self.idle_reset_s:
            self.stats.garbage_bytes += len(self._buf)
            self._buf = b""
        self._last_rx = now
        self._buf += data
        while self._buf:
            chunk = split_rtu_request(self._buf)
            if chunk.consumed == 0:
                break
            self._buf = self._buf[chunk.consumed :]
            if chunk.adu is None:
                self.stats.garbage_bytes += chunk.consumed
                continue
            self._queue.put_nowait((chunk.adu[0], chunk.adu[1:-2]))

    async def _work(self) -> None:
        while True:
            unit, pdu = await self._queue.get()
            try:
                reply = self.answer(unit, pdu)
                if reply.pdu is None:
                    self.stats.silent += 1
                    continue
                adu = rtu_adu(unit, reply.pdu)
                pieces = mangle_rtu(adu, reply)
                wait = reply.delay_s + self.spec.turnaround_ms / 1000.0
                if self.spec.wire_time:
                    wait += wire_time_s(
                        len(pdu) + 3 + len(adu), self.spec.baudrate, self.spec.parity, self.spec.stopbits
                    )
                if wait > 0:
                    await asyncio.sleep(wait)
                for i, piece in enumerate(pieces):
                    if i and reply.split_gap_s:
                        await asyncio.sleep(reply.split_gap_s)
                    self._write(piece)
                self.stats.replies += 1
            except Exception:
                self.server.errors += 1
                log.exception("bus %s: failed to answer unit %d", self.id, unit)

    def _write(self, data: bytes) -> None:
        if self.master_fd is None:
            return
        try:
            os.write(self.master_fd, data)
        except (BlockingIOError, OSError) as exc:
            log.debug("bus %s: reply dropped: %s", self.id, exc)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._close_pty()


class SimServer:
    """All simulated buses and devices of one config, in the current event loop.

    ``async with SimServer(cfg) as sim:`` starts every bus; ``sim.tcp_endpoints`` and
    ``sim.pty_paths`` tell a gateway where to connect; ``sim.device(id)`` gives the device
    (state, ``faults``, ``reboot()``, ``disappear()``); ``sim.clock`` is simulated time.
    """

    def __init__(self, config: SimConfig, *, speed: float | None = None, start_unix: float | None = None) -> None:
        self.config = config
        self.clock = SimClock(
            config.clock.speed if speed is None else speed,
            start_unix if start_unix is not None else config.clock.start_unix,
        )
        self.scenario = Scenario(config, self.clock.start_unix)
        self.scenario.unix_of = self.clock.unix_at
        self.devices: dict[str, SimDevice] = {d.id: SimDevice(d, self.scenario, self.clock) for d in config.devices}
        self.buses: dict[str, TcpBus | RtuBus] = {}
        for b in config.buses:
            units = {d.unit: self.devices[d.id] for d in config.devices if d.bus == b.id}
            self.buses[b.id] = TcpBus(b, units, self) if b.transport == "tcp" else RtuBus(b, units, self)
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = False

    @classmethod
    def from_file(cls, path: str | Path, *, speed: float | None = None, start_unix: float | None = None) -> SimServer:
        return cls(load_sim_config(path), speed=speed, start_unix=start_unix)

    @property
    def gateways(self) -> list[str]:
        """Ids of the simulated gateways (each owns some buses), in config order."""
        return self.config.gateways()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> SimServer:
        try:
            for bus in self.buses.values():
                await bus.start()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        return self

    async def stop(self) -> None:
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.started = False

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve_forever(self, stop: Awaitable[object] | None = None) -> None:
        """Run until ``stop`` completes (or forever); for the CLI."""
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop

    # ---------------------------------------------------------------- lookup

    def device(self, device_id: str) -> SimDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            raise UnknownDevice(f"no simulated device {device_id!r}") from None

    def bus(self, bus_id: str) -> TcpBus | RtuBus:
        return self.buses[bus_id]

    def rtu_bus(self, bus_id: str) -> RtuBus:
        """The pty bus ``bus_id`` (``unplug()``/``replug()``); TypeError if it is a TCP bus."""
        bus = self.buses[bus_id]
        if not isinstance(bus, RtuBus):
            raise TypeError(f"bus {bus_id} is a TCP bus")
        return bus

    def tcp_bus(self, bus_id: str) -> TcpBus:
        """The TCP bus ``bus_id`` (``go_down()``/``come_up()``/``close_connections()``)."""
        bus = self.buses[bus_id]
        if not isinstance(bus, TcpBus):
            raise TypeError(f"bus {bus_id} is an RTU bus")
        return bus

    @property
    def tcp_endpoints(self) -> dict[str, tuple[str, int, int]]:
        """device id -> (host, port, unit) for devices on TCP buses."""
        out: dict[str, tuple[str, int, int]] = {}
        for bus in self.buses.values():
            if isinstance(bus, TcpBus):
                for unit, dev in bus.devices.items():
                    out[dev.id] = (bus.host, bus.port, unit)
        return out

    @property
    def pty_paths(self) -> dict[str, tuple[str, int]]:
        """device id -> (serial path, unit) for devices on RTU buses (the link if configured)."""
        out: dict[str, tuple[str, int]] = {}
        for bus in self.buses.values():
            if isinstance(bus, RtuBus) and bus.plugged:
                for unit, dev in bus.devices.items():
                    out[dev.id] = (bus.path, unit)
        return out

    def field_config(self, gateway: str, timeout_ms: int = 500) -> FieldConfig:
        """The gateway's ``buses``/``devices`` (gateway.config models) pointing at this running simulator."""
        return field_config(self.config, gateway, self.bus_endpoints, timeout_ms=timeout_ms)

    def write_gateway_configs(
        self, directory: str | Path, extra: Mapping[str, Any] | None = None, timeout_ms: int = 500
    ) -> dict[str, Path]:
        """Write ``<directory>/<gateway>.yaml`` for every simulated gateway (``extra``: more top-level sections)."""
        return write_gateway_configs(self.config, self.bus_endpoints, directory, extra, timeout_ms)

    @property
    def bus_endpoints(self) -> dict[str, str]:
        """bus id -> "host:port" or the serial path."""
        out: dict[str, str] = {}
        for bus in self.buses.values():
            if isinstance(bus, TcpBus):
                out[bus.id] = f"{bus.host}:{bus.port}"
            elif bus.plugged:
                out[bus.id] = bus.path
        return out
