"""Modbus master framing: requests out, replies checked (pure bytes, no sockets, no clocks).

We frame ourselves instead of using pymodbus' client because the gateway needs control that
the library hides: one transaction at a time per bus with a configurable gap, our own
timeouts and retries per device, input flushed before each request so a late reply is
never taken for the next one, no reconnect loop of its own, and a clear verdict on every
reply. A reply is accepted only when unit id, function code, length, byte count (or write
echo) and CRC all match the request; anything else is :class:`BadFrame`, so no value is
ever decoded from a mangled frame.

RTU replies are found in the received bytes by scanning for a candidate start (our unit id
followed by our function code, or its exception form) whose CRC verifies. That tolerates a
stray byte of line noise before the reply and replies split across reads with long gaps
(USB adapters and ptys carry no trustworthy inter-character timing; pymodbus' framer notes
the same); the CRC keeps it safe.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from gateway.errors import BadFrame, ModbusException, exception_for
from gateway.registers import MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS

MAX_RTU_ADU = 256


def _crc_table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_CRC = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC[(crc ^ b) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class Request:
    """One Modbus request. ``values`` holds words (FC6/16) or bits (FC5/15) for writes."""

    unit: int
    function: int
    address: int
    count: int = 1
    values: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.unit <= 255:
            raise ValueError(f"unit id {self.unit} outside 0..255")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"address {self.address} outside 0..65535")
        limits = {1: MAX_READ_BITS, 2: MAX_READ_BITS, 3: MAX_READ_REGISTERS, 4: MAX_READ_REGISTERS,
                  5: 1, 6: 1, 15: MAX_WRITE_BITS, 16: MAX_WRITE_REGISTERS}
        limit = limits.get(self.function)
        if limit is None:
            raise ValueError(f"unsupported function code {self.function}")
        if not 1 <= self.count <= limit:
            raise ValueError(f"count {self.count} outside 1..{limit} for function {self.function}")
        if self.address + self.count > 0x10000:
            raise ValueError("request runs past address 65535")
        if self.function in (5, 6, 15, 16) and len(self.values) != self.count:
            raise ValueError("a write needs one value per item")

    @property
    def is_bits(self) -> bool:
        return self.function in (1, 2, 5, 15)


def request_pdu(req: Request) -> bytes:
    fc = req.function
    if fc in (1, 2, 3, 4):
        return struct.pack(">BHH", fc, req.address, req.count)
    if fc == 5:
        return struct.pack(">BHH", fc, req.address, 0xFF00 if req.values[0] else 0x0000)
    if fc == 6:
        return struct.pack(">BHH", fc, req.address, req.values[0] & 0xFFFF)
    if fc == 15:
        packed = pack_bits(req.values)
        return struct.pack(">BHHB", fc, req.address, req.count, len(packed)) + packed
    data = b"".join(struct.pack(">H", w & 0xFFFF) for w in req.values)
    return struct.pack(">BHHB", fc, req.address, req.count, len(data)) + data


def pack_bits(bits: tuple[int, ...] | list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]


def response_pdu_len(req: Request) -> int:
    """Length of the normal reply PDU (function code included)."""
    if req.function in (1, 2):
        return 2 + (req.count + 7) // 8
    if req.function in (3, 4):
        return 2 + 2 * req.count
    return 5  # writes echo address and value/quantity


def rtu_request(req: Request) -> bytes:
    body = bytes([req.unit]) + request_pdu(req)
    return body + struct.pack("<H", crc16(body))


def rtu_response_len(req: Request) -> int:
    return 1 + response_pdu_len(req) + 2


def tcp_request(req: Request, transaction_id: int) -> bytes:
    pdu = request_pdu(req)
    return struct.pack(">HHHB", transaction_id & 0xFFFF, 0, len(pdu) + 1, req.unit) + pdu


def check_response_pdu(req: Request, pdu: bytes) -> list[int]:
    """Validate a reply PDU against its request; return words/bits read (empty for writes).

    Raises the typed :class:`ModbusException` for an exception reply, :class:`BadFrame`
    for anything that does not answer this request.
    """
    if not pdu:
        raise BadFrame("empty reply PDU")
    fc = pdu[0]
    if fc == req.function | 0x80:
        if len(pdu) != 2:
            raise BadFrame(f"exception reply of {len(pdu)} bytes")
        raise exception_for(pdu[1], req.function)
    if fc != req.function:
        raise BadFrame(f"reply function {fc} to request function {req.function}")
    if len(pdu) != response_pdu_len(req):
        raise BadFrame(f"reply PDU of {len(pdu)} bytes, expected {response_pdu_len(req)}")
    if req.function in (1, 2, 3, 4):
        if pdu[1] != len(pdu) - 2:
            raise BadFrame(f"byte count {pdu[1]} but {len(pdu) - 2} data bytes")
        data = pdu[2:]
        if req.function in (1, 2):
            return unpack_bits(data, req.count)
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if pdu[1:] != request_pdu(req)[1:5]:
        raise BadFrame("write reply does not echo the request")
    return []


class Verdict(Enum):
    OK = "ok"  # a reply frame for this request (normal or exception) verified
    INCOMPLETE = "incomplete"  # no verified frame yet; more bytes may complete one
    INVALID = "invalid"  # enough bytes for a reply, none verifies (CRC error, garbage)


@dataclass(frozen=True, slots=True)
class RtuScan:
    verdict: Verdict
    pdu: bytes = b""
    skipped: int = 0  # bytes of noise before the frame


def scan_rtu_reply(buf: bytes, req: Request) -> RtuScan:
    """Look for a verified reply to ``req`` in the bytes received so far."""
    normal_len = rtu_response_len(req)
    exc_fc = req.function | 0x80
    waiting = False
    for off in range(len(buf)):
        if buf[off] != req.unit:
            continue
        if off + 1 >= len(buf):
            waiting = True
            break
        fc = buf[off + 1]
        if fc == req.function:
            length = normal_len
        elif fc == exc_fc:
            length = 5
        else:
            continue
        if off + length > len(buf):
            waiting = True
            continue
        frame = buf[off : off + length]
        if struct.unpack("<H", frame[-2:])[0] == crc16(frame[:-2]):
            return RtuScan(Verdict.OK, frame[1:-2], off)
    if waiting or len(buf) < min(normal_len, 5):
        return RtuScan(Verdict.INCOMPLETE)
    return RtuScan(Verdict.INVALID)


@dataclass(frozen=True, slots=True)
class Mbap:
    transaction_id: int
    protocol_id: int
    length: int
    unit: int


def parse_mbap(header: bytes) -> Mbap:
    tid, pid, length, unit = struct.unpack(">HHHB", header)
    if pid != 0:
        raise BadFrame(f"MBAP protocol id {pid}, expected 0")
    if not 2 <= length <= 254:
        raise BadFrame(f"MBAP length {length} outside 2..254")
    return Mbap(tid, pid, length, unit)


__all__ = [
    "BadFrame",
    "Mbap",
    "ModbusException",
    "Request",
    "RtuScan",
    "Verdict",
    "check_response_pdu",
    "crc16",
    "parse_mbap",
    "request_pdu",
    "response_pdu_len",
    "rtu_request",
    "rtu_response_len",
    "scan_rtu_reply",
    "tcp_request",
]
