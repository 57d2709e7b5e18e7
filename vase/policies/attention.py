"""Attention-driven eviction: SnapKV-style top-K, attention sampling, TOVA, H2O and R-KV."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import EvictionContext, Policy, register
from .scores import gumbel_keys, key_redundancy, window_attention


@dataclass(frozen=True)
class WindowAttentionPolicy(Policy):
    """Scores come from the attention of the recent query window (shared by the family)."""

    smoothing: bool = True
    temperature: float = 1.0
    needs_queries = True

    def __post_init__(self) -> None:
        super().__post_init__()
        from .base import InvalidParameter

        if self.temperature <= 0:
            raise InvalidParameter("temperature", "must be > 0", self.temperature)

    def attention(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.queries is not None, "the cache must record queries for attention policies"
        return window_attention(ctx.queries, ctx.keys, smoothing=self.smoothing, temperature=self.temperature)


@register
@dataclass(frozen=True)
class SnapKV(WindowAttentionPolicy):
    name = "snapkv"
    description = "Top-K by windowed, smoothed attention (SnapKV-style)."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return self.attention(ctx)


@register
@dataclass(frozen=True)
class AttentionSampling(WindowAttentionPolicy):
    name = "attn-sample"
    stochastic = True
    description = "All K kept tokens drawn without replacement in proportion to attention."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return gumbel_keys(self.attention(ctx), ctx.generators)


@register
@dataclass(frozen=True)
class RKV(WindowAttentionPolicy):
    name = "rkv"
    lam: float = 0.5
    description = "R-KV: lambda * attention - (1 - lambda) * key redundancy, top-K."

    def __post_init__(self) -> None:
        super().__post_init__()
        from .base import InvalidParameter

        if not 0.0 <= self.lam <= 1.0:
            raise InvalidParameter("lam", "must be within [0, 1]", self.lam)

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return self.lam * self.attention(ctx) - (1.0 - self.lam) * key_redundancy(ctx.keys)


@register
@dataclass(frozen=True)
class TOVA(Policy):
    name = "tova"
    needs_queries = True
    description = "TOVA: keep the tokens the newest query attends to most (GQA-group average)."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.newest_query is not None
        return window_attention(ctx.newest_query, ctx.keys, smoothing=False)


@register
@dataclass(frozen=True)
class H2O(Policy):
    name = "h2o"
    needs_attention_weights = True
    description = "H2O heavy hitters: attention accumulated over every step since the token arrived."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.accumulated_attention is not None
        return ctx.accumulated_attention
