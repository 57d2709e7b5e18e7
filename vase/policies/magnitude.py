"""Value-magnitude eviction (range / variance / L2) and its ablation that evicts the large ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import DEFAULT_SINKS, EvictionContext, InvalidParameter, Policy, register
from .scores import MAGNITUDES, reserve_sinks, value_magnitude


@register
@dataclass(frozen=True)
class ValueNorm(Policy):
    name = "value-norm"
    metric: str = "range"
    n_sink: int = DEFAULT_SINKS
    metric_choices: ClassVar[tuple[str, ...]] = MAGNITUDES
    description = "Top-K by value magnitude (range | var | l2); sinks reserved."

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in MAGNITUDES:
            raise InvalidParameter("metric", f"must be one of {', '.join(MAGNITUDES)}", self.metric)

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        scores = value_magnitude(ctx.values, self.metric)
        return reserve_sinks(scores, ctx.positions, self.n_sink, float("inf"))


@register
@dataclass(frozen=True)
class EvictLarge(Policy):
    name = "evict-large"
    # The authors' ablation reserves no sinks (their values are small: kept anyway).
    n_sink: int = 0
    description = "Ablation: evict the largest-range values (keep the K smallest); no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        scores = -value_magnitude(ctx.values, "range", ctx.score_dtype)
        return reserve_sinks(scores, ctx.positions, self.n_sink, float("inf"))

    def reference_mode(self) -> str | None:
        return "evict_large_range" if self.n_sink == 0 else None
