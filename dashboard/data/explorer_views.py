"""Explorer views: what one sample's eviction trace says, down-sampled for the page.

A ``full`` trace is decoded one (layer, KV head) stream at a time (:class:`vase.traces.TraceReader`,
cached per sample) and the numbers come from :mod:`vase.traces.analysis`; what reaches the page
is a heatmap of at most a few hundred x a few hundred bins and at most a few thousand scatter
points, never the raw eviction stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from vase.traces import TraceReader, magnitude_histogram
from vase.traces.analysis import coarser_bins, evictions, lifetimes, stride
from vase.traces.analysis import held_overlap as overlap
from vase.traces.format import MAG_BINS_PER_DECADE

from .base import DashboardError, NotFound, database_url, log, query, query_cache, store
from .sample_views import _sample, _token_texts, shown

#: Defaults for down-sampling what the explorer sends to the browser.
HEATMAP_POSITIONS = 200
HEATMAP_STEPS = 240
MAX_SCATTER_POINTS = 6000
MAX_CURVE_POINTS = 400


@query_cache(ttl=60, max_entries=64)
def _trace_meta(url: str, sample_id: int) -> dict[str, Any] | None:
    return query(store(url).get_trace, int(sample_id), with_data=False)


@st.cache_resource(show_spinner=False, max_entries=8)
def _reader(url: str, sample_id: int) -> TraceReader | None:
    trace = query(store(url).get_trace, int(sample_id), with_data=True)
    if trace is None or trace.get("level") != "full" or not trace.get("data"):
        return None
    return TraceReader(trace["data"])


@dataclass(frozen=True)
class TraceInfo:
    level: str  # off | summary | full
    encoding: str | None
    num_layers: int
    num_kv_heads: int
    prompt_length: int
    n_steps: int
    n_events: int
    n_evicted: int
    nbytes: int
    magnitudes: pd.DataFrame  # per layer: kept/evicted n, mean, p50, p99, max
    # per layer: the kept/evicted value-magnitude histograms (HISTOGRAM_COLUMNS), from the first to
    # the last non-empty bin; empty for traces recorded before trace summaries kept histograms
    histograms: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HISTOGRAM_COLUMNS))

    @property
    def has_full(self) -> bool:
        return self.level == "full"

    def histogram(self, layer: int, per_decade: int = MAG_BINS_PER_DECADE) -> pd.DataFrame:
        """The kept and evicted histograms of one layer (HISTOGRAM_COLUMNS; empty when the trace has
        none), re-binned to ``per_decade`` bins per decade (a divisor of 32, the recorded resolution)."""
        h = self.histograms
        if not len(h):
            return h
        h = h[h["layer"] == int(layer)].reset_index(drop=True)
        if h.empty or per_decade >= MAG_BINS_PER_DECADE:
            return h
        return _coarsen(h, int(per_decade))


MAGNITUDE_COLUMNS = ["layer", "group", "n", "mean", "p50", "p99", "max"]
#: A bin holds the magnitudes in (bin_lo, bin_hi]; share = count / the group's tokens in the layer.
#: Bins run over the range the trace saw, empty ones inside it included.
HISTOGRAM_COLUMNS = ["layer", "group", "bin_lo", "bin_hi", "count", "share"]


def _coarsen(h: pd.DataFrame, per_decade: int) -> pd.DataFrame:
    """Merge the recorded bins into ``per_decade`` bins per decade on the same grid
    (:func:`vase.traces.analysis.coarser_bins`); the open-ended bins stay as they are."""
    lo, hi = coarser_bins(h["bin_lo"].to_numpy(float), h["bin_hi"].to_numpy(float), per_decade)
    out = (
        h.assign(bin_lo=lo, bin_hi=hi)
        .groupby(["layer", "group", "bin_lo", "bin_hi"], sort=False, as_index=False)[["count", "share"]]
        .sum()
        .sort_values(["group", "bin_lo"], kind="stable")
        .reset_index(drop=True)
    )
    return out[HISTOGRAM_COLUMNS]


def _histograms(layers: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-layer kept/evicted histograms of a trace summary as one long frame."""
    parts = []
    for layer in layers:
        for group, key in (("kept", "kept_magnitude"), ("evicted", "evicted_magnitude")):
            try:
                lo, hi, counts = magnitude_histogram(layer.get(key))
            except (ValueError, TypeError, AttributeError) as e:
                log.warning("trace layer %s: unreadable %s histogram (%s)", layer.get("layer"), group, e)
                continue
            total = int(counts.sum())
            if total <= 0:
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "layer": layer.get("layer"),
                        "group": group,
                        "bin_lo": lo,
                        "bin_hi": hi,
                        "count": counts,
                        "share": counts / total,
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=HISTOGRAM_COLUMNS)
    return pd.concat(parts, ignore_index=True)[HISTOGRAM_COLUMNS]


def trace_info(sample_id: int) -> TraceInfo:
    """What the sample's trace holds; ``level`` "off" when it has none."""
    meta_row = _trace_meta(database_url(), int(sample_id))
    if meta_row is None:
        return TraceInfo("off", None, 0, 0, 0, 0, 0, 0, 0, pd.DataFrame(columns=MAGNITUDE_COLUMNS))
    meta = meta_row.get("meta") or {}
    mags = []
    for layer in meta.get("layers") or []:
        for group, key in (("kept", "kept_magnitude"), ("evicted", "evicted_magnitude")):
            stats = layer.get(key) or {}
            mags.append(
                {"layer": layer.get("layer"), "group": group, **{k: stats.get(k) for k in MAGNITUDE_COLUMNS[2:]}}
            )
    n_steps = meta.get("n_steps")
    reader = _reader(database_url(), int(sample_id)) if meta_row.get("level") == "full" else None
    if reader is not None:
        n_steps = reader.n_steps
    return TraceInfo(
        level=meta_row.get("level") or "off",
        encoding=meta_row.get("encoding"),
        num_layers=int(meta.get("num_layers") or (reader.num_layers if reader else 0)),
        num_kv_heads=int(meta.get("num_kv_heads") or (reader.num_kv_heads if reader else 0)),
        prompt_length=int(meta.get("prompt_length") or (reader.prompt_length if reader else 0)),
        n_steps=int(n_steps or 0),
        n_events=int(meta_row.get("n_events") or 0),
        n_evicted=int(meta_row.get("n_evicted") or 0),
        nbytes=int(meta_row.get("nbytes") or 0),
        magnitudes=pd.DataFrame(mags, columns=MAGNITUDE_COLUMNS),
        histograms=_histograms(meta.get("layers") or []),
    )


@dataclass
class Explorer:
    """The down-sampled picture of one (layer, KV head) of one sample's trace."""

    sample_id: int
    layer: int
    head: int
    prompt_length: int
    n_steps: int
    residual: int
    # heatmap: fraction kept per (position bin, step bin); NaN = not written yet
    heat: np.ndarray
    position_edges: np.ndarray
    step_edges: np.ndarray
    row_labels: list[str]  # one per position bin: "a–b │ text"
    # survival of each position (down-sampled): position, evicted-at step (-1 never), token text
    life: pd.DataFrame
    # Kaplan-Meier survival by age (steps since the token was written), prompt vs generated tokens
    km: pd.DataFrame
    # eviction timeline (down-sampled): step, position, age, token text
    timeline: pd.DataFrame
    # per event: step, evicted count, median age of the evicted
    events: pd.DataFrame
    held_at_end: int
    n_evicted: int
    loop_step: int | None
    tokens_note: str = ""


def explorer(
    sample_id: int,
    layer: int,
    head: int,
    *,
    max_positions: int = HEATMAP_POSITIONS,
    max_steps: int = HEATMAP_STEPS,
    max_points: int = MAX_SCATTER_POINTS,
) -> Explorer:
    """The cache explorer's data for (layer, KV head) of a sample with a ``full`` trace."""
    return _explorer(
        database_url(), int(sample_id), int(layer), int(head), int(max_positions), int(max_steps), int(max_points)
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def _explorer(
    url: str, sample_id: int, layer: int, head: int, max_positions: int, max_steps: int, max_points: int
) -> Explorer:
    reader = _reader(url, sample_id)
    if reader is None:
        raise NotFound(f"Sample {sample_id} has no full eviction trace (run the bench with `--trace full`).")
    if not (0 <= layer < reader.num_layers and 0 <= head < reader.num_kv_heads):
        raise DashboardError(
            f"Layer {layer} / KV head {head} is outside this trace "
            f"({reader.num_layers} layers x {reader.num_kv_heads} KV heads)."
        )
    P, S = reader.prompt_length, reader.n_steps
    sm = reader.survival_matrix(layer, head, max_positions=max_positions, max_steps=max_steps)
    texts = _token_texts(url, sample_id)
    edges = sm.position_edges
    labels = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        span = f"{a}" if b - a == 1 else f"{a}–{b - 1}"
        snippet = shown(texts.text(int(a), int(b)), 48) if texts.available else ""
        labels.append(f"{span} │ {snippet}" if snippet else span)

    def points(positions: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
        """At most ``max_points`` rows, evenly spread, with each position's origin and token text."""
        pick = stride(positions.size, max_points)
        at = positions[pick]
        return pd.DataFrame({name: values[pick] for name, values in columns.items()}).assign(
            origin=np.where(at < P, "prompt", "generated"),
            text=[shown(texts.at(int(p)), 24) for p in at] if texts.available else "",
        )

    lt = lifetimes(reader, layer, head)
    life = points(lt.positions, position=lt.positions, evicted_at=lt.death, lifetime=lt.lifetime)
    km_parts = [
        pd.DataFrame({"age": ages, "survival": surv, "origin": name})
        for name, (ages, surv) in lt.survival(MAX_CURVE_POINTS).items()
    ]
    km = pd.concat(km_parts, ignore_index=True) if km_parts else pd.DataFrame(columns=["age", "survival", "origin"])

    ev = evictions(reader, layer, head)
    timeline = points(ev.positions, step=ev.steps, position=ev.positions, age=ev.ages)
    events = pd.DataFrame({"step": ev.event_steps, "evicted": ev.event_counts, "median_age": ev.median_age_per_event()})

    smp = _sample(url, sample_id) or {}
    loop_start = smp.get("loop_start")
    n_evicted = int(lt.evicted.sum())
    return Explorer(
        sample_id=sample_id,
        layer=layer,
        head=head,
        prompt_length=P,
        n_steps=S,
        residual=reader.residual,
        heat=sm.values,
        position_edges=sm.position_edges,
        step_edges=sm.step_edges,
        row_labels=labels,
        life=life,
        km=km,
        timeline=timeline,
        events=events,
        held_at_end=int(lt.birth.size - n_evicted),
        n_evicted=n_evicted,
        loop_step=None if loop_start is None else int(loop_start) + 1,
        tokens_note=texts.note if texts.available else (texts.note or "No token text available."),
    )


@dataclass(frozen=True)
class PositionDetail:
    position: int
    step: int
    text: str
    origin: str
    evicted_at: int | None
    context: pd.DataFrame  # position, text, state (held | evicted | not written) at ``step``
    heads: pd.DataFrame  # per KV head of the layer: evicted_at (None if never)


def position_detail(
    sample_id: int, layer: int, head: int, position: int, step: int, radius: int = 24
) -> PositionDetail:
    """The tokens around ``position`` and whether (layer, head) held each of them after ``step``,
    and when every KV head of the layer evicted ``position``."""
    url = database_url()
    reader = _reader(url, int(sample_id))
    if reader is None:
        raise NotFound(f"Sample {sample_id} has no full eviction trace.")
    P, S = reader.prompt_length, reader.n_steps
    n_pos = P + S
    position = int(min(max(0, position), max(0, n_pos - 1)))
    step = int(min(max(0, step), S))
    texts = _token_texts(url, int(sample_id))
    death = reader.eviction_steps(layer, head)
    lo, hi = max(0, position - radius), min(n_pos, position + radius + 1)
    rows = []
    for p in range(lo, hi):
        written = p < P + step
        d = int(death[p]) if p < death.size else -1
        state = "not written" if not written else ("evicted" if 0 <= d <= step else "held")
        rows.append({"position": p, "text": texts.at(p), "state": state, "evicted_at": None if d < 0 else d})
    heads = []
    for h in range(reader.num_kv_heads):
        d = reader.eviction_steps(layer, h)
        v = int(d[position]) if position < d.size else -1
        heads.append({"kv_head": h, "evicted_at": None if v < 0 else v})
    d0 = int(death[position]) if position < death.size else -1
    context = pd.DataFrame(rows, columns=["position", "text", "state", "evicted_at"])
    context["evicted_at"] = context["evicted_at"].astype("Int64")
    heads_frame = pd.DataFrame(heads, columns=["kv_head", "evicted_at"])
    heads_frame["evicted_at"] = heads_frame["evicted_at"].astype("Int64")
    return PositionDetail(
        position=position,
        step=step,
        text=texts.at(position),
        origin="prompt" if position < P else "generated",
        evicted_at=None if d0 < 0 else d0,
        context=context,
        heads=heads_frame,
    )


def held_overlap(sample_a: int, sample_b: int, layer: int, head: int, points: int = 60) -> pd.DataFrame:
    """How alike two samples' caches are over time for (layer, head): per decode step, the
    positions both held, only A, only B, and the Jaccard index. Steps run over the shorter sample."""
    url = database_url()
    ra, rb = _reader(url, int(sample_a)), _reader(url, int(sample_b))
    if ra is None or rb is None:
        raise NotFound("Both samples need a full eviction trace to be compared.")
    try:
        rows = overlap(ra, rb, layer, head, points)
    except ValueError as error:
        raise DashboardError(f"The two caches cannot be compared: {error}.") from error
    return pd.DataFrame(rows, columns=["step", "both", "only_a", "only_b", "jaccard"])
