"""Compact encoding of one (device, metric, hour) of readings: times and values as delta arrays.

Times are milliseconds, stored as deltas of deltas (0 for a steady interval). Values that are
exact decimals at some scale 10^k (most sensors report fixed decimals) are stored as deltas of
the scaled integers; others as the XOR of each float's bits with the previous one. Each array
is byte-shuffled (byte planes together, so the zero high bytes form long runs) and the whole
is deflated. The same bytes go to SQLite (which has no compression of its own) and PostgreSQL,
so both are measured alike; decoding is exact — ``decode(encode(x)) == x`` bit for bit.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

HEADER = struct.Struct("<BIqb")  # format version, n, first ts_ms, value scale (-1: XOR floats)
VERSION = 1
MAX_SCALE = 6

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


class CodecError(ValueError):
    """A blob that is not a compact block of this version."""


def _shuffle(a: npt.NDArray[np.int64] | npt.NDArray[np.uint64]) -> bytes:
    return a.astype("<u8").view(np.uint8).reshape(-1, 8).T.tobytes()


def _unshuffle(b: bytes, n: int) -> npt.NDArray[np.uint64]:
    planes = np.frombuffer(b, dtype=np.uint8).reshape(8, n)
    return planes.T.copy().view("<u8").reshape(n)


def _scale_of(values: F64) -> int:
    """The smallest k with values == round(values * 10^k) / 10^k exactly, or -1."""
    if not np.all(np.isfinite(values)):
        return -1
    for k in range(MAX_SCALE + 1):
        f = 10.0**k
        scaled = np.round(values * f)
        if not np.all(np.abs(scaled) < 2**52):
            return -1
        back = scaled.astype(np.int64) / f  # what decode computes: -0.0 does not survive, so it fails here
        if np.array_equal(back.view(np.uint64), values.view(np.uint64)):
            return k
    return -1


def encode(ts_ms: I64, values: F64, quality: I8) -> bytes:
    """One block; ``ts_ms`` strictly increasing (a series' identity is its millisecond time)."""
    n = len(ts_ms)
    if n == 0 or len(values) != n or len(quality) != n:
        raise CodecError(f"a block needs n > 0 equal-length arrays, got {n}, {len(values)}, {len(quality)}")
    t = np.asarray(ts_ms, dtype=np.int64)
    if n > 1 and np.any(np.diff(t) <= 0):
        raise CodecError("ts_ms must be strictly increasing")
    v = np.asarray(values, dtype=np.float64)
    dd = np.diff(t, n=2, prepend=[t[0], t[0]]) if n > 1 else np.zeros(1, dtype=np.int64)
    k = _scale_of(v)
    if k >= 0:
        ints = np.round(v * 10.0**k).astype(np.int64)
        vbody = _shuffle(np.diff(ints, prepend=0))
    else:
        bits = v.view(np.uint64)
        vbody = _shuffle(np.bitwise_xor(bits, np.concatenate(([np.uint64(0)], bits[:-1]))))
    body = HEADER.pack(VERSION, n, int(t[0]), k) + _shuffle(dd) + vbody + np.asarray(quality, np.int8).tobytes()
    return zlib.compress(body, 6)


def decode(blob: bytes) -> tuple[I64, F64, I8]:
    """(ts_ms, values, quality) of one block."""
    try:
        body = zlib.decompress(blob)
        version, n, t0, k = HEADER.unpack_from(body)
    except (zlib.error, struct.error) as exc:
        raise CodecError(f"not a compact block: {exc}") from exc
    if version != VERSION or len(body) != HEADER.size + 17 * n:
        raise CodecError(f"compact block version {version} with {len(body)} bytes for n={n}")
    p = HEADER.size
    dd = _unshuffle(body[p : p + 8 * n], n).view(np.int64)
    p += 8 * n
    deltas = np.cumsum(dd)
    deltas[0] = 0
    ts = t0 + np.cumsum(deltas)
    raw = _unshuffle(body[p : p + 8 * n], n)
    p += 8 * n
    values = np.cumsum(raw.view(np.int64)) / 10.0**k if k >= 0 else np.bitwise_xor.accumulate(raw).view(np.float64)
    quality = np.frombuffer(body[p:], dtype=np.int8).copy()
    return ts.astype(np.int64), values.astype(np.float64), quality
