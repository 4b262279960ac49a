"""The simulator's Modbus frame codec: byte literals, CRC, split and garbage frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.frames import (
    ExceptionCode,
    FrameError,
    crc16,
    crc_ok,
    decode_registers_response,
    exception_response,
    mbap_adu,
    pack_bits,
    parse_request_pdu,
    read_bits_response,
    read_registers_response,
    rtu_adu,
    split_mbap,
    split_rtu_request,
    t35_s,
    with_crc,
    write_response,
)

# Frames from the Modbus spec / well-known captures
READ_HR = bytes.fromhex("01030000000AC5CD")  # unit 1, FC3, 10 registers from 0
SPEC_READ = bytes.fromhex("1103006B00037687")  # spec example: unit 17, FC3 @107 x3
SPEC_WRITE_COILS = bytes.fromhex("110F0013000A02CD01BF0B")  # spec example FC15
COIL_ON = bytes.fromhex("01050000FF008C3A")


def test_crc_of_spec_frames() -> None:
    assert crc16(bytes.fromhex("01030000000A")) == 0xCDC5
    assert with_crc(bytes.fromhex("1103006B0003")) == SPEC_READ
    for frame in (READ_HR, SPEC_READ, SPEC_WRITE_COILS, COIL_ON):
        assert crc_ok(frame)
    assert not crc_ok(READ_HR[:-1] + b"\x00")


@given(st.binary(min_size=2, max_size=80))
def test_crc_round_trip_and_single_bit_flip_detected(body: bytes) -> None:
    frame = with_crc(body)
    assert crc_ok(frame)
    flipped = bytes([frame[0] ^ 0x01]) + frame[1:]
    assert not crc_ok(flipped)


def test_parse_read_and_write_requests() -> None:
    req = parse_request_pdu(0x11, SPEC_READ[1:-2])
    assert (req.unit, req.function, req.address, req.count) == (0x11, 3, 107, 3)
    coils = parse_request_pdu(0x11, SPEC_WRITE_COILS[1:-2])
    assert coils.function == 15 and coils.address == 0x13 and coils.count == 10
    assert coils.values == (1, 0, 1, 1, 0, 0, 1, 1, 1, 0)  # 0xCD 0x01, LSB first
    on = parse_request_pdu(1, COIL_ON[1:-2])
    assert on.values == (1,) and on.is_write
    regs = parse_request_pdu(1, bytes.fromhex("100001000204000A0102"))
    assert regs.values == (0x000A, 0x0102)


@pytest.mark.parametrize(
    ("pdu", "code"),
    [
        (bytes.fromhex("2B0E0100"), ExceptionCode.ILLEGAL_FUNCTION),  # FC43 not supported
        (bytes.fromhex("030000007E"), ExceptionCode.ILLEGAL_DATA_VALUE),  # 126 registers
        (bytes.fromhex("0300000000"), ExceptionCode.ILLEGAL_DATA_VALUE),  # zero registers
        (bytes.fromhex("0500001234"), ExceptionCode.ILLEGAL_DATA_VALUE),  # coil value not 0/FF00
        (bytes.fromhex("100001000203000A01"), ExceptionCode.ILLEGAL_DATA_VALUE),  # byte count != 2*n
    ],
)
def test_malformed_requests_carry_their_exception_code(pdu: bytes, code: ExceptionCode) -> None:
    with pytest.raises(FrameError) as err:
        parse_request_pdu(1, pdu)
    assert err.value.code == code


def test_responses_byte_literals() -> None:
    assert read_registers_response(3, [0x022B, 0x0000, 0x0064]) == bytes.fromhex("0306022B00000064")
    assert read_bits_response(1, [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]) == bytes.fromhex("0102CD01")
    assert pack_bits([0] * 8 + [1]) == b"\x00\x01"
    assert exception_response(3, ExceptionCode.ILLEGAL_DATA_ADDRESS) == b"\x83\x02"
    assert exception_response(4, ExceptionCode.GATEWAY_TARGET_FAILED) == b"\x84\x0b"
    req = parse_request_pdu(1, COIL_ON[1:-2])
    assert write_response(req) == COIL_ON[1:-2]
    req16 = parse_request_pdu(1, bytes.fromhex("100001000204000A0102"))
    assert write_response(req16) == bytes.fromhex("1000010002")
    assert rtu_adu(1, bytes.fromhex("030000000A")) == READ_HR
    assert mbap_adu(0x1234, 7, bytes.fromhex("0300000001")) == bytes.fromhex("123400000006070300000001")
    assert decode_registers_response(bytes.fromhex("0304000A0102")) == [10, 0x0102]
    with pytest.raises(ValueError):
        decode_registers_response(b"\x83\x02")


def test_rtu_whole_frame() -> None:
    chunk = split_rtu_request(READ_HR + SPEC_READ)
    assert chunk.consumed == len(READ_HR) and chunk.adu == READ_HR
    rest = split_rtu_request((READ_HR + SPEC_READ)[chunk.consumed :])
    assert rest.adu == SPEC_READ


def test_rtu_frame_fed_byte_by_byte_waits_then_decodes() -> None:
    buf = b""
    frames = []
    for i in range(len(SPEC_WRITE_COILS)):
        buf += SPEC_WRITE_COILS[i : i + 1]
        chunk = split_rtu_request(buf)
        if chunk.consumed:
            frames.append(chunk.adu)
            buf = buf[chunk.consumed :]
    assert frames == [SPEC_WRITE_COILS]
    assert buf == b""


def _drain(buf: bytes) -> tuple[list[bytes], int, bytes]:
    frames: list[bytes] = []
    dropped = 0
    while True:
        chunk = split_rtu_request(buf)
        if chunk.consumed == 0:
            return frames, dropped, buf
        buf = buf[chunk.consumed :]
        if chunk.adu is None:
            dropped += chunk.consumed
        else:
            frames.append(chunk.adu)


def test_rtu_garbage_before_frame_is_skipped() -> None:
    frames, dropped, rest = _drain(b"\x00\xff\x13" + READ_HR)
    assert frames == [READ_HR] and dropped == 3 and rest == b""


def test_rtu_bad_crc_frame_is_dropped_and_the_next_one_found() -> None:
    bad = READ_HR[:-1] + b"\x00"
    frames, dropped, _rest = _drain(bad + SPEC_READ)
    assert frames == [SPEC_READ]
    assert dropped >= 1


def test_rtu_half_frame_waits_for_more() -> None:
    assert split_rtu_request(READ_HR[:5]).consumed == 0
    assert split_rtu_request(SPEC_WRITE_COILS[:6]).consumed == 0


def test_rtu_unknown_function_is_found_by_crc() -> None:
    frame = with_crc(bytes.fromhex("012B0E0100"))  # FC43 read device id
    chunk = split_rtu_request(frame)
    assert chunk.adu == frame
    with pytest.raises(FrameError) as err:
        parse_request_pdu(1, frame[1:-2])
    assert err.value.code == ExceptionCode.ILLEGAL_FUNCTION


def test_mbap_split_and_errors() -> None:
    adu = mbap_adu(9, 1, bytes.fromhex("030000000A"))
    assert split_mbap(adu[:5]).consumed == 0
    part = split_mbap(adu + adu[:3])
    assert part.consumed == len(adu) and part.frame == (9, 1, bytes.fromhex("030000000A"))
    assert split_mbap(b"\x00\x01\x00\x07\x00\x06\x01" + b"x" * 5).error.startswith("protocol id")
    assert split_mbap(b"\x00\x01\x00\x00\x01\x06\x01").error.startswith("length")


def test_t35() -> None:
    assert t35_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert t35_s(115200) == 0.00175


FRAMES = [READ_HR, SPEC_READ, SPEC_WRITE_COILS, COIL_ON]


@given(garbage=st.binary(max_size=24), which=st.sampled_from(FRAMES))
def test_rtu_frame_behind_any_garbage_is_found(garbage: bytes, which: bytes) -> None:
    frames, _dropped, _rest = _drain(garbage + which)
    assert all(crc_ok(f) for f in frames)
    assert frames and frames[-1] == which


def test_an_unknown_function_crc_match_does_not_swallow_the_request_behind_it() -> None:
    # 0xfc + the head of SPEC_WRITE_COILS happen to pass the CRC as an unknown-function frame
    # (hypothesis found it): the complete FC15 request inside wins, the stray byte is dropped
    frames, dropped, rest = _drain(b"\xfc" + SPEC_WRITE_COILS)
    assert frames == [SPEC_WRITE_COILS] and dropped == 1 and rest == b""


@given(st.binary(max_size=300))
def test_rtu_decoder_never_raises_and_always_progresses(data: bytes) -> None:
    frames, dropped, rest = _drain(data)
    assert all(crc_ok(f) for f in frames)
    assert sum(map(len, frames)) + dropped + len(rest) == len(data)
    assert len(rest) < 256
