"""One Modbus bus: a serial port (RTU) or a TCP endpoint, one transaction at a time.

Why one at a time: RS-485 is half duplex and a TCP-to-RTU converter forwards one request at
a time to its line, so a second request in flight only produces collisions and timeouts.
An ``asyncio.Lock`` serialises transactions; after each one the bus stays silent for
t3.5 (RTU) plus the configured inter-frame gap. The lock is released between retries so a
dead slave costs its bus-mates at most one timeout per attempt.

Failures of the bus itself (USB adapter unplugged, pty gone, TCP refused) raise
:class:`BusError` and put the bus in reopen backoff (0.5 s doubling up to
``reopen_backoff_max_s``); while backing off every request fails at once with
:class:`BusError` without touching the OS, so a vanished port never becomes an exception
loop. State changes (down, reopened) are logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
from typing import Any, Protocol

from gateway.budget import serial_timing
from gateway.config import BusConfig
from gateway.errors import BadFrame, BusClosed, BusError, DeviceError, ModbusException, NoResponse
from gateway.modbus_io import (
    Request,
    Verdict,
    check_response_pdu,
    parse_mbap,
    rtu_request,
    rtu_response_len,
    scan_rtu_reply,
    tcp_request,
)
from gateway.registers import RegisterKind

log = logging.getLogger(__name__)

REOPEN_BACKOFF_MIN_S = 0.5


class Transport(Protocol):
    """One request → its reply PDU (function code first); raises GatewayError subclasses."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def transact(self, req: Request, timeout_s: float) -> bytes: ...

    def hold_off_s(self, req: Request) -> float: ...

    @property
    def is_open(self) -> bool: ...


class TcpTransport:
    """Modbus TCP: one connection per bus, shared by its unit ids; replies matched by transaction id."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise BusError(f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}") from exc

    def hold_off_s(self, req: Request) -> float:
        return 0.0  # transaction ids tell late replies apart

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def transact(self, req: Request, timeout_s: float) -> bytes:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            raise BusClosed(f"{self.host}:{self.port} is not connected")
        self._tid = (self._tid + 1) & 0xFFFF
        tid = self._tid
        reader, writer = self._reader, self._writer
        in_frame = False
        try:
            async with asyncio.timeout(timeout_s):  # one deadline for the whole exchange (no extra task)
                writer.write(tcp_request(req, tid))
                await writer.drain()
                while True:
                    mbap = parse_mbap(await reader.readexactly(7))
                    in_frame = True
                    pdu = await reader.readexactly(mbap.length - 1)
                    in_frame = False
                    if mbap.transaction_id != tid:
                        continue  # a late reply to an earlier, timed-out request
                    if mbap.unit != req.unit:
                        raise BadFrame(f"reply from unit {mbap.unit} to a request for unit {req.unit}")
                    return pdu
        except TimeoutError as exc:
            if in_frame:  # a header promised more bytes than came: the stream is out of step
                await self.close()
                raise BadFrame(f"unit {req.unit}: reply shorter than its MBAP length") from exc
            raise NoResponse(f"unit {req.unit}: no reply within {timeout_s * 1000:.0f} ms") from exc
        except BadFrame:
            await self.close()  # the stream is out of step; start clean
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            await self.close()
            raise BusError(f"{self.host}:{self.port}: connection lost: {exc}") from exc


class SerialTransport:
    """Modbus RTU on a serial port (pyserial opens and configures it; asyncio watches the fd)."""

    def __init__(self, path: str, baud: int, parity: str, stopbits: int) -> None:
        self.path = path
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self._serial: Any = None
        self._fd: int | None = None
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._broken: str | None = None
        # unit -> (until, request): a late reply to ``request`` may still arrive until ``until``
        self._late: dict[int, tuple[float, Request]] = {}
        t = serial_timing(baud, parity, stopbits)
        # how long the line must stay quiet before we call a non-verifying reply finished
        self.quiet_s = max(4 * t.t35_s, 0.02)

    @property
    def is_open(self) -> bool:
        return self._fd is not None and self._broken is None

    async def open(self) -> None:
        import serial  # pyserial; imported here so TCP-only gateways never need it

        try:
            ser = serial.Serial(
                port=self.path,
                baudrate=self.baud,
                bytesize=8,
                parity={"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}[self.parity],
                stopbits=serial.STOPBITS_TWO if self.stopbits == 2 else serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=0,
                exclusive=True,  # a probe must not talk over a running agent on the same line
            )
        except termios.error as exc:  # not an OSError: a port refusing the line settings (ptys refuse parity)
            raise BusError(f"cannot open {self.path}: the port refuses {self.baud} baud parity {self.parity} "
                           f"({exc}); a pty or some adapters need --parity N") from exc
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BusError(f"cannot open {self.path}: {exc}") from exc
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        self._buf.clear()
        self._broken = None
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"read failed: {exc}")
            return
        if not chunk:
            self._fail("end of file (port gone)")
            return
        self._buf += chunk
        if len(self._buf) > 4 * 256:  # line noise while idle: keep only what could still be a reply
            del self._buf[: -2 * 256]
        self._data.set()

    def _fail(self, why: str) -> None:
        self._broken = why
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        self._data.set()

    async def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        ser, self._serial, self._fd = self._serial, None, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()
        self._buf.clear()

    def _check(self) -> int:
        if self._fd is None:
            raise BusClosed(f"{self.path} is not open")
        if self._broken is not None:
            raise BusError(f"{self.path}: {self._broken}")
        return self._fd

    async def _write(self, data: bytes, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            fd = self._check()
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._fail(f"write failed: {exc}")
                raise BusError(f"{self.path}: write failed: {exc}") from exc
            view = view[n:]
            if view:
                if loop.time() > deadline:
                    raise NoResponse(f"{self.path}: could not send the request in time")
                await asyncio.sleep(0.001)

    async def _wait_data(self, wait_s: float) -> bool:
        self._data.clear()
        if wait_s <= 0:
            return False
        try:
            await asyncio.wait_for(self._data.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    def hold_off_s(self, req: Request) -> float:
        """Seconds ``req`` must wait before it may go out (see :meth:`transact`); 0 for most requests."""
        late = self._late.get(req.unit)
        if late is None:
            return 0.0
        until, old = late
        now = asyncio.get_running_loop().time()
        if now >= until:
            del self._late[req.unit]
            return 0.0
        return 0.0 if old == req else until - now

    async def transact(self, req: Request, timeout_s: float) -> bytes:
        """RTU has no transaction id: a slave that answers after our timeout could answer the next
        request. Input is flushed before every request; after a timeout, a late reply is expected
        up to two timeouts after each request sent to that unit, and until then a *different*
        request to the unit is held off (:meth:`hold_off_s`; the bus waits without holding the
        line). An identical retry may take the late reply: it carries the very data asked for.
        Other units are never held up. A slave answering later than that is still caught by the
        unit/function/length/CRC checks unless both requests have the same function and length."""
        self._check()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        suspect = req.unit in self._late
        try:
            pdu = await self._transact(req, timeout_s)
        except (NoResponse, BadFrame):
            suspect = True
            raise
        finally:
            if suspect:
                until = max(self._late.get(req.unit, (0.0, req))[0], sent + 2 * timeout_s)
                self._late[req.unit] = (until, req)
        return pdu

    async def _transact(self, req: Request, timeout_s: float) -> bytes:
        fd = self._check()
        loop = asyncio.get_running_loop()
        # anything already received is a late reply or noise: never let it answer this request
        self._buf.clear()
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except (termios.error, OSError) as exc:
            self._fail(f"flush failed: {exc}")
            raise BusError(f"{self.path}: {exc}") from exc
        deadline = loop.time() + timeout_s
        await self._write(rtu_request(req), deadline)
        full = rtu_response_len(req)
        while True:
            self._check()
            scan = scan_rtu_reply(bytes(self._buf), req)
            if scan.verdict is Verdict.OK:
                self._buf.clear()
                return scan.pdu
            if scan.verdict is Verdict.INVALID or len(self._buf) >= full:
                # a whole reply's worth of bytes and none verifies: wait for the line to go quiet
                if not await self._wait_data(min(self.quiet_s, deadline - loop.time())):
                    got = bytes(self._buf[:16]).hex()
                    self._buf.clear()
                    raise BadFrame(f"unit {req.unit}: reply does not verify (CRC/garbage): {got}...")
                continue
            if not await self._wait_data(deadline - loop.time()):
                self._check()
                if self._buf:
                    got = bytes(self._buf[:16]).hex()
                    self._buf.clear()
                    raise BadFrame(f"unit {req.unit}: truncated reply ({got}) within {timeout_s * 1000:.0f} ms")
                raise NoResponse(f"unit {req.unit}: no reply within {timeout_s * 1000:.0f} ms")


class Bus:
    """A configured bus: async context manager; ``read``/``write`` are the only I/O the pollers use."""

    def __init__(self, cfg: BusConfig, transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.id = cfg.id
        if transport is None:
            if cfg.type == "tcp":
                assert cfg.host is not None
                transport = TcpTransport(cfg.host, cfg.port)
            else:
                assert cfg.serial is not None
                transport = SerialTransport(cfg.serial, cfg.baud, cfg.parity, cfg.stopbits)
        self.transport = transport
        self._lock = asyncio.Lock()
        self._silence_s = cfg.inter_frame_gap_ms / 1000.0
        if cfg.type == "rtu":
            self._silence_s += serial_timing(cfg.baud, cfg.parity, cfg.stopbits).t35_s
        self._reopen_at = 0.0
        self._backoff_s = 0.0
        self._down_reason: str | None = None
        self._closed = False
        self.transactions = 0
        self.reopens = 0

    async def __aenter__(self) -> Bus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_up(self) -> bool:
        return self.transport.is_open and self._down_reason is None

    @property
    def down_reason(self) -> str | None:
        return self._down_reason

    async def open(self) -> None:
        """Open now if possible; a failure is logged and retried by the next request after backoff."""
        self._closed = False
        async with self._lock:
            with contextlib.suppress(BusError):
                await self._ensure_open()

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            await self.transport.close()

    async def _ensure_open(self) -> None:
        if self._closed:
            raise BusClosed(f"bus {self.id} is closed")
        if self.transport.is_open:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._reopen_at:
            raise BusError(f"bus {self.id} down ({self._down_reason}); next reopen in "
                           f"{self._reopen_at - loop.time():.1f} s")
        await self.transport.close()
        try:
            await self.transport.open()
        except BusError as exc:
            self._mark_down(str(exc))
            raise
        if self._down_reason is not None:
            log.info("bus %s (%s) reopened after: %s", self.id, self.cfg.endpoint, self._down_reason)
            self.reopens += 1
        self._down_reason = None
        self._backoff_s = 0.0

    def _mark_down(self, reason: str) -> None:
        if self._down_reason is None:
            log.warning("bus %s (%s) down: %s", self.id, self.cfg.endpoint, reason)
        self._down_reason = reason
        self._backoff_s = min(max(self._backoff_s * 2, REOPEN_BACKOFF_MIN_S), self.cfg.reopen_backoff_max_s)
        self._reopen_at = asyncio.get_running_loop().time() + self._backoff_s

    async def transact(self, req: Request, timeout_s: float | None = None, retries: int | None = None) -> list[int]:
        """Send ``req`` and return the words/bits read (empty for writes).

        Retries only on no reply or a mangled reply. Exception replies are never retried here
        (01–03 mean the request is wrong; 04/05/06/0A/0B mean back off, which is the poller's
        job). A bus failure raises :class:`BusError`; only a connection that had been working
        and dropped (a TCP peer closing an idle connection, a concentrator rebooting) is reopened
        and the request sent again at once, one time, before the bus is declared down.
        """
        timeout = (self.cfg.timeout_ms / 1000.0) if timeout_s is None else timeout_s
        tries = 1 + (self.cfg.retries if retries is None else retries)
        last: DeviceError | None = None
        attempt = 0
        reconnected = False
        while attempt < tries:
            await self._acquire(req)
            try:
                await self._ensure_open()
                self.transactions += 1
                pdu = await self.transport.transact(req, timeout)
                return check_response_pdu(req, pdu)
            except ModbusException:
                raise
            except (NoResponse, BadFrame) as exc:
                last = exc
                attempt += 1
            except BusError as exc:
                was_up = self._down_reason is None
                await self.transport.close()
                if was_up and not reconnected and self.cfg.type == "tcp":
                    reconnected = True
                    log.debug("bus %s: connection dropped (%s); reconnecting at once", self.id, exc)
                    continue
                if was_up:  # failed mid-transaction (open failures are marked already)
                    self._mark_down(str(exc))
                raise
            finally:
                try:
                    if self._silence_s > 0:
                        await asyncio.sleep(self._silence_s)
                finally:
                    self._lock.release()
        assert last is not None
        raise last

    async def _acquire(self, req: Request) -> None:
        """Take the line for ``req``; a held-off request waits without it, so bus-mates go ahead."""
        while True:
            wait_s = self.transport.hold_off_s(req)
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue
            await self._lock.acquire()
            if self.transport.hold_off_s(req) <= 0:
                return
            self._lock.release()

    async def read(self, unit: int, kind: RegisterKind, address: int, count: int, *,
                   timeout_s: float | None = None, retries: int | None = None) -> list[int]:
        return await self.transact(Request(unit, kind.read_fc, address, count), timeout_s, retries)

    async def write(self, unit: int, kind: RegisterKind, address: int, values: list[int], *,
                    timeout_s: float | None = None, retries: int | None = None) -> None:
        if kind is RegisterKind.COIL:
            fc = 5 if len(values) == 1 else 15
        elif kind is RegisterKind.HOLDING_REGISTER:
            fc = 6 if len(values) == 1 else 16
        else:
            from gateway.errors import EncodeError

            raise EncodeError(f"cannot write a {kind}")
        await self.transact(Request(unit, fc, address, len(values), tuple(values)), timeout_s, retries)

