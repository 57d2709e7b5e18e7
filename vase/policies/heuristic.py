"""Content-blind baselines: StreamingLLM (sinks + most recent) and uniform random eviction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import DEFAULT_SINKS, EvictionContext, Policy, register
from .scores import reserve_sinks, uniform_noise


@register
@dataclass(frozen=True)
class StreamingLLM(Policy):
    name = "streamingllm"
    n_sink: int = DEFAULT_SINKS
    description = "StreamingLLM: attention sinks plus the most recent tokens."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        return reserve_sinks(ctx.positions.float(), ctx.positions, self.n_sink, float("inf"))


@register
@dataclass(frozen=True)
class RandomEviction(Policy):
    name = "random"
    # 0: draws over every candidate, the sinks included (the project's first definition);
    # n_sink=4 reserves them, which changes the result several-fold.
    n_sink: int = 0
    stochastic = True
    description = "Keep K candidates chosen uniformly at random; n_sink=0 draws over the sinks too."

    def score(self, ctx: EvictionContext) -> torch.Tensor:
        noise = uniform_noise(ctx.generators, tuple(ctx.positions.shape[1:]), ctx.keys.device)
        return reserve_sinks(noise, ctx.positions, self.n_sink, float("inf"))
