"""Fidelity to the full cache: how far a method's next-token distributions drift from full attention.

The full-cache output is replayed teacher-forced through two caches in lockstep, the full one and
the method's, so both see exactly the same tokens; at every step after the method's first eviction
(the first whose logits were computed on an evicted cache; an eviction runs after its step's
attention) we measure KL(full || method) and whether the top-1 tokens agree. Before that the two
caches hold the same tokens and the logits are equal, so counting those steps would only dilute
the mean. Selection methods (no evictions) are compared once the cache exceeds the budget, when
their selection starts. At CPU scale,
where small models score near zero on reasoning tasks, this is the sensitive quality signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .cache import CacheConfig
from .generation import Decoder, PrefillCache, attention_implementation, pad_id, prepare


@dataclass
class FidelityResult:
    compared_tokens: int  # steps after the first eviction (selection methods: over the budget)
    kl_mean: float | None  # mean KL(full || method) in nats over those steps
    top1_agreement: float | None  # share of those steps where both argmax tokens agree
    kl_per_token: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"compared_tokens": self.compared_tokens, "kl_mean": self.kl_mean, "top1_agreement": self.top1_agreement}


def first_divergence(reference: Sequence[int], candidate: Sequence[int]) -> int | None:
    """Index of the first token where two outputs differ; None when one is a prefix of the other."""
    for index, (a, b) in enumerate(zip(reference, candidate)):
        if a != b:
            return index
    return None if len(reference) == len(candidate) else min(len(reference), len(candidate))


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(reference) || softmax(logits)) per row, in nats."""
    log_p = reference_logits.float().log_softmax(dim=-1)
    log_q = logits.float().log_softmax(dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0.0)


@torch.inference_mode()
def teacher_forced_fidelity(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    reference_tokens: Sequence[Sequence[int]],
    *,
    method: str,
    params: dict[str, Any] | None = None,
    budget: int | None = None,
    residual: int = 64,
    evict_after_prefill: bool = False,
    seeds: Sequence[int] | None = None,
    eviction_seeds: Sequence[int] | None = None,
    attention_backend: str = "auto",
    reference_exact: bool = False,
    prefills: PrefillCache | None = None,
    reference_logprobs: Sequence[torch.Tensor] | None = None,
) -> list[FidelityResult]:
    """Replay each row's full-cache output under `method` and under the full cache, step by step.

    `reference_logprobs` (per row, [len(reference), V]: the full cache's log-probabilities at each
    step of its own output, as `generate(return_logprobs=True)` keeps them) replaces the full-cache
    replay, which then does not run.
    """
    if len(reference_tokens) != len(prompts):
        raise ValueError("reference_tokens: needs one continuation per prompt")
    if reference_logprobs is not None and [len(t) for t in reference_logprobs] != [len(t) for t in reference_tokens]:
        raise ValueError("reference_logprobs: needs one row of log-probabilities per reference token")
    longest = max((len(t) for t in reference_tokens), default=0)
    config, encoded, seeds, eviction_seeds = prepare(
        tokenizer, prompts, method=method, params=params, budget=budget, residual=residual,
        max_new_tokens=max(longest, 1), seeds=seeds, eviction_seeds=eviction_seeds, reference_exact=reference_exact,
        evict_after_prefill=evict_after_prefill,
    )
    full_config = CacheConfig.build("full", None, residual=residual)
    common = dict(pad_token_id=pad_id(tokenizer), max_new_tokens=longest, attention_backend=attention_backend,
                  prefills=prefills)
    under_test = Decoder(model, encoded, config, eviction_seeds=eviction_seeds, **common)
    full = None if reference_logprobs is not None else Decoder(model, encoded, full_config,
                                                               eviction_seeds=eviction_seeds, **common)

    def full_step(forced: list[int] | None, step: int) -> torch.Tensor:
        """The full cache's logits (or log-probabilities) for this step, for the rows still here."""
        if full is None:
            return torch.stack([reference_logprobs[row][step] for row in under_test.rows]).to(under_test.device)
        return full.prefill() if forced is None else full.step(forced)

    kl: dict[int, list[float]] = {row: [] for row in range(len(encoded))}
    agree: dict[int, list[bool]] = {row: [] for row in range(len(encoded))}
    limit = config.budget if config.budget is not None else -1

    def compared(i: int, row: int, step: int, evicted_before: list[int]) -> bool:
        """Whether this step's logits can differ from the full cache's (see the module docstring)."""
        if config.evicts:
            return evicted_before[i] > 0
        return under_test.prompt_lengths[row] + step > limit

    with attention_implementation(model, under_test.implementation):
        logits, full_logits = under_test.prefill(), full_step(None, 0)
        evicted_before = [0] * len(under_test.rows)  # evictions before the forward that made `logits`
        step = 0
        while True:
            divergence = kl_divergence(full_logits, logits).tolist()
            same_top1 = (full_logits.argmax(-1) == logits.argmax(-1)).tolist()
            for i, row in enumerate(under_test.rows):
                if compared(i, row, step, evicted_before):
                    kl[row].append(divergence[i])
                    agree[row].append(bool(same_top1[i]))
            step += 1
            keep = [i for i, row in enumerate(under_test.rows) if step < len(reference_tokens[row])]
            if not keep:
                break
            if len(keep) < len(under_test.rows):
                under_test.drop(keep)
                if full is not None:
                    full.drop(keep)
            forced = [int(reference_tokens[row][step - 1]) for row in under_test.rows]
            evicted_before = [under_test.evictions(i) for i in range(len(under_test.rows))]
            logits, full_logits = under_test.step(forced), full_step(forced, step)

    results = []
    for row in range(len(encoded)):
        n = len(kl[row])
        results.append(
            FidelityResult(
                compared_tokens=n,
                kl_mean=sum(kl[row]) / n if n else None,
                top1_agreement=sum(agree[row]) / n if n else None,
                kl_per_token=kl[row],
            )
        )
    return results
