"""Fidelity to the full cache: zero for full vs full, positive once a small budget evicts."""

from vase.fidelity import first_divergence, teacher_forced_fidelity
from vase.generation import generate


def first_eviction_length(prompt_len: int, budget: int, residual: int) -> int:
    """The logical length at the first eviction: the first multiple of `residual` above budget and prompt."""
    return (max(budget, prompt_len) // residual + 1) * residual

PROMPTS = ["Once upon a time, in a land of tall mountains and deep rivers,", "List the primes below 50:"]


def test_full_against_full_is_exactly_zero(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    reference = [r.tokens for r in generate(model, tokenizer, PROMPTS, max_new_tokens=30)]
    for result in teacher_forced_fidelity(model, tokenizer, PROMPTS, reference, method="full"):
        assert result.compared_tokens == 30
        assert result.kl_mean == 0.0
        assert result.top1_agreement == 1.0


def test_budget_above_length_is_zero_and_small_budget_drifts(smollm2):
    model, tokenizer = smollm2
    reference = [r.tokens for r in generate(model, tokenizer, PROMPTS[:1], max_new_tokens=48, stop_at_eos=False)]
    roomy = teacher_forced_fidelity(model, tokenizer, PROMPTS[:1], reference, method="snapkv", budget=256, residual=16)[0]
    assert roomy.compared_tokens == 0 and roomy.kl_mean is None  # never over budget: nothing to compare
    tight = teacher_forced_fidelity(model, tokenizer, PROMPTS[:1], reference, method="streamingllm", budget=24,
                                    residual=8)[0]
    prompt_len = len(tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"])
    assert tight.compared_tokens == 48 - 1 - (first_eviction_length(prompt_len, 24, 8) - prompt_len)
    assert tight.kl_mean > 0 and 0 <= tight.top1_agreement <= 1
    assert all(value >= 0 for value in tight.kl_per_token)


def test_batched_fidelity_equals_single_rows(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    reference = [r.tokens for r in generate(model, tokenizer, PROMPTS, max_new_tokens=40)]
    batch = teacher_forced_fidelity(model, tokenizer, PROMPTS, reference, method="snapkv", budget=16, residual=8)
    for i, prompt in enumerate(PROMPTS):
        alone = teacher_forced_fidelity(model, tokenizer, [prompt], [reference[i]], method="snapkv", budget=16,
                                        residual=8)[0]
        assert alone.compared_tokens == batch[i].compared_tokens
        assert abs(alone.kl_mean - batch[i].kl_mean) < 1e-4


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2


def test_the_window_starts_at_the_first_eviction(tiny_qwen3):
    """Steps before the first eviction are not compared (their logits equal the full cache's);
    the first compared step is the first whose logits saw an evicted cache, and its KL is > 0."""
    model, tokenizer = tiny_qwen3
    prompts = [PROMPTS[0] + " " + PROMPTS[1]]
    reference = [r.tokens for r in generate(model, tokenizer, prompts, max_new_tokens=40, stop_at_eos=False)]
    prompt_len = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    budget, residual = 16, 8
    assert prompt_len > budget  # the old rule (prompt + step > budget) compared every step
    result = teacher_forced_fidelity(model, tokenizer, prompts, reference, method="streamingllm", budget=budget,
                                     residual=residual)[0]
    steps_before = first_eviction_length(prompt_len, budget, residual) - prompt_len
    assert result.compared_tokens == 40 - 1 - steps_before < 40
    assert result.kl_per_token[0] > 0


def test_the_full_runs_logprobs_replace_the_full_cache_replay(tiny_qwen3):
    """Fidelity against the log-probabilities the full run kept equals fidelity against a replay."""
    import pytest
    import torch

    model, tokenizer = tiny_qwen3
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=40, return_logprobs=True)
    reference = [r.tokens for r in full]
    kept = [torch.stack(r.logprobs) for r in full]
    kwargs = dict(method="vase", budget=16, residual=8, evict_after_prefill=True)
    replayed = teacher_forced_fidelity(model, tokenizer, PROMPTS, reference, **kwargs)
    reused = teacher_forced_fidelity(model, tokenizer, PROMPTS, reference, reference_logprobs=kept, **kwargs)
    for a, b in zip(replayed, reused):
        assert a.compared_tokens == b.compared_tokens > 0
        assert b.kl_per_token == pytest.approx(a.kl_per_token, abs=1e-5)
        assert a.top1_agreement == b.top1_agreement
    with pytest.raises(ValueError, match="reference_logprobs"):
        teacher_forced_fidelity(model, tokenizer, PROMPTS, reference, reference_logprobs=[k[:-1] for k in kept],
                                **kwargs)
