"""Eviction traces: record what the cache evicted, store it compactly, answer questions about it.

The cache reports every eviction to a sink as an :class:`EvictionEvent`. A :class:`TraceRecorder`
is such a sink. It keeps, per batch row:

- ``summary`` level: per layer the number of events and evicted positions, and value-magnitude
  statistics (mean, p50, p99, max) of the kept and of the evicted tokens;
- ``full`` level: the summary, plus per (layer, KV head) the evicted positions of every event.

Semantics (the cache's, restated): after an event, a (layer, head) holds its kept candidates plus
the recency window ``[logical_length - residual, logical_length)``; between events every new token
is added. So after decode step ``t`` a (layer, head) holds every position ``< prompt_length + t``
except those evicted by events with ``step <= t``. Decode step ``t`` feeds generated token ``t``
(position ``prompt_length + t - 1``); step 0 is the prefill. The last generated token is never fed,
so a sample of ``new_tokens`` tokens has steps ``0 .. new_tokens - 1``: call
``recorder.finish(row, new_tokens)`` (or ``record_for(row, new_tokens=...)``) when a row is done.

Typical use (one recorder per ``generate()`` call)::

    rec = TraceRecorder("full", num_layers, num_kv_heads)
    results = generate(..., trace_sink=rec)
    for r in results:
        store.add_sample(run_id, ..., trace=rec.record_for(r.row, new_tokens=r.new_tokens,
                                                           prompt_length=r.prompt_tokens, residual=residual))

The ``full`` encoding (``TRACE_ENCODING``, "ranks-v1")
------------------------------------------------------
An event's evicted positions are written as ascending *ranks* within the sorted list of candidates
the (layer, head) held just before the event (everything it held but the recency window). Ranks
are dense small numbers (each event evicts ``residual`` of about ``budget`` candidates), so the
gaps between consecutive ranks are small: they are written as LEB128 varints and each
(layer, head) stream is compressed on its own with raw LZMA2. A header indexes the streams, so a
query decompresses only the stream it needs; decoding replays the stream with numpy (the held
set before each event is known from the previous events, which turns ranks back into positions).
Measured: about 0.8 bytes per evicted position for attention/value-driven eviction at budget 4096,
residual 64, about 0.95 for uniformly random eviction (the worst case: the ranks are then
incompressible beyond ~7.4 bits each), about 0.5 at budget 256, residual 32.

Should the events ever disagree with these semantics (a candidate set that does not match the
replay), the recorder notices (candidate counts and window bounds are checked per event) and
the row is written in the fallback "positions" mode instead: gaps between absolute positions,
same container, same queries, just larger.

Layout::

    b"VTRC" | u8 format version | u32 LE header length | header (JSON, UTF-8) | events | streams

``events`` is one zlib block: per layer, varints of the gaps between event logical lengths.
Each stream is ``varint(count per event) ++ varint(gap per evicted rank/position)``, LZMA2-raw.

Queries (:func:`held_positions`, :func:`eviction_step`, :func:`eviction_timeline`,
:func:`survival_matrix`) take the blob; :func:`decode` returns a :class:`TraceReader` that parses
the header once and caches decoded streams, for callers asking several questions of one blob.

This module never imports torch (events' tensors are read through ``.cpu().numpy()``), so readers
(API, dashboard) stay light.
"""

from __future__ import annotations

import json
import lzma
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

TRACE_ENCODING = "ranks-v1"
#: The fallback encoding (absolute positions) used when events do not match the replay semantics.
POSITIONS_ENCODING = "positions-v1"
#: The store's ``encoding`` value for summary-only traces (no blob).
SUMMARY_ENCODING = "summary-v1"
LEVELS = ("off", "summary", "full")

_MAGIC = b"VTRC"
_FORMAT_VERSION = 1
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
_CODEC = "lzma2-raw-p6"

# Value-magnitude histogram: log-spaced bins, 32 per decade from 1e-6 to 1e6 (+ under/overflow).
# Percentiles read from it are within ~3.7 % (half a bin) of the exact value.
_MAG_EDGES = np.logspace(-6.0, 6.0, 12 * 32 + 1)
_MAG_NBINS = len(_MAG_EDGES) + 1


@dataclass
class EvictionEvent:
    row: int  # sample index within the generate() call
    layer: int
    logical_length: int  # tokens of this row whose KV had been written when the eviction ran (prompt + fed tokens)
    prompt_length: int
    residual: int
    kept_positions: torch.Tensor  # [H_kv, K] int64 original positions kept among the candidates, sorted ascending per head
    evicted_positions: torch.Tensor  # [H_kv, E] int64 original positions evicted, sorted ascending per head
    kept_scores: torch.Tensor | None  # [H_kv, K] float32 policy scores of the kept
    kept_magnitude: torch.Tensor | None  # [H_kv, K] value range (max-min over head_dim) of kept
    evicted_magnitude: torch.Tensor | None  # [H_kv, E]

    @property
    def step(self) -> int:
        return self.logical_length - self.prompt_length


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


def _gaps(sorted_values: np.ndarray) -> np.ndarray:
    """Gaps of a strictly ascending array: first value, then differences minus one (all >= 0)."""
    if sorted_values.size == 0:
        return sorted_values.astype(np.int64)
    out = np.empty(sorted_values.size, dtype=np.int64)
    out[0] = sorted_values[0]
    out[1:] = np.diff(sorted_values) - 1
    return out


def _ungap_segments(gaps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of per-segment :func:`_gaps`: concatenated ascending segments of given sizes."""
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


# ----------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------
class _MagStats:
    """Running count/sum/max and a log histogram of value magnitudes."""

    __slots__ = ("n", "total", "max", "hist")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.max = -math.inf
        self.hist = np.zeros(_MAG_NBINS, dtype=np.int64)

    def add(self, mag: np.ndarray | None) -> None:
        if mag is None or mag.size == 0:
            return
        m = mag.reshape(-1)
        if not np.isfinite(m).all():  # NaN/inf magnitudes carry no statistics
            m = m[np.isfinite(m)]
            if m.size == 0:
                return
        self.hist += np.bincount(np.searchsorted(_MAG_EDGES, m), minlength=_MAG_NBINS)
        self.n += int(m.size)
        self.total += float(m.sum(dtype=np.float64))
        self.max = max(self.max, float(m.max()))

    def stats(self) -> dict[str, Any]:
        """n, mean, p50, p99, max and ``hist``: the histogram trimmed to its non-empty bins,
        ``{"first_bin": i, "counts": [...]}`` (bin ``i`` of the full histogram first; read it with
        :func:`magnitude_histogram`); None when nothing was recorded."""
        if self.n == 0:
            return {"n": 0, "mean": None, "p50": None, "p99": None, "max": None, "hist": None}
        nz = np.flatnonzero(self.hist)
        lo, hi = int(nz[0]), int(nz[-1])
        return {
            "n": self.n,
            "mean": self.total / self.n,
            "p50": _hist_quantile(self.hist, 0.50, self.max),
            "p99": _hist_quantile(self.hist, 0.99, self.max),
            "max": self.max,
            "hist": {"first_bin": lo, "counts": [int(c) for c in self.hist[lo : hi + 1]]},
        }


def magnitude_histogram(stats: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edges_lo, edges_hi, counts)`` of the value-magnitude histogram in a summary's
    ``kept_magnitude`` / ``evicted_magnitude`` statistics (or in their ``hist`` entry itself).

    Bins are 32 per decade from 1e-6 to 1e6; a bin holds the magnitudes in ``(lo, hi]``. The two
    open-ended bins get finite display edges one bin width wide: the underflow bin (magnitudes
    ``<= 1e-6``, zeros included) is drawn as ``(1e-6 / step, 1e-6]``, the overflow bin (``> 1e6``) as
    ``(1e6, 1e6 * step]``. Statistics without a histogram (none recorded, or a trace written
    before histograms were stored) give three empty arrays. Raises ValueError on a malformed one.
    """
    empty = (np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    if not stats:
        return empty
    hist = stats if "counts" in stats else stats.get("hist")
    if not hist or not hist.get("counts"):
        return empty
    first = int(hist.get("first_bin", 0))
    counts = np.asarray(hist["counts"], dtype=np.int64)
    if counts.ndim != 1 or first < 0 or first + counts.size > _MAG_NBINS or (counts < 0).any():
        raise ValueError(f"malformed magnitude histogram (first_bin {first}, {counts.size} counts)")
    step = _MAG_EDGES[1] / _MAG_EDGES[0]
    bounds = np.concatenate([[_MAG_EDGES[0] / step], _MAG_EDGES, [_MAG_EDGES[-1] * step]])
    idx = np.arange(first, first + counts.size)
    return bounds[idx], bounds[idx + 1], counts


def _to_numpy(t: Any, dtype: Any) -> np.ndarray | None:
    """A tensor (any device/dtype) or array as a numpy array of ``dtype``."""
    if t is None:
        return None
    if not isinstance(t, np.ndarray):
        t = t.detach()
        if t.dtype.is_floating_point and dtype is np.float32:
            t = t.float()
        t = t.cpu().numpy()
    return np.asarray(t, dtype=dtype)


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    """``a`` with each row ascending (sorted only if it is not already)."""
    if a.shape[1] > 1 and not bool(np.all(a[:, 1:] > a[:, :-1])):
        a = np.sort(a, axis=1)
    return a


def _hist_quantile(hist: np.ndarray, q: float, vmax: float) -> float:
    """Quantile from the log histogram: geometric middle of the bin holding it (capped at max)."""
    cum = np.cumsum(hist)
    target = q * cum[-1]
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, len(hist) - 1)
    if b == 0:
        value = 0.0 if vmax <= _MAG_EDGES[0] else float(_MAG_EDGES[0])
    elif b >= len(_MAG_EDGES):
        value = float(vmax)
    else:
        value = float(math.sqrt(_MAG_EDGES[b - 1] * _MAG_EDGES[b]))
    return min(value, float(vmax))


@dataclass
class _LayerTrace:
    num_heads: int
    lengths: list[int] = field(default_factory=list)  # logical_length per event
    # per event: ("r", ranks [H, E]) or ("p", positions [H, E])
    items: list[tuple[str, np.ndarray]] = field(default_factory=list)
    n_evicted: int = 0
    kept_mag: _MagStats = field(default_factory=_MagStats)
    evicted_mag: _MagStats = field(default_factory=_MagStats)
    held: np.ndarray | None = None  # held count per head after the last event (replay check)
    last_length: int | None = None
    consistent: bool = True


class RowTrace:
    """Everything recorded for one batch row (one sample)."""

    def __init__(self, level: str, num_layers: int, num_kv_heads: int, prompt_length: int, residual: int):
        self.level = level
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.prompt_length = int(prompt_length)
        self.residual = int(residual)
        #: Decode steps that wrote KV (fed tokens: generated tokens - 1), set by
        #: :meth:`TraceRecorder.finish`; None: unknown (readers then use the last event's step).
        self.n_steps: int | None = None
        self.layers = [_LayerTrace(num_kv_heads) for _ in range(num_layers)]

    # -- ingestion --------------------------------------------------------------------------
    def add(self, ev: EvictionEvent) -> None:
        if not 0 <= ev.layer < self.num_layers:
            raise ValueError(f"event layer {ev.layer} outside [0, {self.num_layers})")
        if int(ev.prompt_length) != self.prompt_length or int(ev.residual) != self.residual:
            raise ValueError("events of one row disagree on prompt_length/residual")
        lt = self.layers[ev.layer]
        L = int(ev.logical_length)
        # numpy right away (torch's CPU kernels for these tiny ops are slower and thread-bound)
        kept = _to_numpy(ev.kept_positions, np.int64)
        evicted = _to_numpy(ev.evicted_positions, np.int64)
        if kept.ndim != 2 or evicted.ndim != 2:
            raise ValueError("kept/evicted positions must be [H_kv, n] tensors")
        n_heads, n_kept = kept.shape
        n_ev = evicted.shape[1]
        if n_heads != self.num_kv_heads or evicted.shape[0] != n_heads:
            raise ValueError(f"event has {n_heads} KV heads, recorder expects {self.num_kv_heads}")
        lt.n_evicted += n_heads * n_ev
        lt.kept_mag.add(_to_numpy(ev.kept_magnitude, np.float32))
        lt.evicted_mag.add(_to_numpy(ev.evicted_magnitude, np.float32))
        lt.lengths.append(L)
        if self.level != "full":
            return

        # Replay check: the candidates must be exactly what the layer held minus the window.
        if lt.consistent:
            if lt.last_length is None:
                held_before = np.full(n_heads, L, dtype=np.int64)
                ok = True
            else:
                held_before = lt.held + (L - lt.last_length)
                ok = L > lt.last_length
            ok = ok and bool(np.all(held_before - self.residual == n_kept + n_ev))
            if ok and n_kept + n_ev > 0:
                both = [a for a in (kept, evicted) if a.size]
                ok = max(int(a.max()) for a in both) < L - self.residual and min(int(a.min()) for a in both) >= 0
            if not ok:
                lt.consistent = False
        lt.last_length = L
        lt.held = np.full(n_heads, n_kept + self.residual, dtype=np.int64)

        evicted = _sorted_rows(evicted)
        if lt.consistent and n_ev:
            kept = _sorted_rows(kept)
            # rank among kept ∪ evicted = (#kept below) + (#evicted below); one searchsorted for
            # all heads by lifting each head's values into its own range.
            lift = (np.arange(n_heads, dtype=np.int64) * (L + 1))[:, None]
            below = np.searchsorted((kept + lift).ravel(), (evicted + lift).ravel()).reshape(n_heads, n_ev)
            below -= (np.arange(n_heads, dtype=np.int64) * n_kept)[:, None]
            arr = below + np.arange(n_ev, dtype=np.int64)[None, :]
            kind, limit = "r", n_kept + n_ev
        elif lt.consistent:
            arr, kind, limit = evicted, "r", 0
        else:
            arr, kind, limit = evicted, "p", L
        dtype = np.uint16 if limit <= np.iinfo(np.uint16).max else np.int64
        lt.items.append((kind, np.ascontiguousarray(arr, dtype=dtype)))

    # -- outputs ----------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Eviction events over all layers (one per layer per eviction round)."""
        return sum(len(lt.lengths) for lt in self.layers)

    @property
    def n_rounds(self) -> int:
        """Eviction rounds (the most events any layer saw)."""
        return max((len(lt.lengths) for lt in self.layers), default=0)

    @property
    def n_evicted(self) -> int:
        """Evicted positions summed over layers and heads."""
        return sum(lt.n_evicted for lt in self.layers)

    def summary(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "prompt_length": self.prompt_length,
            "residual": self.residual,
            "n_steps": self.n_steps,
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "n_rounds": self.n_rounds,
            "n_events": self.n_events,
            "n_evicted": self.n_evicted,
            "layers": [
                {
                    "layer": i,
                    "n_events": len(lt.lengths),
                    "n_evicted": lt.n_evicted,
                    "kept_magnitude": lt.kept_mag.stats(),
                    "evicted_magnitude": lt.evicted_mag.stats(),
                }
                for i, lt in enumerate(self.layers)
            ],
        }

    def to_record(self) -> dict[str, Any]:
        """Keyword arguments for ``Store.save_trace(sample_id, **record)``."""
        if self.level == "full":
            data = encode(self)
            encoding = _peek_header(data)["encoding"]
        else:
            data, encoding = b"", SUMMARY_ENCODING
        return {
            "level": self.level,
            "encoding": encoding,
            "data": data,
            "n_events": self.n_events,
            "n_evicted": self.n_evicted,
            "meta": self.summary(),
        }


class TraceRecorder:
    """A sink for the cache's eviction events, collecting one :class:`RowTrace` per batch row.

    ``level``: "off" (ignores events), "summary" or "full". Tensors are turned into numpy as soon
    as an event arrives and reduced to small arrays (ranks, histograms); no tensor is kept.
    """

    def __init__(self, level: str, num_layers: int, num_kv_heads: int):
        if level not in LEVELS:
            raise ValueError(f"trace level must be one of {LEVELS}, not {level!r}")
        self.level = level
        self.num_layers = int(num_layers)
        self.num_kv_heads = int(num_kv_heads)
        self.rows: dict[int, RowTrace] = {}

    def __call__(self, event: EvictionEvent) -> None:
        if self.level == "off":
            return
        rt = self.rows.get(event.row)
        if rt is None:
            rt = self.rows[event.row] = RowTrace(
                self.level, self.num_layers, self.num_kv_heads, event.prompt_length, event.residual
            )
        rt.add(event)

    @property
    def enabled(self) -> bool:
        return self.level != "off"

    def row(self, row: int) -> RowTrace | None:
        return self.rows.get(row)

    def finish(self, row: int, new_tokens: int, *, prompt_length: int | None = None,
               residual: int | None = None) -> RowTrace | None:
        """Record that a row finished after generating ``new_tokens`` tokens. Its last decode step
        is ``new_tokens - 1``: the last generated token is never fed back, so its KV is never
        written. Creates an empty trace for a row that never evicted when ``prompt_length`` is
        given. Returns the row's trace (or None)."""
        rt = self.rows.get(row)
        if rt is None:
            if self.level == "off" or prompt_length is None:
                return None
            rt = self.rows[row] = RowTrace(
                self.level, self.num_layers, self.num_kv_heads, prompt_length, residual or 0
            )
        last_event = max((lt.lengths[-1] for lt in rt.layers if lt.lengths), default=rt.prompt_length)
        rt.n_steps = max(int(new_tokens) - 1, last_event - rt.prompt_length, 0)
        return rt

    def record_for(self, row: int, *, new_tokens: int | None = None, prompt_length: int | None = None,
                   residual: int | None = None) -> dict[str, Any] | None:
        """``Store.save_trace`` keyword arguments for a row (None when off or nothing known)."""
        if self.level == "off":
            return None
        if new_tokens is not None:
            rt = self.finish(row, new_tokens, prompt_length=prompt_length, residual=residual)
        else:
            rt = self.rows.get(row)
        return rt.to_record() if rt is not None else None

    def reset(self) -> None:
        self.rows.clear()


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------
def _replay_positions(prompt_length: int, residual: int, lengths: list[int],
                      rank_items: list[np.ndarray], head: int) -> list[np.ndarray]:
    """Turn one head's per-event ranks into evicted positions by replaying the held set."""
    held = np.arange(prompt_length, dtype=np.int64)
    prev = prompt_length
    out = []
    for L, ranks in zip(lengths, rank_items, strict=True):
        if L > prev:
            held = np.concatenate([held, np.arange(prev, L, dtype=np.int64)])
            prev = L
        r = ranks[head].astype(np.int64)
        out.append(held[r])
        if r.size:
            held = np.delete(held, r)
    return out


def encode(row_trace: RowTrace) -> bytes:
    """The compact ``full`` encoding of one row's trace (see the module docstring)."""
    if row_trace.level != "full":
        raise ValueError("only a 'full' trace has an eviction stream to encode")
    rt = row_trace
    mode = "ranks" if all(lt.consistent for lt in rt.layers) else "positions"
    events_parts = []
    layer_events = []
    streams: list[bytes] = []
    n_evicted = 0
    for lt in rt.layers:
        lengths = np.asarray(lt.lengths, dtype=np.int64)
        layer_events.append(int(lengths.size))
        if lengths.size:
            d = np.empty_like(lengths)
            d[0] = lengths[0] - rt.prompt_length
            d[1:] = np.diff(lengths)
            if d.min() < 0:
                raise ValueError("events of a layer must come in increasing logical_length")
            events_parts.append(varint_encode(d))
        if mode == "positions" and lt.items:
            # Positions for all events: rank items of the consistent prefix are replayed.
            n_rank = next((i for i, (k, _) in enumerate(lt.items) if k != "r"), len(lt.items))
            rank_items = [a for _, a in lt.items[:n_rank]]
        for h in range(rt.num_kv_heads):
            if mode == "ranks":
                per_event = [a[h] for _, a in lt.items]
            else:
                per_event = (
                    _replay_positions(rt.prompt_length, rt.residual, lt.lengths[:n_rank], rank_items, h)
                    if lt.items and n_rank else []
                )
                per_event += [a[h].astype(np.int64) for _, a in lt.items[n_rank:]] if lt.items else []
            counts = np.array([a.size for a in per_event], dtype=np.int64)
            n_evicted += int(counts.sum())
            gaps = [_gaps(np.asarray(a, dtype=np.int64)) for a in per_event]
            payload = varint_encode(counts) + varint_encode(np.concatenate(gaps) if gaps else np.zeros(0, np.int64))
            streams.append(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS))
    events_blob = zlib.compress(b"".join(events_parts), 9)
    offsets = []
    pos = len(events_blob)
    for s in streams:
        offsets.append(pos)
        pos += len(s)
    offsets.append(pos)
    header = {
        "encoding": TRACE_ENCODING if mode == "ranks" else POSITIONS_ENCODING,
        "codec": _CODEC,
        "prompt_length": rt.prompt_length,
        "residual": rt.residual,
        "n_steps": rt.n_steps,
        "num_layers": rt.num_layers,
        "num_kv_heads": rt.num_kv_heads,
        "n_evicted": n_evicted,
        "layer_events": layer_events,
        "events_nbytes": len(events_blob),
        "stream_offsets": offsets,
    }
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_MAGIC, bytes([_FORMAT_VERSION]), struct.pack("<I", len(hbytes)), hbytes, events_blob, *streams])


def _peek_header(blob: bytes) -> dict[str, Any]:
    if len(blob) < 9 or blob[:4] != _MAGIC:
        raise ValueError("not a vase eviction trace (bad magic)")
    if blob[4] != _FORMAT_VERSION:
        raise ValueError(f"unsupported trace format version {blob[4]}")
    (hlen,) = struct.unpack_from("<I", blob, 5)
    header = json.loads(bytes(blob[9 : 9 + hlen]))
    header["_body"] = 9 + hlen
    return header


# ----------------------------------------------------------------------------------------------
# Decoding and queries
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timeline:
    """One (layer, head)'s evictions: event ``steps`` [E], and the evicted positions of event i
    in ``positions[offsets[i]:offsets[i + 1]]`` (ascending within an event)."""

    steps: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray

    def evicted(self, i: int) -> np.ndarray:
        return self.positions[self.offsets[i] : self.offsets[i + 1]]

    def evicted_by(self, step: int) -> np.ndarray:
        """Positions evicted by events with step <= ``step``."""
        k = int(np.searchsorted(self.steps, step, side="right"))
        return self.positions[: self.offsets[k]]


@dataclass(frozen=True)
class SurvivalMatrix:
    """Fraction kept per (position bin, decode-step bin); NaN where nothing was written yet."""

    values: np.ndarray  # [n_position_bins, n_step_bins]
    position_edges: np.ndarray  # [n_position_bins + 1] bin i covers [edges[i], edges[i+1])
    step_edges: np.ndarray  # [n_step_bins + 1]

    def to_dict(self) -> dict[str, Any]:
        vals = [[None if not np.isfinite(x) else float(x) for x in row] for row in self.values]
        return {
            "values": vals,
            "position_edges": self.position_edges.tolist(),
            "step_edges": self.step_edges.tolist(),
        }


class TraceReader:
    """A decoded view of a ``full`` trace blob; decodes (and caches) one stream at a time."""

    def __init__(self, blob: bytes):
        self.blob = blob if isinstance(blob, (bytes, memoryview)) else bytes(blob)
        h = _peek_header(self.blob)
        if h["encoding"] not in (TRACE_ENCODING, POSITIONS_ENCODING):
            raise ValueError(f"unknown trace encoding {h['encoding']!r}")
        self.header = h
        self.encoding: str = h["encoding"]
        self.prompt_length: int = h["prompt_length"]
        self.residual: int = h["residual"]
        self.num_layers: int = h["num_layers"]
        self.num_kv_heads: int = h["num_kv_heads"]
        self.n_evicted: int = h["n_evicted"]
        self._body = h["_body"]
        self._offsets = h["stream_offsets"]
        ev = zlib.decompress(bytes(self.blob[self._body : self._body + h["events_nbytes"]]))
        gaps = varint_decode(ev)
        counts = np.asarray(h["layer_events"], dtype=np.int64)
        self.layer_lengths: list[np.ndarray] = []
        start = 0
        for n in counts:
            d = gaps[start : start + n]
            self.layer_lengths.append(self.prompt_length + np.cumsum(d))
            start += n
        last = max((int(x[-1]) for x in self.layer_lengths if x.size), default=self.prompt_length)
        #: Decode steps of the sample (recorded, else the last event's step).
        self.n_steps: int = h["n_steps"] if h["n_steps"] is not None else last - self.prompt_length
        self._cache: dict[tuple[int, int], Timeline] = {}

    @property
    def nbytes(self) -> int:
        return len(self.blob)

    @property
    def bytes_per_evicted_position(self) -> float:
        return len(self.blob) / self.n_evicted if self.n_evicted else 0.0

    def _check(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.num_layers and 0 <= head < self.num_kv_heads):
            raise IndexError(f"(layer {layer}, head {head}) outside {self.num_layers} x {self.num_kv_heads}")

    def timeline(self, layer: int, head: int) -> Timeline:
        """Decode one (layer, head) stream (cached)."""
        self._check(layer, head)
        key = (layer, head)
        tl = self._cache.get(key)
        if tl is not None:
            return tl
        i = layer * self.num_kv_heads + head
        a, b = self._body + self._offsets[i], self._body + self._offsets[i + 1]
        payload = lzma.decompress(bytes(self.blob[a:b]), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        values = varint_decode(payload)
        lengths = self.layer_lengths[layer]
        n_ev = lengths.size
        counts = values[:n_ev]
        vals = _ungap_segments(values[n_ev:], counts)
        offsets = np.zeros(n_ev + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if self.encoding == TRACE_ENCODING:
            positions = np.empty_like(vals)
            held = np.arange(self.prompt_length, dtype=np.int64)
            prev = self.prompt_length
            for e in range(n_ev):
                L = int(lengths[e])
                if L > prev:
                    held = np.concatenate([held, np.arange(prev, L, dtype=np.int64)])
                    prev = L
                r = vals[offsets[e] : offsets[e + 1]]
                if r.size:
                    positions[offsets[e] : offsets[e + 1]] = held[r]
                    keep = np.ones(held.size, dtype=bool)
                    keep[r] = False
                    held = held[keep]
        else:
            positions = vals
        tl = Timeline(steps=lengths - self.prompt_length, offsets=offsets, positions=positions)
        self._cache[key] = tl
        return tl

    # -- queries ------------------------------------------------------------------------------
    def held_positions(self, layer: int, head: int, step: int) -> np.ndarray:
        """Original positions (ascending) that (layer, head) held after decode step ``step``
        (0 = right after the prompt). Steps past the end of the sample are clamped to it."""
        if step < 0:
            raise ValueError("step must be >= 0")
        step = min(int(step), self.n_steps)
        tl = self.timeline(layer, head)
        end = self.prompt_length + step
        mask = np.ones(end, dtype=bool)
        mask[tl.evicted_by(step)] = False
        return np.flatnonzero(mask)

    def eviction_step(self, layer: int, head: int, position: int) -> int | None:
        """The decode step whose eviction removed ``position`` from (layer, head); None if never."""
        tl = self.timeline(layer, head)
        hits = np.flatnonzero(tl.positions == int(position))
        if hits.size == 0:
            return None
        e = int(np.searchsorted(tl.offsets, hits[0], side="right")) - 1
        return int(tl.steps[e])

    def eviction_steps(self, layer: int, head: int) -> np.ndarray:
        """Per original position (``prompt_length + n_steps`` of them) the step it was evicted at,
        or -1 if it never was."""
        tl = self.timeline(layer, head)
        n = self.prompt_length + self.n_steps
        n = max(n, int(tl.positions.max()) + 1 if tl.positions.size else 0)
        out = np.full(n, -1, dtype=np.int64)
        out[tl.positions] = np.repeat(tl.steps, np.diff(tl.offsets))
        return out

    def eviction_timeline(self, layer: int, head: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(event steps [E], evicted positions of each event)."""
        tl = self.timeline(layer, head)
        return tl.steps.copy(), [tl.evicted(i) for i in range(tl.steps.size)]

    def survival_matrix(self, layer: int, head: int, max_positions: int = 256, max_steps: int = 256) -> SurvivalMatrix:
        """Down-sampled kept/evicted picture of (layer, head) for a heatmap.

        Rows bin the original positions ``[0, prompt_length + n_steps)``, columns bin the decode
        steps ``[0, n_steps]``. A cell is the fraction of (position, step) pairs in it where the
        position was held, among those where it had been written; NaN if none had been written.
        """
        P, S = self.prompt_length, self.n_steps
        n_pos = P + S
        death = self.eviction_steps(layer, head)[:n_pos] if n_pos else np.zeros(0, np.int64)
        if death.size < n_pos:
            death = np.concatenate([death, np.full(n_pos - death.size, -1, np.int64)])
        pos_edges = np.unique(np.linspace(0, n_pos, max(1, min(max_positions, n_pos)) + 1).round().astype(np.int64))
        step_edges = np.unique(np.linspace(0, S + 1, max(1, min(max_steps, S + 1)) + 1).round().astype(np.int64))
        n_pb, n_sb = pos_edges.size - 1, step_edges.size - 1
        if n_pos == 0 or n_pb <= 0:
            return SurvivalMatrix(np.zeros((0, max(n_sb, 0))), pos_edges, step_edges)
        p = np.arange(n_pos, dtype=np.int64)
        birth = np.where(p < P, 0, p - P + 1)
        end = np.where(death < 0, S + 1, death)
        rows = np.searchsorted(pos_edges, p, side="right") - 1
        kept = _overlap_sums(rows, birth, end, step_edges, n_pb)
        written = _overlap_sums(rows, birth, np.full(n_pos, S + 1, np.int64), step_edges, n_pb)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(written > 0, kept / np.where(written > 0, written, 1), np.nan)
        return SurvivalMatrix(values, pos_edges, step_edges)


def _overlap_sums(rows: np.ndarray, start: np.ndarray, end: np.ndarray, edges: np.ndarray, n_rows: int) -> np.ndarray:
    """M[r, j] = sum over items i with rows[i] == r of |[start_i, end_i) ∩ [edges[j], edges[j+1])|."""
    nb = edges.size - 1
    valid = end > start
    rows, start, end = rows[valid], start[valid], end[valid]
    js = np.searchsorted(edges, start, side="right") - 1
    je = np.searchsorted(edges, end - 1, side="right") - 1
    size = n_rows * (nb + 1)
    same = js == je
    m = np.bincount(rows[same] * (nb + 1) + js[same], weights=(end - start)[same], minlength=size)
    d = ~same
    rd, jsd, jed = rows[d], js[d], je[d]
    m += np.bincount(rd * (nb + 1) + jsd, weights=edges[jsd + 1] - start[d], minlength=size)
    m += np.bincount(rd * (nb + 1) + jed, weights=end[d] - edges[jed], minlength=size)
    # bins strictly between js and je are fully covered: difference array of counts
    diff = np.bincount(rd * (nb + 1) + jsd + 1, minlength=size) - np.bincount(rd * (nb + 1) + jed, minlength=size)
    full = np.cumsum(diff.reshape(n_rows, nb + 1), axis=1)[:, :nb]
    widths = np.diff(edges).astype(np.float64)
    return m.reshape(n_rows, nb + 1)[:, :nb] + full * widths


def decode(blob: bytes) -> TraceReader:
    """Parse a ``full`` trace blob; streams are decoded lazily, one (layer, head) at a time."""
    return TraceReader(blob)


def _reader(blob: bytes | TraceReader) -> TraceReader:
    return blob if isinstance(blob, TraceReader) else TraceReader(blob)


def held_positions(blob: bytes | TraceReader, layer: int, head: int, step: int) -> np.ndarray:
    """What did ``layer``, ``head`` hold after decode step ``step``? (ascending positions)"""
    return _reader(blob).held_positions(layer, head, step)


def eviction_step(blob: bytes | TraceReader, layer: int, head: int, position: int) -> int | None:
    """When was ``position`` evicted from ``layer``, ``head``? (decode step, None if never)"""
    return _reader(blob).eviction_step(layer, head, position)


def eviction_timeline(blob: bytes | TraceReader, layer: int, head: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(event steps, evicted positions per event) of ``layer``, ``head``."""
    return _reader(blob).eviction_timeline(layer, head)


def survival_matrix(blob: bytes | TraceReader, layer: int, head: int, max_positions: int = 256,
                    max_steps: int = 256) -> SurvivalMatrix:
    """Down-sampled kept-fraction heatmap of ``layer``, ``head`` (see :meth:`TraceReader.survival_matrix`)."""
    return _reader(blob).survival_matrix(layer, head, max_positions, max_steps)


def bytes_per_evicted_position(blob: bytes | TraceReader) -> float:
    """Size of the whole blob (header included) per evicted position (over all layers and heads)."""
    return _reader(blob).bytes_per_evicted_position


def trace_info(blob: bytes) -> dict[str, Any]:
    """The blob's header (geometry, counts, encoding), without decoding any stream."""
    h = _peek_header(blob)
    return {k: v for k, v in h.items() if not k.startswith("_") and k != "stream_offsets"}


__all__ = [
    "EvictionEvent",
    "LEVELS",
    "POSITIONS_ENCODING",
    "RowTrace",
    "SUMMARY_ENCODING",
    "SurvivalMatrix",
    "TRACE_ENCODING",
    "Timeline",
    "TraceReader",
    "TraceRecorder",
    "bytes_per_evicted_position",
    "decode",
    "encode",
    "eviction_step",
    "eviction_timeline",
    "held_positions",
    "magnitude_histogram",
    "survival_matrix",
    "trace_info",
    "varint_decode",
    "varint_encode",
]
