"""Fidelity to the full cache: zero for full vs full, positive once a small budget evicts."""

from vase.fidelity import first_divergence, teacher_forced_fidelity
from vase.generation import generate

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
    assert tight.compared_tokens == 48 - max(0, 24 - prompt_len + 1)
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
