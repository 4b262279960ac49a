"""Master framing: request bytes, reply verification, exception mapping (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadFrame, ConfigFault, ModbusException, SlaveBusy, exception_for
from gateway.modbus_io import (
    Request,
    Verdict,
    check_response_pdu,
    crc16,
    parse_mbap,
    request_pdu,
    rtu_request,
    scan_rtu_reply,
    tcp_request,
)


def rtu(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + struct.pack("<H", crc16(body))


def test_crc_known_vector() -> None:
    # read holding registers unit 1, address 0, count 10: 01 03 00 00 00 0A C5 CD
    assert rtu_request(Request(1, 3, 0, 10)) == bytes.fromhex("01030000000AC5CD")


def test_request_pdus() -> None:
    assert request_pdu(Request(1, 5, 7, 1, (1,))) == bytes.fromhex("050007FF00")
    assert request_pdu(Request(1, 6, 1, 1, (0x1234,))) == bytes.fromhex("0600011234")
    assert request_pdu(Request(1, 16, 2, 2, (1, 2))) == bytes.fromhex("10000200020400010002")
    assert request_pdu(Request(1, 15, 0, 10, (1, 0, 1, 1, 0, 0, 1, 1, 1, 0))) == bytes.fromhex("0F0000000A02CD01")
    assert tcp_request(Request(9, 4, 0, 1), 0x0102) == bytes.fromhex("010200000006090400000001")


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        Request(1, 3, 0, 126)
    with pytest.raises(ValueError):
        Request(1, 1, 0, 2001)
    with pytest.raises(ValueError):
        Request(1, 7, 0, 1)
    with pytest.raises(ValueError):
        Request(1, 3, 0xFFFF, 2)
    with pytest.raises(ValueError):
        Request(1, 16, 0, 2, (1,))


def test_check_read_registers() -> None:
    req = Request(1, 3, 0, 2)
    assert check_response_pdu(req, bytes.fromhex("030400010002")) == [1, 2]
    with pytest.raises(BadFrame):
        check_response_pdu(req, bytes.fromhex("0302000100"))  # short
    with pytest.raises(BadFrame):
        check_response_pdu(req, bytes.fromhex("030500010002"))  # byte count lies
    with pytest.raises(BadFrame):
        check_response_pdu(req, bytes.fromhex("040400010002"))  # other function


def test_check_bits_and_writes() -> None:
    assert check_response_pdu(Request(1, 2, 0, 3), bytes.fromhex("020105")) == [1, 0, 1]
    req = Request(1, 6, 1, 1, (0x1234,))
    assert check_response_pdu(req, bytes.fromhex("0600011234")) == []
    with pytest.raises(BadFrame):
        check_response_pdu(req, bytes.fromhex("0600011235"))


@pytest.mark.parametrize(("code", "cls"), [(1, ConfigFault), (2, ConfigFault), (3, ConfigFault), (4, SlaveBusy),
                                           (5, SlaveBusy), (6, SlaveBusy), (10, SlaveBusy), (11, SlaveBusy)])
def test_exception_mapping(code: int, cls: type[ModbusException]) -> None:
    with pytest.raises(cls) as info:
        check_response_pdu(Request(1, 3, 0, 1), bytes([0x83, code]))
    assert info.value.code == code and info.value.function_code == 3
    assert isinstance(exception_for(code, 3), cls)
    assert exception_for(code, 3).permanent is (cls is ConfigFault)


def test_scan_finds_reply_after_noise_and_refuses_bad_crc() -> None:
    req = Request(7, 4, 0, 2)
    good = rtu(7, bytes.fromhex("040400010002"))
    assert scan_rtu_reply(good, req).verdict is Verdict.OK
    noisy = scan_rtu_reply(b"\x00\xff\x13" + good, req)
    assert noisy.verdict is Verdict.OK and noisy.skipped == 3 and noisy.pdu == bytes.fromhex("040400010002")
    bad = bytearray(good)
    bad[-2] ^= 0x5A
    assert scan_rtu_reply(bytes(bad), req).verdict is not Verdict.OK
    assert scan_rtu_reply(good[:5], req).verdict is Verdict.INCOMPLETE
    other_unit = rtu(8, bytes.fromhex("040400010002"))
    assert scan_rtu_reply(other_unit, req).verdict is Verdict.INVALID
    exc = scan_rtu_reply(rtu(7, bytes([0x84, 2])), req)
    assert exc.verdict is Verdict.OK and exc.pdu == bytes([0x84, 2])


@given(st.binary(max_size=40), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_no_value_from_mangled_frames(noise: bytes, a: int, b: int) -> None:
    """Any single-byte corruption of a reply is never accepted as a different value."""
    req = Request(3, 3, 10, 2)
    frame = rtu(3, bytes([3, 4]) + struct.pack(">HH", a, b))
    for i in range(len(frame)):
        mangled = bytearray(frame)
        mangled[i] ^= 0xA5
        scan = scan_rtu_reply(noise + bytes(mangled), req)
        if scan.verdict is Verdict.OK:
            try:
                assert check_response_pdu(req, scan.pdu) == [a, b]
            except (BadFrame, ModbusException):
                pass


def test_mbap() -> None:
    assert parse_mbap(bytes.fromhex("00010000000601")).length == 6
    with pytest.raises(BadFrame):
        parse_mbap(bytes.fromhex("00010001000601"))
    with pytest.raises(BadFrame):
        parse_mbap(bytes.fromhex("00010000FFFF01"))


@given(st.binary(max_size=300), st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]), st.integers(1, 125))
def test_arbitrary_bytes_never_crash_the_reply_path(buf: bytes, fc: int, count: int) -> None:
    if fc in (5, 6):
        count = 1
    elif fc == 16:
        count = min(count, 123)  # a write request carries at most 123 registers
    values = tuple([1] * count) if fc in (5, 6, 15, 16) else ()
    req = Request(1, fc, 0, count, values)
    scan = scan_rtu_reply(buf, req)
    assert scan.verdict in set(Verdict)
    if scan.verdict is Verdict.OK:
        try:
            check_response_pdu(req, scan.pdu)
        except (BadFrame, ModbusException):
            pass
    try:
        check_response_pdu(req, buf[:260])
    except (BadFrame, ModbusException):
        pass
