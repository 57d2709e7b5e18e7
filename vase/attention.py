"""Attention over an EvictionCache, plugged into transformers through its public interfaces.

`register()` adds the attention function "vase" to `AttentionInterface` and a matching entry to
`AttentionMaskInterface` (the masks are built here, from each row's cache length, so the model's
own mask is not needed). The function records queries for attention-scored policies, attends with
PyTorch SDPA (CPU) or `flash_attn_with_kvcache` (CUDA, when flash-attn is installed), and then
lets the layer commit the step and evict.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from .cache import EvictionCache, EvictionLayer

ATTENTION_NAME = "vase"
Backend = Literal["auto", "sdpa", "flash", "eager"]
BACKENDS: tuple[str, ...] = ("auto", "sdpa", "flash", "eager")


# The cache of the forward pass running in this thread/task. transformers up to 5.23 hands extra
# forward keywords (our `cache=`) down to the attention function; from 5.24 `cache` is the name
# of the model's own cache argument and stops at the attention module, so the attention function
# also finds the cache here, set only for the duration of one forward call.
_ACTIVE_CACHE: ContextVar[EvictionCache | None] = ContextVar("vase_active_cache", default=None)


def cache_keyword(model) -> str:
    """The name under which this model's forward takes its KV cache."""
    return _cache_keyword(type(model))


@functools.lru_cache(maxsize=None)
def _cache_keyword(model_class: type) -> str:  # once per class: it sits on every decode step
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@contextlib.contextmanager
def active_cache(cache: EvictionCache) -> Iterator[None]:
    token = _ACTIVE_CACHE.set(cache)
    try:
        yield
    finally:
        _ACTIVE_CACHE.reset(token)


def forward(model, cache, **inputs: Any):
    """One model forward with `cache` as its KV cache, whatever transformers calls that argument."""
    keyword = cache_keyword(model)
    if not isinstance(cache, EvictionCache):
        return model(**inputs, **{keyword: cache}, use_cache=True)
    extra = {} if keyword == "cache" else {"cache": cache}  # transformers <= 5.23 forwards it
    with active_cache(cache):
        return model(**inputs, **{keyword: cache}, use_cache=True, **extra)


def flash_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def resolve_backend(requested: str, device: torch.device) -> str:
    if requested not in BACKENDS:
        raise ValueError(f"attention_backend: must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested == "auto":
        return "flash" if device.type == "cuda" and flash_available() else "sdpa"
    if requested == "flash" and not flash_available():
        raise ValueError("attention_backend: 'flash' needs CUDA and the flash-attn package")
    return requested


def _no_mask(*args, **kwargs):
    """The mask function registered beside the attention: masks come from the cache instead."""
    return None


def _visibility_mask(layer: EvictionLayer, q_len: int, kv_len: int, device) -> torch.Tensor | None:
    """Boolean [B, 1, q, L]: query i of row b sees slot j iff j <= start_b + i. None when plain causal."""
    starts = layer.starts
    if len(set(starts)) == 1 and (q_len == 1 or starts[0] == 0):
        return None
    start = torch.tensor(starts, device=device).view(-1, 1, 1)
    limit = start + torch.arange(q_len, device=device).view(1, -1, 1)
    return (torch.arange(kv_len, device=device).view(1, 1, -1) <= limit).unsqueeze(1)


def _sdpa(query, key, value, mask, causal, scaling):
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=causal and mask is None, scale=scaling, enable_gqa=True
    )


def _eager(query, key, value, mask, causal, scaling):
    """Explicit softmax(QK^T)V; returns the weights too (H2O accumulates them)."""
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    logits = torch.matmul(query, k.transpose(-1, -2)).float() * scaling
    q_len, kv_len = query.shape[2], key.shape[2]
    if mask is None and causal and q_len > 1:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = logits.softmax(dim=-1)
    return torch.matmul(weights.to(v.dtype), v), weights


def _flash(layer: EvictionLayer, query: torch.Tensor, scaling: float) -> torch.Tensor:
    from flash_attn import flash_attn_with_kvcache

    # flash-attn wants [B, L, H, D]; transposed views of the cache keep the last dim contiguous.
    seqlens = torch.tensor(layer.visible_lengths(), dtype=torch.int32, device=query.device)
    out = flash_attn_with_kvcache(
        query.transpose(1, 2),
        layer.keys.transpose(1, 2),
        layer.values.transpose(1, 2),
        cache_seqlens=seqlens,
        softmax_scale=scaling,
        causal=True,
    )
    return out.transpose(1, 2)


def eviction_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cache: EvictionCache | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if not isinstance(cache, EvictionCache):
        cache = _ACTIVE_CACHE.get()
    if not isinstance(cache, EvictionCache):
        raise TypeError("the 'vase' attention runs inside vase.attention.forward(model, cache, ...)")
    if kwargs.get("sliding_window") is not None:
        raise ValueError(
            f"model: layer {module.layer_idx} uses sliding-window attention "
            f"(window {kwargs['sliding_window']}), which the eviction cache does not model"
        )
    layer: EvictionLayer = cache.layers[module.layer_idx]
    policy = cache.config.policy
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    q_len, kv_len = query.shape[2], key.shape[2]
    layer.record_queries(query)

    if cache.attention_backend == "flash" and policy.kind != "selection" and not policy.needs_attention_weights:
        output = _flash(layer, query, scaling)
    else:
        mask = _visibility_mask(layer, q_len, kv_len, query.device)
        if policy.kind == "selection" and q_len == 1:
            selected = policy.select(query, key, layer.visible_lengths(), cache.config.budget)
            mask = selected if mask is None else mask & selected
        if policy.needs_attention_weights or cache.attention_backend == "eager":
            output, weights = _eager(query, key, value, mask, True, scaling)
            if policy.needs_attention_weights:
                layer.accumulate_attention(weights)
        else:
            output = _sdpa(query, key, value, mask, q_len > 1, scaling)

    layer.finish_forward()
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention and its mask function under one name; idempotent."""
    AttentionInterface.register(ATTENTION_NAME, eviction_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)
    return ATTENTION_NAME


register()
