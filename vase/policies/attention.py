"""Attention-driven eviction: SnapKV-style top-K, attention sampling, TOVA, H2O and R-KV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import EvictionContext, Policy, register
from .scores import gumbel_keys, key_redundancy, reserve_sinks, window_attention

INF = float("inf")


@dataclass(frozen=True)
class WindowAttentionPolicy(Policy):
    """Scores come from the attention of the recent query window (shared by the family).

    `n_sink`: the first positions always kept (0 for the attention baselines, as in the
    authors' code; VaSE reserves 4)."""

    smoothing: bool = True
    temperature: float = 1.0
    n_sink: int = 0
    needs_queries = True
    #: The authors' eviction_mode this class reproduces when n_sink is 0.
    reference_name: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from .base import InvalidParameter

        if self.temperature <= 0:
            raise InvalidParameter("temperature", "must be > 0", self.temperature)

    def attention(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.queries is not None, "the cache must record queries for attention policies"
        return window_attention(
            ctx.queries, ctx.keys, smoothing=self.smoothing, temperature=self.temperature, dtype=ctx.score_dtype
        )

    def with_sinks(self, scores: torch.Tensor, ctx: EvictionContext) -> torch.Tensor:
        return reserve_sinks(scores, ctx.positions, self.n_sink, INF)

    def reference_mode(self) -> str | None:
        return self.reference_name if self.n_sink == 0 else None


@register
@dataclass(frozen=True)
class SnapKV(WindowAttentionPolicy):
    name = "snapkv"
    reference_name = "attn"
    description = "Top-K by windowed, smoothed attention (SnapKV-style); no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return self.with_sinks(self.attention(ctx), ctx)


@register
@dataclass(frozen=True)
class AttentionSampling(WindowAttentionPolicy):
    name = "attn-sample"
    stochastic = True
    reference_name = "attn_sample"
    description = "All K kept tokens drawn without replacement in proportion to attention; no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return self.with_sinks(gumbel_keys(self.attention(ctx), ctx.generators), ctx)


@register
@dataclass(frozen=True)
class RKV(WindowAttentionPolicy):
    name = "rkv"
    lam: float = 0.5
    reference_name = "attn_rkv"
    description = "R-KV: lambda * attention - (1 - lambda) * key redundancy, top-K; no sinks by default."

    def __post_init__(self) -> None:
        super().__post_init__()
        from .base import InvalidParameter

        if not 0.0 <= self.lam <= 1.0:
            raise InvalidParameter("lam", "must be within [0, 1]", self.lam)

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        redundancy = key_redundancy(ctx.keys, ctx.score_dtype)
        return self.with_sinks(self.attention(ctx) * self.lam - redundancy * (1.0 - self.lam), ctx)


@register
@dataclass(frozen=True)
class TOVA(Policy):
    name = "tova"
    n_sink: int = 0
    needs_queries = True
    description = "TOVA: keep the tokens the newest query attends to most (GQA-group average); no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.newest_query is not None
        scores = window_attention(ctx.newest_query, ctx.keys, smoothing=False)
        return reserve_sinks(scores, ctx.positions, self.n_sink, INF)


@register
@dataclass(frozen=True)
class H2O(Policy):
    name = "h2o"
    n_sink: int = 0
    needs_attention_weights = True
    description = "H2O heavy hitters: attention accumulated since the token arrived; no sinks by default."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        assert ctx.accumulated_attention is not None
        return reserve_sinks(ctx.accumulated_attention, ctx.positions, self.n_sink, INF)
