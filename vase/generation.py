"""Batched decoding with an eviction cache: greedy or sampled, per-row seeds, rows leave when done."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from . import attention
from .cache import CacheConfig, EvictionCache, EventSink
from .policies import InvalidParameter


@dataclass(frozen=True)
class SamplingConfig:
    """Token selection. None fields fall back to the model's generation config."""

    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None

    def resolved(self, model) -> SamplingConfig:
        gen = getattr(model, "generation_config", None)

        def pick(value, name, default):
            if value is not None:
                return value
            found = getattr(gen, name, None) if gen is not None else None
            return default if found is None else found

        out = SamplingConfig(
            do_sample=bool(pick(self.do_sample, "do_sample", False)),
            temperature=float(pick(self.temperature, "temperature", 1.0)),
            top_p=float(pick(self.top_p, "top_p", 1.0)),
            top_k=int(pick(self.top_k, "top_k", 0) or 0),
        )
        out.check()
        return out

    def check(self) -> None:
        if self.temperature is not None and self.temperature <= 0:
            raise InvalidParameter("temperature", "must be > 0", self.temperature)
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InvalidParameter("top_p", "must be within (0, 1]", self.top_p)
        if self.top_k is not None and self.top_k < 0:
            raise InvalidParameter("top_k", "must be >= 0 (0 disables it)", self.top_k)


@dataclass
class GenerationResult:
    row: int
    prompt_tokens: int
    tokens: list[int]
    text: str
    finish_reason: str  # "eos" | "length"
    evictions: int
    decode_seconds: float
    kv_cache_bytes_peak: int
    # Per generated token (only when asked for): log-softmax of the logits that produced it.
    logprobs: list[torch.Tensor] | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "text": self.text,
            "new_tokens": self.new_tokens,
            "finish_reason": self.finish_reason,
            "evictions": self.evictions,
            "tokens_per_s": self.tokens_per_s,
            "kv_cache_bytes_peak": self.kv_cache_bytes_peak,
            "prompt_tokens": self.prompt_tokens,
        }


def eviction_seed(seed: int) -> int:
    """The eviction generator's seed for a sample seed: separate from sampling, fixed by it."""
    return (int(seed) * 1_000_003 + 0x5EED) % (2**63 - 1)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    return ids


def _filter_logits(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the order transformers applies them)."""
    logits = logits / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= sampling.top_p  # keep the token crossing top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@contextlib.contextmanager
def attention_implementation(model, name: str) -> Iterator[None]:
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@dataclass
class _Batch:
    """Rows still decoding and their bookkeeping."""

    rows: list[int]
    next_positions: list[int]
    generators: list[torch.Generator]
    tokens: dict[int, list[int]] = field(default_factory=dict)
    logprobs: dict[int, list[torch.Tensor]] = field(default_factory=dict)


def _encode(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    encoded = []
    for prompt in prompts:
        if isinstance(prompt, str):
            encoded.append(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        else:
            encoded.append([int(t) for t in prompt])
        if not encoded[-1]:
            raise InvalidParameter("prompt", "must not be empty")
    return encoded


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    method: str = "full",
    params: dict[str, Any] | None = None,
    budget: int | None = None,
    residual: int = 64,
    max_new_tokens: int = 256,
    seeds: Sequence[int] | None = None,
    eviction_seeds: Sequence[int] | None = None,
    sampling: SamplingConfig | None = None,
    trace_sink: EventSink | None = None,
    attention_backend: str = "auto",
    forced_tokens: Sequence[Sequence[int]] | None = None,
    return_logprobs: bool = False,
    stop_at_eos: bool = True,
    use_hf_dynamic_cache: bool = False,
    on_step: Callable[[int, Any], None] | None = None,
) -> list[GenerationResult]:
    """Generate for each prompt (a batch) under one cache method; one result per prompt, in order.

    `seeds` seed each row's sampling; `eviction_seeds` (default: derived from `seeds`) seed the
    stochastic policies, so the same seeds reproduce evictions and tokens. `forced_tokens` replays
    given continuations teacher-forced (the fidelity measurement), `return_logprobs` keeps each
    step's log-probabilities. `use_hf_dynamic_cache` runs `full` on transformers' DynamicCache with
    SDPA, as a reference point for benchmarks.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidParameter("max_new_tokens", "must be an integer >= 1", max_new_tokens)
    config = CacheConfig.build(method, params, budget=budget, residual=residual)
    sampling = (sampling or SamplingConfig()).resolved(model)
    encoded = _encode(tokenizer, prompts)
    batch_size = len(encoded)
    seeds = list(seeds) if seeds is not None else list(range(batch_size))
    if len(seeds) != batch_size:
        raise InvalidParameter("seeds", f"needs one seed per prompt ({batch_size})", len(seeds))
    if eviction_seeds is None:
        eviction_seeds = [eviction_seed(s) for s in seeds]
    if forced_tokens is not None and len(forced_tokens) != batch_size:
        raise InvalidParameter("forced_tokens", f"needs one continuation per prompt ({batch_size})")
    if use_hf_dynamic_cache and config.policy.kind != "none":
        raise InvalidParameter("use_hf_dynamic_cache", "only applies to method 'full'")

    device = model.device
    eos = _eos_ids(model, tokenizer) if stop_at_eos else set()
    lengths = [len(ids) for ids in encoded]
    width = max(lengths)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Right padding: each row's real tokens come first, so causal attention never sees the padding.
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded], device=device)

    if use_hf_dynamic_cache:
        cache: Any = DynamicCache(config=model.config)
        implementation = "sdpa"
        if len(set(lengths)) != 1:
            raise InvalidParameter("prompts", "the DynamicCache reference path needs prompts of equal length")
    else:
        cache = EvictionCache.for_model(
            model, config, batch_size=batch_size, eviction_seeds=eviction_seeds,
            max_new_tokens=max_new_tokens, trace_sink=trace_sink,
        )
        cache.attention_backend = attention.resolve_backend(attention_backend, device)
        cache.set_prompt_lengths(lengths)
        implementation = attention.ATTENTION_NAME

    state = _Batch(
        rows=list(range(batch_size)),
        next_positions=list(lengths),
        generators=[torch.Generator(device=device).manual_seed(int(s)) for s in seeds],
        tokens={r: [] for r in range(batch_size)},
        logprobs={r: [] for r in range(batch_size)},
    )
    finish: dict[int, str] = {}
    finished_at: dict[int, float] = {}
    evictions: dict[int, int] = {}
    peak_bytes = 0

    def kv_bytes_per_row() -> int:
        # Every row holds the same number of slots, so a row's share is the total over the rows.
        if use_hf_dynamic_cache:
            total = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.is_initialized)
        else:
            total = cache.nbytes()
        return total // len(state.rows)

    forward_kwargs = {} if use_hf_dynamic_cache else {"cache": cache}
    with attention_implementation(model, implementation):
        # Prefill: logits only where each row's prompt ends.
        last = sorted(set(n - 1 for n in lengths))
        out = model(
            input_ids=input_ids,
            position_ids=torch.arange(width, device=device).unsqueeze(0).expand(batch_size, -1),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=torch.tensor(last, device=device),
            **forward_kwargs,
        )
        index = torch.tensor([last.index(n - 1) for n in lengths], device=device)
        logits = out.logits[torch.arange(batch_size, device=device), index].float()
        peak_bytes = kv_bytes_per_row()
        decode_start = time.perf_counter()
        step = 0
        while True:
            next_tokens = _choose(logits, state, sampling, forced_tokens, step, return_logprobs)
            done_rows = []
            for i, row in enumerate(state.rows):
                token = next_tokens[i]
                state.tokens[row].append(token)
                if token in eos:
                    finish[row] = "eos"
                elif len(state.tokens[row]) >= max_new_tokens or (
                    forced_tokens is not None and len(state.tokens[row]) >= len(forced_tokens[row])
                ):
                    finish[row] = "length"
                if row in finish:
                    done_rows.append(i)
                    finished_at[row] = time.perf_counter()
                    evictions[row] = 0 if use_hf_dynamic_cache else cache.evictions[i]
            step += 1
            if on_step is not None:
                on_step(step, cache)
            if done_rows:
                keep = [i for i in range(len(state.rows)) if i not in done_rows]
                if not keep:
                    break
                keep_index = torch.tensor(keep, device=device)
                cache.batch_select_indices(keep_index)
                state.rows = [state.rows[i] for i in keep]
                state.next_positions = [state.next_positions[i] for i in keep]
                state.generators = [state.generators[i] for i in keep]
                next_tokens = [next_tokens[i] for i in keep]
            out = model(
                input_ids=torch.tensor(next_tokens, device=device).unsqueeze(1),
                position_ids=torch.tensor(state.next_positions, device=device).unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
                **forward_kwargs,
            )
            state.next_positions = [p + 1 for p in state.next_positions]
            logits = out.logits[:, -1].float()
            peak_bytes = max(peak_bytes, kv_bytes_per_row())

    results = []
    for row in range(batch_size):
        tokens = state.tokens[row]
        results.append(
            GenerationResult(
                row=row,
                prompt_tokens=lengths[row],
                tokens=tokens,
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                finish_reason=finish[row],
                evictions=evictions[row],
                decode_seconds=finished_at[row] - decode_start,
                kv_cache_bytes_peak=peak_bytes,
                logprobs=state.logprobs[row] if return_logprobs else None,
            )
        )
    return results


def _choose(
    logits: torch.Tensor,
    state: _Batch,
    sampling: SamplingConfig,
    forced_tokens: Sequence[Sequence[int]] | None,
    step: int,
    keep_logprobs: bool,
) -> list[int]:
    if keep_logprobs:
        logprobs = logits.log_softmax(dim=-1).cpu()
        for i, row in enumerate(state.rows):
            state.logprobs[row].append(logprobs[i])
    if forced_tokens is not None:
        return [int(forced_tokens[row][step]) for row in state.rows]
    if not sampling.do_sample:
        return logits.argmax(dim=-1).tolist()
    probs = _filter_logits(logits, sampling).softmax(dim=-1)
    return [
        int(torch.multinomial(probs[i], 1, generator=generator).item())
        for i, generator in enumerate(state.generators)
    ]
