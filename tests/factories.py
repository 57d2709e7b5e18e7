"""Test factories: small random-weight models that share the embedded SmolLM2 tokenizer, for
architecture and plumbing tests (they live here, not in the library: production code never builds
a random model)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from vase.models import load_embedded_tokenizer

ARCHITECTURES = {"qwen3": (Qwen3Config, Qwen3ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
#: 2 layers, 4 query heads, 2 KV heads, head_dim 16.
SMALL = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


def tiny(
    architecture: str, seed: int = 0, *, vocab_size: int | None = None, **config: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-weight model of ``architecture`` (float32, eval mode) with the embedded tokenizer.

    The shape is :data:`SMALL` unless ``config`` says otherwise; other keyword arguments go to the
    config too (e.g. ``attn_implementation``). Deterministic by ``seed`` (the global RNG is left
    untouched). ``vocab_size`` defaults to the tokenizer's. The tokenizer is shared with
    ``vase.models.load_model``'s embedded one: do not modify it.
    """
    config_cls, model_cls = ARCHITECTURES[architecture]
    tokenizer = load_embedded_tokenizer()
    params: dict[str, Any] = {**SMALL, **config}
    params = {
        "vocab_size": vocab_size if vocab_size is not None else len(tokenizer),
        "intermediate_size": 2 * params["hidden_size"],
        "max_position_embeddings": 8192,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        **params,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config_cls(**params)).to(torch.float32)
    model.eval()
    shape = ",".join(f"{k}={params[k]}" for k in SMALL)
    model._vase_model_id = f"tiny-{architecture}(seed={seed},{shape})"
    model._vase_revision = None
    return model, tokenizer


def tiny_qwen3(seed: int = 0, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer random ``Qwen3ForCausalLM`` (4 query heads, 2 KV heads, head_dim 16); see :func:`tiny`."""
    return tiny("qwen3", seed, **kwargs)


def tiny_llama(seed: int = 0, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Like :func:`tiny_qwen3`, for ``LlamaForCausalLM``."""
    return tiny("llama", seed, **kwargs)
