"""Recording: the cache's eviction events, reduced per batch row to a summary and (``full``)
to per-event ranks, as soon as they arrive."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .codec import encode, peek_header
from .format import MAG_EDGES, MAG_NBINS, SUMMARY_ENCODING, TRACE_LEVELS

if TYPE_CHECKING:  # pragma: no cover
    import torch


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


class _MagStats:
    """Running count/sum/max and a log histogram of value magnitudes."""

    __slots__ = ("n", "total", "max", "hist")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.max = -math.inf
        self.hist = np.zeros(MAG_NBINS, dtype=np.int64)

    def add(self, mag: np.ndarray | None) -> None:
        if mag is None or mag.size == 0:
            return
        m = mag.reshape(-1)
        if not np.isfinite(m).all():  # NaN/inf magnitudes carry no statistics
            m = m[np.isfinite(m)]
            if m.size == 0:
                return
        self.hist += np.bincount(np.searchsorted(MAG_EDGES, m), minlength=MAG_NBINS)
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
    if counts.ndim != 1 or first < 0 or first + counts.size > MAG_NBINS or (counts < 0).any():
        raise ValueError(f"malformed magnitude histogram (first_bin {first}, {counts.size} counts)")
    step = MAG_EDGES[1] / MAG_EDGES[0]
    bounds = np.concatenate([[MAG_EDGES[0] / step], MAG_EDGES, [MAG_EDGES[-1] * step]])
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
        value = 0.0 if vmax <= MAG_EDGES[0] else float(MAG_EDGES[0])
    elif b >= len(MAG_EDGES):
        value = float(vmax)
    else:
        value = float(math.sqrt(MAG_EDGES[b - 1] * MAG_EDGES[b]))
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
            encoding = peek_header(data)["encoding"]
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
        if level not in TRACE_LEVELS:
            raise ValueError(f"trace level must be one of {TRACE_LEVELS}, not {level!r}")
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
