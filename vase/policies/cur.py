"""CUR-style attention-free scores: VaSE-DKV (resampled projection) and CUR with a fixed projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import DEFAULT_SINKS, EvictionContext, Policy, register
from .scores import cur_scores, gaussian_projection, reserve_sinks


@dataclass(frozen=True)
class CURPolicy(Policy):
    reference_name: ClassVar[str]
    rank: int = 20
    n_sink: int = DEFAULT_SINKS

    def __post_init__(self) -> None:
        super().__post_init__()
        from .base import InvalidParameter

        if self.rank < 1:
            raise InvalidParameter("rank", "must be >= 1", self.rank)

    def projection(self, ctx: EvictionContext) -> torch.Tensor:
        head_dim = ctx.keys.shape[-1]
        return gaussian_projection(ctx.generators, head_dim, self.rank, ctx.keys.device)

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        scores = cur_scores(ctx.keys, ctx.values, self.projection(ctx), ctx.score_dtype)
        # Normalised scores are <= 1, so sinks set to 1 are kept ahead of everything else.
        return reserve_sinks(scores, ctx.positions, self.n_sink, 1.0)


    def reference_mode(self) -> str | None:
        return self.reference_name if self.rank == 20 and self.n_sink == DEFAULT_SINKS else None


@register
@dataclass(frozen=True)
class VaSEDKV(CURPolicy):
    name = "vase-dkv"
    reference_name = "cur_resample_gauss"
    stochastic = True
    description = "VaSE-DKV: ||kG||^2 ||vG||^2 with a fresh Gaussian G at every eviction; attention-free."


@register
@dataclass(frozen=True)
class CURFixed(CURPolicy):
    name = "cur-fixed"
    reference_name = "cur_fixed_gauss"
    stochastic = True  # G is random, drawn once per sample
    description = "CUR baseline: the same score with one Gaussian G drawn once and reused."

    def projection(self, ctx: EvictionContext) -> torch.Tensor:
        head_dim = ctx.keys.shape[-1]
        for state, generator in zip(ctx.row_states, ctx.generators):
            if "projection" not in state:
                state["projection"] = gaussian_projection([generator], head_dim, self.rank, ctx.keys.device)[0]
        return torch.stack([state["projection"] for state in ctx.row_states])
