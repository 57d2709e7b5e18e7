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

Modules: :mod:`.format` (levels, encodings, the histogram grid, varints), :mod:`.record` (events
and the recorder), :mod:`.codec` (the ``full`` encoding and its queries) and :mod:`.analysis`
(questions about a decoded trace: survival by age, overlap of two caches, histogram re-binning).

This package never imports torch (events' tensors are read through ``.cpu().numpy()``), so readers
(API, dashboard) stay light.
"""

from __future__ import annotations

from .codec import (
    SurvivalMatrix, Timeline, TraceReader, bytes_per_evicted_position, decode, encode, eviction_step,
    eviction_timeline, held_positions, survival_matrix, trace_info,
)
from .format import (
    POSITIONS_ENCODING, RECORDED_LEVELS, SUMMARY_ENCODING, TRACE_ENCODING, TRACE_LEVELS, varint_decode, varint_encode,
)
from .record import EvictionEvent, RowTrace, TraceRecorder, magnitude_histogram

__all__ = [
    "EvictionEvent",
    "POSITIONS_ENCODING",
    "RECORDED_LEVELS",
    "RowTrace",
    "SUMMARY_ENCODING",
    "SurvivalMatrix",
    "TRACE_ENCODING",
    "TRACE_LEVELS",
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
