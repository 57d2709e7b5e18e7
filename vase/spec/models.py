"""Which models a job may name, and what a model's shape is, without loading it.

The service loads only the embedded model, the service's default model, and the hub ids (globs,
``Qwen/Qwen3-*``) and local folders an operator lists in ``VASE_ALLOWED_MODELS``. The check is
on the text alone: a refused name is never looked up on disk or on the hub, and every refusal reads
the same, so the answer says nothing about the server's filesystem.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import EMBEDDED_MODEL, Settings
from .job import JobInvalid

# owner/name of a hub repository: letters, digits, '-', '_', '.'; never '..' nor a scheme or a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
REFUSED = "is not a model this service runs: use {embedded} or one the operator lists in VASE_ALLOWED_MODELS"


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name


def model_allowed(name: str, settings: Settings) -> bool:
    """True when ``name`` is the embedded model, the default model, a listed folder (exactly, as an
    absolute path) or a hub id matching a listed glob."""
    if name in (EMBEDDED_MODEL, settings.default_model):
        return True
    for entry in settings.allowed_model_list:
        if entry.startswith("/"):
            if name.startswith("/") and os.path.normpath(name) == os.path.normpath(entry) and ".." not in name:
                return True
        elif is_hub_id(name) and fnmatch.fnmatchcase(name, entry):
            return True
    return False


def check_model(name: str | None, settings: Settings) -> str:
    """The model a job runs (``name`` or the default); raises :class:`JobInvalid` on ``model``
    when it is not allowed. The message is the same for every refused name."""
    model = name or settings.default_model
    if not model_allowed(model, settings):
        raise JobInvalid("model", REFUSED.format(embedded=EMBEDDED_MODEL), model)
    return model


@dataclass(frozen=True)
class ModelShape:
    """What sizing a job needs from a model's config: its context and its KV cache per token."""

    context: int
    layers: int
    kv_heads: int
    head_dim: int

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes  # keys and values


#: SmolLM2-135M-Instruct as converted by vase.models (its config.json).
EMBEDDED_SHAPE = ModelShape(context=8192, layers=30, kv_heads=3, head_dim=64)


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    text = config.get("text_config") or config
    heads = int(text["num_attention_heads"])
    context = text.get("max_position_embeddings") or text.get("max_sequence_length") or text.get("n_positions")
    return ModelShape(
        context=int(context), layers=int(text["num_hidden_layers"]),
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or int(text["hidden_size"]) // heads),
    )


@lru_cache(maxsize=64)
def _config_file(model: str, token: str | None) -> str:
    if model.startswith("/"):
        return str(Path(model) / "config.json")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model, "config.json", token=token)


def model_shape(model: str, settings: Settings) -> ModelShape:
    """The shape of an allowed model: the embedded one is known; others are read from their
    config.json (a local file, or one small download cached by huggingface_hub). Raises
    :class:`JobInvalid` on ``model`` when it cannot be read."""
    if model == EMBEDDED_MODEL:
        return EMBEDDED_SHAPE
    try:
        return _read_shape(_config_file(model, settings.hf_token))
    except Exception:  # noqa: BLE001 - any failure is the same answer (no detail about the disk)
        raise JobInvalid("model", "its config.json could not be read, so the job cannot be sized", model) from None


@lru_cache(maxsize=64)
def _read_shape(path: str) -> ModelShape:
    return shape_from_config(json.loads(Path(path).read_text()))


__all__ = ["EMBEDDED_SHAPE", "ModelShape", "check_model", "is_hub_id", "model_allowed", "model_shape",
           "shape_from_config"]
