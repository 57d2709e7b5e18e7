"""VaSE-AttnV: reserve the largest-value tokens, then sample the rest in proportion to attention."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .attention import WindowAttentionPolicy
from .base import DEFAULT_SINKS, EvictionContext, InvalidParameter, register
from .scores import gumbel_keys, reserve_sinks, value_magnitude


def default_reserve(budget: int) -> int:
    """The spec's default reserve when n_large is not given: a quarter of the budget."""
    return budget // 4


@register
@dataclass(frozen=True)
class VaSE(WindowAttentionPolicy):
    name = "vase"
    n_large: int | None = None
    n_sink: int = DEFAULT_SINKS
    stochastic = True
    description = (
        "VaSE-AttnV: reserve the n_large largest value-range tokens (sinks included), draw the rest "
        "without replacement in proportion to smoothed attention."
    )

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

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        magnitude = reserve_sinks(value_magnitude(ctx.values, "range"), ctx.positions, self.n_sink, float("inf"))
        reserved = magnitude.topk(self.reserve(ctx.budget), dim=-1).indices
        attention = self.attention(ctx).scatter(-1, reserved, 0.0)
        keys = gumbel_keys(attention, ctx.generators)
        return keys.scatter(-1, reserved, float("inf"))


@register
@dataclass(frozen=True)
class AttentionWithRandomReserve(WindowAttentionPolicy):
    name = "attn-random"
    n_large: int | None = None
    stochastic = True
    description = "Ablation: reserve n_large random tokens, then attention top-K for the rest."

    def reserve(self, budget: int) -> int:
        return default_reserve(budget) if self.n_large is None else self.n_large

    validate = VaSE.validate
    resolved_params = VaSE.resolved_params

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        from .scores import uniform_noise

        noise = uniform_noise(ctx.generators, tuple(ctx.positions.shape[1:]), ctx.keys.device)
        reserved = noise.topk(self.reserve(ctx.budget), dim=-1).indices
        return self.attention(ctx).scatter(-1, reserved, float("inf"))
