"""Modbus frame codec for the simulated slaves: RTU (CRC-16) and TCP (MBAP) framing, PDUs.

Pure bytes in, values out: no sockets, no clocks. The server side decodes requests and
encodes responses; the response decoders exist so tests (and fault tooling) can check
bytes without a client library.

RTU framing on a byte stream has no length field, so :func:`decode_rtu_request` knows the
length of each request by function code, and for an unknown function code hunts for the
shortest prefix whose CRC matches (a real slave uses the 3.5-character silence instead; a
pty carries no timing we can trust). Bytes that start no valid frame are skipped one at a
time, the way a slave resynchronises after line noise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

READ_COILS = 1
READ_DISCRETE_INPUTS = 2
READ_HOLDING_REGISTERS = 3
READ_INPUT_REGISTERS = 4
WRITE_SINGLE_COIL = 5
WRITE_SINGLE_REGISTER = 6
WRITE_MULTIPLE_COILS = 15
WRITE_MULTIPLE_REGISTERS = 16

SUPPORTED_FUNCTIONS = frozenset({1, 2, 3, 4, 5, 6, 15, 16})
MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123
MAX_RTU_ADU = 256
MBAP_LEN = 7


class ExceptionCode(IntEnum):
    """Modbus exception codes a simulated slave can answer with."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request PDU. ``values`` holds bits (0/1) or register words for writes."""

    unit: int
    function: int
    address: int = 0
    count: int = 0
    values: tuple[int, ...] = ()
    raw_pdu: bytes = b""

    @property
    def is_write(self) -> bool:
        return self.function in (5, 6, 15, 16)


class FrameError(ValueError):
    """A PDU that is well framed but malformed (wrong byte count, bad coil value)."""

    def __init__(self, code: ExceptionCode, detail: str) -> None:
        self.code = code
        super().__init__(detail)


def _request_pdu_len(pdu_head: bytes) -> int | None:
    """Length of a request PDU from its first bytes; None when more bytes are needed or fc unknown."""
    fc = pdu_head[0]
    if fc in (1, 2, 3, 4, 5, 6):
        return 5
    if fc in (15, 16):
        if len(pdu_head) < 6:
            return None
        return 6 + pdu_head[5]
    return None


def parse_request_pdu(unit: int, pdu: bytes) -> Request:
    """Decode a request PDU; raises :class:`FrameError` carrying the exception code to answer with."""
    if not pdu:
        raise FrameError(ExceptionCode.ILLEGAL_FUNCTION, "empty PDU")
    fc = pdu[0]
    if fc not in SUPPORTED_FUNCTIONS:
        raise FrameError(ExceptionCode.ILLEGAL_FUNCTION, f"function {fc} not supported")
    if len(pdu) < 5:
        raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, "short PDU")
    address, second = struct.unpack(">HH", pdu[1:5])
    if fc in (1, 2):
        if not 1 <= second <= MAX_READ_BITS:
            raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"bit count {second}")
        return Request(unit, fc, address, second, raw_pdu=pdu)
    if fc in (3, 4):
        if not 1 <= second <= MAX_READ_REGISTERS:
            raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"register count {second}")
        return Request(unit, fc, address, second, raw_pdu=pdu)
    if fc == 5:
        if second not in (0x0000, 0xFF00):
            raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"coil value {second:#06x}")
        return Request(unit, fc, address, 1, (1 if second else 0,), raw_pdu=pdu)
    if fc == 6:
        return Request(unit, fc, address, 1, (second,), raw_pdu=pdu)
    if len(pdu) < 6:
        raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, "short PDU")
    nbytes = pdu[5]
    data = pdu[6:]
    if len(data) != nbytes:
        raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"byte count {nbytes} but {len(data)} data bytes")
    if fc == 15:
        if not 1 <= second <= MAX_WRITE_BITS or nbytes != (second + 7) // 8:
            raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"coil count {second} / byte count {nbytes}")
        bits = tuple((data[i // 8] >> (i % 8)) & 1 for i in range(second))
        return Request(unit, fc, address, second, bits, raw_pdu=pdu)
    if not 1 <= second <= MAX_WRITE_REGISTERS or nbytes != 2 * second:
        raise FrameError(ExceptionCode.ILLEGAL_DATA_VALUE, f"register count {second} / byte count {nbytes}")
    words = struct.unpack(f">{second}H", data)
    return Request(unit, fc, address, second, tuple(words), raw_pdu=pdu)


@dataclass(frozen=True, slots=True)
class RtuChunk:
    """One step of stream decoding: ``consumed`` bytes were used; ``adu`` is a CRC-valid frame or None."""

    consumed: int
    adu: bytes | None


def split_rtu_request(buf: bytes) -> RtuChunk:
    """Find the next CRC-valid request frame at the head of ``buf``.

    Returns consumed=0 when more bytes are needed, consumed=1 (adu None) to drop one byte of
    garbage, or the frame. A frame whose length is known but whose CRC is wrong also drops
    just one byte, and so does a head that would need more bytes while a complete valid frame
    already sits further on (garbage that looks like the start of a long frame), so a valid
    frame hidden behind garbage is still found.
    """
    if len(buf) < 4:
        return RtuChunk(0, None)
    pdu_len = _request_pdu_len(buf[1:])
    fc = buf[1]
    if pdu_len is None and fc in (15, 16):
        return _wait_or_skip(buf)
    if pdu_len is not None:
        total = 1 + pdu_len + 2
        if total > MAX_RTU_ADU:
            return RtuChunk(1, None)
        if len(buf) < total:
            return _wait_or_skip(buf)
        frame = buf[:total]
        return RtuChunk(total, frame) if crc_ok(frame) else RtuChunk(1, None)
    # unknown function: the shortest prefix with a matching CRC is the frame, unless a complete
    # frame of a known function starts inside it. Trying up to 252 lengths against a 16-bit CRC
    # matches by chance about once in 260 garbage bytes, and that "frame" would swallow the head
    # of the real request behind it.
    for total in range(4, min(len(buf), MAX_RTU_ADU) + 1):
        if crc_ok(buf[:total]):
            return RtuChunk(1, None) if _known_frame_after(buf, starts_before=total) else RtuChunk(total, buf[:total])
    if len(buf) >= MAX_RTU_ADU:
        return RtuChunk(1, None)
    return _wait_or_skip(buf)


def _wait_or_skip(buf: bytes) -> RtuChunk:
    return RtuChunk(1, None) if _known_frame_after(buf) else RtuChunk(0, None)


def _known_frame_after(buf: bytes, starts_before: int | None = None) -> bool:
    """True when a complete CRC-valid frame of a known function starts after the first byte (garbage ahead)."""
    for start in range(1, min(len(buf) - 3, starts_before if starts_before is not None else len(buf))):
        pdu_len = _request_pdu_len(buf[start + 1 :])
        if pdu_len is None:
            continue
        end = start + 1 + pdu_len + 2
        if end <= len(buf) and crc_ok(buf[start:end]):
            return True
    return False


def read_response_pdu(function: int, payload: bytes) -> bytes:
    return bytes((function, len(payload))) + payload


def pack_bits(bits: list[int] | tuple[int, ...]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def read_bits_response(function: int, bits: list[int] | tuple[int, ...]) -> bytes:
    return read_response_pdu(function, pack_bits(bits))


def read_registers_response(function: int, words: list[int] | tuple[int, ...]) -> bytes:
    return read_response_pdu(function, struct.pack(f">{len(words)}H", *words))


def write_response(request: Request) -> bytes:
    """Echo response of FC 5/6 (whole request PDU) and FC 15/16 (address and count)."""
    if request.function in (5, 6):
        return request.raw_pdu[:5]
    return struct.pack(">BHH", request.function, request.address, request.count)


def exception_response(function: int, code: int) -> bytes:
    return bytes(((function | 0x80) & 0xFF, code))


def rtu_adu(unit: int, pdu: bytes) -> bytes:
    return with_crc(bytes((unit,)) + pdu)


def mbap_adu(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


@dataclass(frozen=True, slots=True)
class MbapChunk:
    """``consumed`` bytes used; ``frame`` is (transaction, unit, pdu) or None (need more / dropped)."""

    consumed: int
    frame: tuple[int, int, bytes] | None
    error: str = ""


def split_mbap(buf: bytes) -> MbapChunk:
    """Next Modbus TCP frame at the head of ``buf``; a bad header is reported so the server can close."""
    if len(buf) < MBAP_LEN:
        return MbapChunk(0, None)
    tid, pid, length, unit = struct.unpack(">HHHB", buf[:MBAP_LEN])
    if pid != 0:
        return MbapChunk(0, None, f"protocol id {pid}")
    if not 2 <= length <= 254:
        return MbapChunk(0, None, f"length {length}")
    total = 6 + length
    if len(buf) < total:
        return MbapChunk(0, None)
    return MbapChunk(total, (tid, unit, bytes(buf[MBAP_LEN:total])))


# ---- client-side helpers (tests, probing the simulator without a library) -------------------


def read_request_pdu(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


def write_registers_pdu(address: int, words: list[int] | tuple[int, ...]) -> bytes:
    return struct.pack(f">BHHB{len(words)}H", 16, address, len(words), 2 * len(words), *words)


def decode_registers_response(pdu: bytes) -> list[int]:
    """Words of an FC 3/4 response PDU; ValueError on an exception or malformed response."""
    if pdu[0] & 0x80:
        raise ValueError(f"exception {pdu[1]:#04x} for function {pdu[0] & 0x7F}")
    nbytes = pdu[1]
    if len(pdu) != 2 + nbytes or nbytes % 2:
        raise ValueError("malformed register response")
    return list(struct.unpack(f">{nbytes // 2}H", pdu[2:]))


def t35_s(baudrate: int) -> float:
    """3.5 character times (11 bits a character); fixed 1.75 ms above 19200 baud as the spec says."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / baudrate
