"""vase.generate: batches, seeds, sampling, bad parameters."""

import pytest
import torch

from vase.generation import SamplingConfig, eviction_seed, generate
from vase.policies import InvalidParameter

PROMPTS = [
    "Count the apples: one apple, two apples, three apples, and then",
    "Paris is the capital of",
    "A long time ago in a galaxy far, far away, there lived a young farmer who dreamed of the stars and",
]


@pytest.mark.parametrize("method", ["full", "snapkv", "streamingllm", "vase-dkv", "quest", "h2o"])
def test_greedy_batch_equals_single_rows(tiny_qwen3, method):
    model, tokenizer = tiny_qwen3
    kwargs = dict(method=method, budget=16, residual=8, max_new_tokens=40)
    batch = generate(model, tokenizer, PROMPTS, seeds=[1, 2, 3], **kwargs)
    for prompt, seed, got in zip(PROMPTS, [1, 2, 3], batch):
        alone = generate(model, tokenizer, [prompt], seeds=[seed], **kwargs)[0]
        assert got.tokens == alone.tokens
        assert got.evictions == alone.evictions
    if method not in ("full", "quest"):
        assert all(r.evictions > 0 for r in batch)


def test_greedy_batch_equals_single_rows_smollm2(smollm2):
    model, tokenizer = smollm2
    kwargs = dict(method="vase", params={"n_large": 8}, budget=32, residual=8, max_new_tokens=24)
    batch = generate(model, tokenizer, PROMPTS[:2], seeds=[5, 6], **kwargs)
    for prompt, seed, got in zip(PROMPTS[:2], [5, 6], batch):
        assert got.tokens == generate(model, tokenizer, [prompt], seeds=[seed], **kwargs)[0].tokens


def test_rows_that_stop_early_leave_the_batch(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    probe = generate(model, tokenizer, PROMPTS[:1], method="full", max_new_tokens=8)[0]
    eos_after_three = probe.tokens[2]
    # Pretend the third token is EOS for this tokenizer by passing ids through the model config.
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos_after_three
    try:
        results = generate(model, tokenizer, PROMPTS, method="snapkv", budget=16, residual=8, max_new_tokens=30)
    finally:
        model.generation_config.eos_token_id = old
    assert results[0].finish_reason == "eos" and results[0].new_tokens == 3
    assert all(r.new_tokens <= 30 for r in results)


SAMPLING = SamplingConfig(do_sample=True, temperature=0.8, top_p=0.95, top_k=20)


@pytest.mark.parametrize("method", ["vase", "vase-dkv", "random"])
def test_seeds_reproduce_and_differ(tiny_qwen3, method):
    model, tokenizer = tiny_qwen3
    params = {"n_large": 4} if method == "vase" else None
    run = lambda seed, ev=None: generate(  # noqa: E731
        model, tokenizer, PROMPTS[:1], method=method, params=params, budget=16, residual=8, max_new_tokens=40,
        seeds=[seed], eviction_seeds=ev, sampling=SAMPLING,
    )[0].tokens
    assert run(3) == run(3)
    assert run(3) != run(4)
    # Greedy decoding isolates the eviction generator: same sampling, different eviction seeds.
    greedy = lambda ev: generate(  # noqa: E731
        model, tokenizer, PROMPTS[2:], method=method, params=params, budget=16, residual=8, max_new_tokens=40,
        eviction_seeds=[ev],
    )[0].tokens
    assert greedy(1) == greedy(1)
    assert any(greedy(1) != greedy(s) for s in (2, 3, 4))


def test_eviction_seed_is_separate_from_sampling_seed():
    assert eviction_seed(0) != 0 and eviction_seed(1) != eviction_seed(0)


def test_sampling_respects_top_k_one(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    greedy = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=10)[0].tokens
    top1 = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=10,
                    sampling=SamplingConfig(do_sample=True, top_k=1, temperature=1.0, top_p=1.0), seeds=[9])[0].tokens
    assert greedy == top1


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"method": "vase", "budget": 100, "residual": 64}, "budget"),
        ({"method": "vase", "budget": 64, "residual": 64}, "budget"),
        ({"method": "snapkv", "budget": None}, "budget"),
        ({"method": "vase", "budget": 128, "residual": 32, "params": {"n_large": 96}}, "n_large"),
        ({"method": "unknown", "budget": 128}, "method"),
        ({"method": "full", "max_new_tokens": 0}, "max_new_tokens"),
        ({"method": "full", "sampling": SamplingConfig(temperature=0)}, "temperature"),
        ({"method": "full", "sampling": SamplingConfig(top_p=1.5)}, "top_p"),
        ({"method": "full", "seeds": [1, 2]}, "seeds"),
    ],
)
def test_bad_parameters_raise_a_named_error(tiny_qwen3, kwargs, param):
    model, tokenizer = tiny_qwen3
    with pytest.raises(InvalidParameter) as err:
        generate(model, tokenizer, PROMPTS[:1], **kwargs)
    assert err.value.param == param


def test_result_reports_speed_and_memory(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    full = generate(model, tokenizer, PROMPTS[:1], method="full", max_new_tokens=48)[0]
    evict = generate(model, tokenizer, PROMPTS[:1], method="vase-dkv", budget=16, residual=8, max_new_tokens=48)[0]
    assert full.tokens_per_s > 0 and evict.tokens_per_s > 0
    assert evict.kv_cache_bytes_peak < full.kv_cache_bytes_peak
    layers, heads, dim = 2, 2, 16
    prompt = evict.prompt_tokens
    assert evict.kv_cache_bytes_peak == 2 * layers * heads * (max(prompt, 16) + 8) * dim * 4
    assert full.kv_cache_bytes_peak == 2 * layers * heads * (prompt + 48) * dim * 4
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("method,params", [("vase", {"n_large": 4}), ("snapkv", None), ("streamingllm", None)])
def test_peak_memory_after_an_end_of_prefill_eviction_is_the_budgets(tiny_qwen3, method, params):
    """With evict_after_prefill a prompt over the budget is compressed before the first step, so the
    peak is the budget's allocation (budget + residual slots), not the prompt's."""
    model, tokenizer = tiny_qwen3
    budget, residual, new = 16, 8, 24
    prompt = [" ".join(PROMPTS)]
    full = generate(model, tokenizer, prompt, method="full", max_new_tokens=new, stop_at_eos=False)[0]
    evict = generate(model, tokenizer, prompt, method=method, params=params, budget=budget, residual=residual,
                     evict_after_prefill=True, max_new_tokens=new, stop_at_eos=False)[0]
    assert evict.prompt_tokens > budget + residual and evict.evictions > 1
    layers, heads, dim = 2, 2, 16
    assert evict.kv_cache_bytes_peak == 2 * layers * heads * (budget + residual) * dim * 4
    assert full.kv_cache_bytes_peak == 2 * layers * heads * (full.prompt_tokens + new) * dim * 4
    assert evict.kv_cache_bytes_peak < full.kv_cache_bytes_peak


@pytest.mark.parametrize("given", [{"temperature": 0.7}, {"top_p": 0.9}, {"top_k": 5}])
def test_a_sampling_parameter_without_do_sample_implies_sampling(tiny_qwen3, given):
    model, tokenizer = tiny_qwen3
    assert not model.generation_config.do_sample  # the default alone would decode greedily
    assert SamplingConfig(**given).resolved(model).do_sample is True
    assert SamplingConfig().resolved(model).do_sample is False
    hot = SamplingConfig(temperature=50.0)
    runs = [generate(model, tokenizer, PROMPTS[:1], max_new_tokens=12, sampling=hot, seeds=[s])[0].tokens
            for s in (1, 2)]
    assert runs[0] != runs[1]  # really sampled: different seeds, different tokens


@pytest.mark.parametrize("name,value", [("temperature", 0.7), ("top_p", 0.9), ("top_k", 5)])
def test_a_sampling_parameter_with_greedy_is_refused(name, value):
    with pytest.raises(InvalidParameter) as err:
        SamplingConfig(do_sample=False, **{name: value}).check()
    assert err.value.param == name


@pytest.mark.parametrize("evict_after_prefill", [False, True])
@pytest.mark.parametrize("distinct", [False, True], ids=["one-prompt", "distinct-prompts"])
def test_a_reused_prefill_gives_the_same_tokens(tiny_qwen3, evict_after_prefill, distinct):
    """One prefill per batch of prompts, shared by rows repeating a prompt (samples) and by methods,
    decodes exactly as before: three rows of one prompt, or of two prompts of different lengths."""
    from vase.generation import PrefillCache

    model, tokenizer = tiny_qwen3
    long = PROMPTS[0] + " " + PROMPTS[1]
    prompt = [long, PROMPTS[2], long] if distinct else [long] * 3
    prefills = PrefillCache()
    methods = [("full", None), ("vase", {"n_large": 4}), ("snapkv", None), ("h2o", None), ("streamingllm", None),
               ("random", None)]
    for method, params in methods:
        kwargs = dict(method=method, params=params, budget=None if method == "full" else 16, residual=8,
                      max_new_tokens=30, seeds=[1, 2, 3], evict_after_prefill=evict_after_prefill,
                      return_logprobs=True)
        old = generate(model, tokenizer, prompt, **kwargs)
        new = generate(model, tokenizer, prompt, prefills=prefills, **kwargs)
        for a, b in zip(old, new):
            assert a.tokens == b.tokens and a.evictions == b.evictions, method
            for x, y in zip(a.logprobs, b.logprobs):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    # One prefill (recent queries always kept) for five methods, one with attention mass for h2o.
    assert len(prefills) == 2
