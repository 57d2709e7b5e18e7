"""vase: KV-cache eviction (VaSE and baselines) for Hugging Face causal LMs, and a benchmark around it.

`vase.generate(...)` is the entry point for generation; heavy modules (torch, transformers) load
on first use so that importing `vase.config` or `vase.store` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("generate", "GenerationResult", "SamplingConfig"):
        from . import generation

        return getattr(generation, name)
    if name in ("EvictionCache", "CacheConfig"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(name)
