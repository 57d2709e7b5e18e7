"""Questions about a decoded trace, beyond what one (layer, head) held when: how long tokens
survive (Kaplan-Meier by age, prompt vs generated), how old the evicted tokens were, how alike two
samples' caches are over time, and the value-magnitude histograms on a coarser grid.

Everything takes a :class:`~vase.traces.codec.TraceReader` and returns numpy arrays (no pandas):
the dashboard draws them, the API could serve them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec import TraceReader
from .format import MAG_BINS_PER_DECADE, MAG_MAX_EXP, MAG_MIN_EXP


def stride(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices spread evenly over range(n) (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def kaplan_meier(durations: np.ndarray, observed: np.ndarray, max_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit estimate of P(a token survives more than ``age`` steps): (ages, survival),
    down-sampled to at most ``max_points`` ages. ``observed`` is False where the token was still
    held at the end (censored)."""
    d = np.asarray(durations, dtype=np.int64)
    if d.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    T = int(d.max()) + 1
    leaving = np.bincount(d, minlength=T)
    at_risk = d.size - np.concatenate([[0], np.cumsum(leaving)[:-1]])
    deaths = np.bincount(d[np.asarray(observed, bool)], minlength=T)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(at_risk > 0, deaths / np.maximum(at_risk, 1), 0.0)
    surv = np.cumprod(1.0 - hazard)
    pick = stride(T, max_points)
    return pick, surv[pick]


@dataclass(frozen=True)
class Lifetimes:
    """Every original position of one (layer, head): when it was written and when it was evicted.

    Position ``p`` is written at decode step 0 (a prompt token) or ``p - prompt_length + 1``."""

    prompt_length: int
    n_steps: int
    birth: np.ndarray  # [P + S] decode step the position was written
    death: np.ndarray  # [P + S] decode step it was evicted at, -1 if never

    @property
    def positions(self) -> np.ndarray:
        return np.arange(self.birth.size, dtype=np.int64)

    @property
    def is_prompt(self) -> np.ndarray:
        return self.positions < self.prompt_length

    @property
    def evicted(self) -> np.ndarray:
        return self.death >= 0

    @property
    def lifetime(self) -> np.ndarray:
        """Steps each position stayed: until its eviction, or until the end of the sample."""
        return np.where(self.evicted, self.death - self.birth, self.n_steps - self.birth)

    def survival(self, max_points: int = 400) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Kaplan-Meier survival by age for the ``prompt`` and the ``generated`` tokens (an origin
        without tokens is left out)."""
        durations = self.lifetime.clip(min=0)
        out = {}
        for origin, sel in (("prompt", self.is_prompt), ("generated", ~self.is_prompt)):
            ages, surv = kaplan_meier(durations[sel], self.evicted[sel], max_points)
            if ages.size:
                out[origin] = (ages, surv)
        return out


def written_at(positions: np.ndarray, prompt_length: int) -> np.ndarray:
    """The decode step each original position was written at (0 for the prompt)."""
    positions = np.asarray(positions, dtype=np.int64)
    return np.where(positions < prompt_length, 0, positions - prompt_length + 1)


def lifetimes(reader: TraceReader, layer: int, head: int) -> Lifetimes:
    """:class:`Lifetimes` of (layer, head) over the sample's ``prompt_length + n_steps`` positions."""
    P, S = reader.prompt_length, reader.n_steps
    n_pos = P + S
    death = reader.eviction_steps(layer, head)[:n_pos]
    if death.size < n_pos:
        death = np.concatenate([death, np.full(n_pos - death.size, -1, np.int64)])
    return Lifetimes(P, S, written_at(np.arange(n_pos), P), death)


@dataclass(frozen=True)
class Evictions:
    """Every eviction of one (layer, head), one entry per evicted position, in event order."""

    steps: np.ndarray  # [E] decode step of the eviction
    positions: np.ndarray  # [E] evicted original position
    ages: np.ndarray  # [E] steps since the position was written
    event_steps: np.ndarray  # [events] step of each eviction event
    event_counts: np.ndarray  # [events] positions it evicted

    def median_age_per_event(self) -> np.ndarray:
        """Median age of the positions each event evicted (NaN for an event that evicted none)."""
        ends = np.cumsum(self.event_counts)
        starts = ends - self.event_counts
        return np.array([np.median(self.ages[a:b]) if b > a else np.nan for a, b in zip(starts, ends, strict=True)])


def evictions(reader: TraceReader, layer: int, head: int) -> Evictions:
    tl = reader.timeline(layer, head)
    counts = np.diff(tl.offsets)
    steps = np.repeat(tl.steps, counts)
    return Evictions(steps, tl.positions, steps - written_at(tl.positions, reader.prompt_length), tl.steps, counts)


def held_overlap(a: TraceReader, b: TraceReader, layer: int, head: int, points: int = 60) -> dict[str, np.ndarray]:
    """How alike two samples' caches are over time for (layer, head): at up to ``points`` decode
    steps over the shorter sample, the positions both held (``both``), only ``a``, only ``b``, and
    the Jaccard index (1 where neither holds anything). The samples must share a prompt length
    and have (layer, head) (ValueError otherwise)."""
    if a.prompt_length != b.prompt_length:
        raise ValueError(f"the samples do not share a prompt ({a.prompt_length} vs {b.prompt_length} prompt tokens)")
    if not (layer < min(a.num_layers, b.num_layers) and head < min(a.num_kv_heads, b.num_kv_heads)):
        raise ValueError(f"the traces have different layer/head geometry (no layer {layer}, KV head {head} in both)")
    P, S = a.prompt_length, min(a.n_steps, b.n_steps)
    n = P + S
    da, db = a.eviction_steps(layer, head), b.eviction_steps(layer, head)
    da = np.concatenate([da, np.full(max(0, n - da.size), -1)])[:n]
    db = np.concatenate([db, np.full(max(0, n - db.size), -1)])[:n]
    steps = np.unique(np.linspace(0, S, min(points, S + 1)).round().astype(int))
    out = {k: np.zeros(steps.size, dtype=np.int64) for k in ("both", "only_a", "only_b")}
    for i, t in enumerate(steps):
        end = P + int(t)
        ha = (da[:end] < 0) | (da[:end] > t)
        hb = (db[:end] < 0) | (db[:end] > t)
        out["both"][i], out["only_a"][i], out["only_b"][i] = (ha & hb).sum(), (ha & ~hb).sum(), (~ha & hb).sum()
    union = out["both"] + out["only_a"] + out["only_b"]
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, out["both"] / np.maximum(union, 1), 1.0)
    return {"step": steps.astype(np.int64), **out, "jaccard": jaccard}


def coarser_bins(bin_lo: np.ndarray, bin_hi: np.ndarray, per_decade: int) -> tuple[np.ndarray, np.ndarray]:
    """The (lo, hi] edges each recorded value-magnitude bin falls into on a grid of ``per_decade``
    bins per decade (a divisor of ``MAG_BINS_PER_DECADE``), aligned with the recorded one; the two
    open-ended bins keep their edges. Bins that share new edges are to be summed."""
    if per_decade < 1 or MAG_BINS_PER_DECADE % per_decade:
        raise ValueError(f"per_decade must divide {MAG_BINS_PER_DECADE}, got {per_decade}")
    factor = MAG_BINS_PER_DECADE // per_decade
    n_regular = (MAG_MAX_EXP - MAG_MIN_EXP) * MAG_BINS_PER_DECADE
    bin_lo, bin_hi = np.asarray(bin_lo, float), np.asarray(bin_hi, float)
    k = np.rint((np.log10(bin_hi) - MAG_MIN_EXP) * MAG_BINS_PER_DECADE).astype(np.int64)  # regular: 1..n
    regular = (k >= 1) & (k <= n_regular)
    g = (k - 1) // factor
    lo = np.where(regular, 10.0 ** (g * factor / MAG_BINS_PER_DECADE + MAG_MIN_EXP), bin_lo)
    hi = np.where(
        regular, 10.0 ** (np.minimum((g + 1) * factor, n_regular) / MAG_BINS_PER_DECADE + MAG_MIN_EXP), bin_hi
    )
    return lo, hi


__all__ = [
    "Evictions",
    "Lifetimes",
    "coarser_bins",
    "evictions",
    "held_overlap",
    "kaplan_meier",
    "lifetimes",
    "stride",
    "written_at",
]
