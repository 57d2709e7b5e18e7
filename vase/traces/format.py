"""The trace format's facts: levels, encodings, the blob's container constants, the value-magnitude
histogram grid, and the varint/gap primitives every stream is written with."""

from __future__ import annotations

import lzma

import numpy as np

TRACE_ENCODING = "ranks-v1"
#: The fallback encoding (absolute positions) used when events do not match the replay semantics.
POSITIONS_ENCODING = "positions-v1"
#: The store's ``encoding`` value for summary-only traces (no blob).
SUMMARY_ENCODING = "summary-v1"
#: How much of a sample's evictions is recorded (``--trace``, the job's ``trace``); see above.
TRACE_LEVELS = ("off", "summary", "full")
#: The levels that store a trace ("off" records nothing).
RECORDED_LEVELS = TRACE_LEVELS[1:]

MAGIC = b"VTRC"
FORMAT_VERSION = 1
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
CODEC = "lzma2-raw-p6"

# Value-magnitude histogram: log-spaced bins, MAG_BINS_PER_DECADE per decade from 10**MAG_MIN_EXP
# to 10**MAG_MAX_EXP (+ an underflow and an overflow bin). Percentiles read from it are within ~3.7 %
# (half a bin) of the exact value.
MAG_BINS_PER_DECADE = 32
MAG_MIN_EXP, MAG_MAX_EXP = -6, 6
MAG_EDGES = np.logspace(MAG_MIN_EXP, MAG_MAX_EXP, (MAG_MAX_EXP - MAG_MIN_EXP) * MAG_BINS_PER_DECADE + 1)
MAG_NBINS = len(MAG_EDGES) + 1


# ----------------------------------------------------------------------------------------------
# varints (LEB128, unsigned), vectorised
# ----------------------------------------------------------------------------------------------
def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 bytes of non-negative integers (vectorised)."""
    v = np.asarray(values)
    if v.size == 0:
        return b""
    if v.min() < 0:
        raise ValueError("varint_encode: negative value")
    v = v.astype(np.uint64, copy=False)
    if int(v.max()) < 0x80:
        return v.astype(np.uint8).tobytes()
    nbytes = np.ones(v.shape, dtype=np.int64)
    t = v >> np.uint64(7)
    while True:
        more = t > 0
        if not more.any():
            break
        nbytes += more
        t >>= np.uint64(7)
    total = int(nbytes.sum())
    owner = np.repeat(np.arange(v.size), nbytes)
    starts = np.cumsum(nbytes) - nbytes
    j = np.arange(total) - np.repeat(starts, nbytes)
    low = (v[owner] >> (np.uint64(7) * j.astype(np.uint64))) & np.uint64(0x7F)
    cont = (j < (nbytes[owner] - 1)).astype(np.uint64) << np.uint64(7)
    return (low | cont).astype(np.uint8).tobytes()


def varint_decode(data: bytes | np.ndarray) -> np.ndarray:
    """Inverse of :func:`varint_encode`: an int64 array."""
    b = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    if int(b.max()) < 0x80:
        return b.astype(np.int64)
    ends = np.flatnonzero(b < 0x80)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise ValueError("varint_decode: truncated varint")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts + 1
    j = np.arange(b.size) - np.repeat(starts, lens)
    parts = (b & 0x7F).astype(np.uint64) << (np.uint64(7) * j.astype(np.uint64))
    return np.add.reduceat(parts, starts).astype(np.int64)


def to_gaps(sorted_values: np.ndarray) -> np.ndarray:
    """Gaps of a strictly ascending array: first value, then differences minus one (all >= 0)."""
    if sorted_values.size == 0:
        return sorted_values.astype(np.int64)
    out = np.empty(sorted_values.size, dtype=np.int64)
    out[0] = sorted_values[0]
    out[1:] = np.diff(sorted_values) - 1
    return out


def from_gap_segments(gaps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of per-segment :func:`to_gaps`: concatenated ascending segments of given sizes."""
    if gaps.size == 0:
        return gaps
    csum = np.cumsum(gaps + 1)
    seg_start = np.cumsum(counts) - counts
    nonempty = counts > 0
    base = np.zeros(counts.size, dtype=np.int64)
    # csum value just before each segment's first element (0 for the first segment)
    idx = seg_start[nonempty]
    before = np.where(idx > 0, csum[np.maximum(idx - 1, 0)], 0)
    base[nonempty] = before
    return csum - np.repeat(base, counts) - 1
