"""VaSE-AttnV and its ablations: a reserved part (largest values, or random tokens) kept first,
the rest chosen by attention (sampled, or top-K)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .attention import INF, WindowAttentionPolicy
from .base import DEFAULT_SINKS, EvictionContext, InvalidParameter, register
from .scores import MAGNITUDES, gumbel_keys, reserve_sinks, uniform_noise, value_magnitude

# Above any attention score or Gumbel key (attention <= 1, Gumbel keys < 17 in fp32), exact in
# fp32 up to 2**24 reserved tokens.
_RESERVED_BASE = 1.0e6


def default_reserve(budget: int) -> int:
    """The spec's default reserve when n_large is not given: a quarter of the budget."""
    return budget // 4


def keep_first(
    scores: torch.Tensor, reserved: torch.Tensor, *, ordered: bool, keep: int | None = None
) -> torch.Tensor:
    """`scores` with the `reserved` candidates [B, H, R] ranked above all others.

    ordered (reference-exact): they rank among themselves in the order `reserved` lists them, so
    the cache stores them in that order, as the authors' code does ([reserved ids, the rest]).
    With `keep`, the rest (keep - R) is chosen here as the authors do, by a top-k of `scores`
    without the reserved ones in the scoring dtype, so ties break as theirs do, and ranked after."""
    if not ordered:
        return scores.scatter(-1, reserved, INF)
    chosen = reserved
    if keep is not None:
        rest = scores.scatter(-1, reserved, -INF).topk(keep - reserved.shape[-1], dim=-1).indices
        chosen = torch.cat([reserved, rest], dim=-1)
    n = chosen.shape[-1]
    ranks = torch.arange(n, 0, -1, dtype=torch.float32, device=scores.device) + _RESERVED_BASE
    return scores.float().scatter(-1, chosen, ranks.expand(chosen.shape).contiguous())


@dataclass(frozen=True)
class ReservePolicy(WindowAttentionPolicy):
    """A reserve of `n_large` tokens (default budget // 4), then attention for the rest."""

    n_large: int | None = None

    def reserve(self, budget: int) -> int:
        return default_reserve(budget) if self.n_large is None else self.n_large

    def resolved_params(self, budget: int | None) -> dict[str, Any]:
        params = dataclasses.asdict(self)
        if budget is not None:
            params["n_large"] = self.reserve(budget)
        return params

    def validate(self, budget: int, residual: int) -> None:
        keep = budget - residual
        n_large = self.reserve(budget)
        if n_large >= keep:
            param = "n_large" if self.n_large is not None else "budget"
            raise InvalidParameter(
                param, f"n_large (default budget // 4 = {n_large}) must be < budget - residual (= {keep})", n_large
            )


@dataclass(frozen=True)
class ValueReservePolicy(ReservePolicy):
    """The reserve is the `n_large` largest value magnitudes (sinks count as infinitely large)."""

    metric: str = "range"
    metric_choices: ClassVar[tuple[str, ...]] = MAGNITUDES

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in MAGNITUDES:
            raise InvalidParameter("metric", f"must be one of {', '.join(MAGNITUDES)}", self.metric)

    def reserved(self, ctx: EvictionContext) -> torch.Tensor:
        magnitude = value_magnitude(ctx.values, self.metric, ctx.score_dtype)
        magnitude = reserve_sinks(magnitude, ctx.positions, self.n_sink, INF)
        return magnitude.topk(self.reserve(ctx.budget), dim=-1).indices


@register
@dataclass(frozen=True)
class VaSE(ValueReservePolicy):
    name = "vase"
    n_sink: int = DEFAULT_SINKS
    stochastic = True
    description = (
        "VaSE-AttnV: reserve the n_large (default budget // 4) largest value magnitudes (metric range | var | l2; "
        "n_sink=4 sinks included), draw the rest without replacement in proportion to smoothed attention."
    )

    def reference_mode(self) -> str | None:
        if self.n_sink == DEFAULT_SINKS:
            return f"{self.metric}_sink_sample_attn"
        if self.n_sink == 0 and self.metric == "range":
            return "range_sample_attn"
        return None

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        reserved = self.reserved(ctx)
        attention = self.attention(ctx).scatter(-1, reserved, 0.0)
        return keep_first(gumbel_keys(attention, ctx.generators), reserved, ordered=ctx.reference_exact)


@register
@dataclass(frozen=True)
class RangeAttention(ValueReservePolicy):
    name = "range-attn"
    reference_name = "range_attn"
    description = (
        "Ablation: VaSE's value reserve (n_large largest magnitudes) kept deterministically, attention top-K "
        "for the rest; no sinks by default, as in the authors' range_attn."
    )

    def reference_mode(self) -> str | None:
        return self.reference_name if self.n_sink == 0 and self.metric == "range" else None

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return keep_first(self.attention(ctx), self.reserved(ctx), ordered=ctx.reference_exact, keep=ctx.keep)


@register
@dataclass(frozen=True)
class AttentionWithRandomReserve(ReservePolicy):
    name = "attn-random"
    reference_name = "attn_random"
    stochastic = True
    description = "Ablation: reserve n_large random tokens, then attention top-K for the rest; no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        noise = uniform_noise(ctx.generators, tuple(ctx.positions.shape[1:]), ctx.keys.device)
        reserved = noise.topk(self.reserve(ctx.budget), dim=-1).indices
        scores = self.with_sinks(self.attention(ctx), ctx)
        return keep_first(scores, reserved, ordered=ctx.reference_exact, keep=ctx.keep)
