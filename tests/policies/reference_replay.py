"""Feed a fixed stream of keys, values and post-RoPE queries through one layer of the project's
cache, as the authors' EvictLayer is fed in benchmarks/reference_fixtures.py, and read what each
eviction kept. Shared by that script and tests/policies/test_reference_equivalence.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vase.cache import CacheConfig, EvictionCache

FIXTURE = "reference_eviction.pt"

# The authors' eviction_mode -> (project method, parameters); `n_large` is filled in from the fixture.
# Deterministic modes give identical kept sets; the stochastic ones are compared by frequencies.
DETERMINISTIC = {
    "attn": ("snapkv", {}),
    "attn_rkv": ("rkv", {}),
    "range_attn": ("range-attn", {"n_large": None}),
    "evict_large_range": ("evict-large", {}),
    "cur_fixed_gauss": ("cur-fixed", {}),  # deterministic given the seed of its Gaussian G
    "cur_resample_gauss": ("vase-dkv", {}),  # idem, one G per eviction
    "attn_random": ("attn-random", {"n_large": None}),  # idem, the random reserve
}
STOCHASTIC = {
    "attn_sample": ("attn-sample", {}),
    "range_sink_sample_attn": ("vase", {"n_large": None}),
    "range_sample_attn": ("vase", {"n_large": None, "n_sink": 0}),
    "var_sink_sample_attn": ("vase", {"n_large": None, "metric": "var"}),
    "l2_sink_sample_attn": ("vase", {"n_large": None, "metric": "l2"}),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def method_for(mode: str, n_large: int) -> tuple[str, dict]:
    name, params = {**DETERMINISTIC, **STOCHASTIC}[mode]
    return name, {k: (n_large if v is None else v) for k, v in params.items()}


@dataclass
class Stream:
    """keys/values [T, H, D], queries [T, Hq, D]; the first `prompt` tokens are the prefill."""

    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor
    prompt: int

    def to(self, dtype: torch.dtype) -> Stream:
        return Stream(self.keys.to(dtype), self.values.to(dtype), self.queries.to(dtype), self.prompt)


def _rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """[T, H, D] slice -> [rows, H, T, D], the same for every row."""
    return t.permute(1, 0, 2).unsqueeze(0).expand(rows, -1, -1, -1).contiguous()


def replay(
    stream: Stream, method: str, params: dict, *, budget: int, residual: int, seeds: Sequence[int],
    reference_exact: bool,
) -> list[torch.Tensor]:
    """Kept positions after each eviction, in slot order: one [rows, H, budget - residual] tensor
    per eviction (row i evicts with generator seed seeds[i])."""
    rows = len(seeds)
    config = CacheConfig.build(method, params, budget=budget, residual=residual, reference_exact=reference_exact)
    cache = EvictionCache(config, 1, batch_size=rows, eviction_seeds=list(seeds))
    layer = cache.layers[0]
    p = stream.prompt
    cache.set_prompt_lengths([p] * rows)
    layer.update(_rows(stream.keys[:p], rows), _rows(stream.values[:p], rows))
    layer.record_queries(_rows(stream.queries[:p], rows))
    layer.finish_forward()
    kept: list[torch.Tensor] = []
    for t in range(p, stream.keys.shape[0]):
        layer.update(_rows(stream.keys[t : t + 1], rows), _rows(stream.values[t : t + 1], rows))
        layer.record_queries(_rows(stream.queries[t : t + 1], rows))
        before = cache.evictions[0]
        layer.finish_forward()
        if cache.evictions[0] > before:
            kept.append(layer.positions[:, :, : config.keep].clone())
    return kept


def inclusion_counts(kept: list[torch.Tensor], length: int) -> torch.Tensor:
    """How many rows kept each position, per eviction and head: [E, H, length]."""
    out = torch.zeros(len(kept), kept[0].shape[1], length, dtype=torch.long)
    for e, positions in enumerate(kept):
        for h in range(positions.shape[1]):
            out[e, h] = torch.bincount(positions[:, h].flatten(), minlength=length)
    return out


def chi2_per_df(counts_a: torch.Tensor, counts_b: torch.Tensor, rows_a: int, rows_b: int) -> float:
    """Two-sample chi-square of inclusion frequencies, summed over positions (and heads, evictions)
    whose pooled frequency is strictly between 0 and 1, divided by their number."""
    fa, fb = counts_a.double() / rows_a, counts_b.double() / rows_b
    pooled = (counts_a + counts_b).double() / (rows_a + rows_b)
    live = (pooled > 0) & (pooled < 1)
    var = pooled * (1 - pooled) * (1 / rows_a + 1 / rows_b)
    chi2 = ((fa - fb) ** 2 / var)[live].sum()
    return float(chi2 / live.sum())


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over heads of |A n B| / |A u B| of two [H, K] kept-position sets."""
    scores = []
    for x, y in zip(a.tolist(), b.tolist()):
        sx, sy = set(x), set(y)
        scores.append(len(sx & sy) / len(sx | sy))
    return sum(scores) / len(scores)
