"""The ``full`` encoding of a row's trace (see the package docstring) and the queries on a blob."""

from __future__ import annotations

import json
import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .format import (
    CODEC,
    FORMAT_VERSION,
    LZMA_FILTERS,
    MAGIC,
    POSITIONS_ENCODING,
    TRACE_ENCODING,
    from_gap_segments,
    to_gaps,
    varint_decode,
    varint_encode,
)

if TYPE_CHECKING:  # pragma: no cover
    from .record import RowTrace


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
            gaps = [to_gaps(np.asarray(a, dtype=np.int64)) for a in per_event]
            payload = varint_encode(counts) + varint_encode(np.concatenate(gaps) if gaps else np.zeros(0, np.int64))
            streams.append(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS))
    events_blob = zlib.compress(b"".join(events_parts), 9)
    offsets = []
    pos = len(events_blob)
    for s in streams:
        offsets.append(pos)
        pos += len(s)
    offsets.append(pos)
    header = {
        "encoding": TRACE_ENCODING if mode == "ranks" else POSITIONS_ENCODING,
        "codec": CODEC,
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
    return b"".join([MAGIC, bytes([FORMAT_VERSION]), struct.pack("<I", len(hbytes)), hbytes, events_blob, *streams])


def peek_header(blob: bytes) -> dict[str, Any]:
    if len(blob) < 9 or blob[:4] != MAGIC:
        raise ValueError("not a vase eviction trace (bad magic)")
    if blob[4] != FORMAT_VERSION:
        raise ValueError(f"unsupported trace format version {blob[4]}")
    (hlen,) = struct.unpack_from("<I", blob, 5)
    header = json.loads(bytes(blob[9 : 9 + hlen]))
    header["_body"] = 9 + hlen
    return header


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
        h = peek_header(self.blob)
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
        payload = lzma.decompress(bytes(self.blob[a:b]), format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
        values = varint_decode(payload)
        lengths = self.layer_lengths[layer]
        n_ev = lengths.size
        counts = values[:n_ev]
        vals = from_gap_segments(values[n_ev:], counts)
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
    h = peek_header(blob)
    return {k: v for k, v in h.items() if not k.startswith("_") and k != "stream_offsets"}
