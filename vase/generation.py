"""Batched decoding with an eviction cache: greedy or sampled, per-row seeds, rows leave when done."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from . import attention
from .cache import CacheConfig, EvictionCache, EventSink
from .policies import InvalidParameter


@dataclass(frozen=True)
class SamplingConfig:
    """Token selection. None fields fall back to the model's generation config.

    A temperature, top-p or top-k given while `do_sample` is unset implies sampling: the embedded
    model's generation config decodes greedily, which would silently ignore them. Given together
    with an explicit `do_sample=False` they are refused (they would have no effect).
    """

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
            do_sample=True if self.implies_sampling else bool(pick(self.do_sample, "do_sample", False)),
            temperature=float(pick(self.temperature, "temperature", 1.0)),
            top_p=float(pick(self.top_p, "top_p", 1.0)),
            top_k=int(pick(self.top_k, "top_k", 0) or 0),
        )
        self.check()
        out.check_ranges()  # the model's own defaults may sit beside do_sample=False: no conflict check
        return out

    @property
    def implies_sampling(self) -> bool:
        return self.do_sample is None and self.sampling_parameter() is not None

    def sampling_parameter(self) -> str | None:
        """The first sampling-only parameter that is set, if any."""
        return next((name for name in ("temperature", "top_p", "top_k") if getattr(self, name) is not None), None)

    def check(self) -> None:
        if self.do_sample is False and self.sampling_parameter() is not None:
            name = self.sampling_parameter()
            raise InvalidParameter(name, "only applies when sampling; drop it or the greedy choice", getattr(self, name))
        self.check_ranges()

    def check_ranges(self) -> None:
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
    # A row's share of the largest KV allocation (keys and values, every layer) from the end of the
    # prefill (after an end-of-prefill eviction, so with evict_after_prefill a long prompt counts at
    # the budget's size) to the last step. The prompt's own transient during the prefill forward is
    # not in it; without evict_after_prefill a prompt over the budget is held until the first
    # eviction and sets the peak.
    kv_cache_bytes_peak: int
    # Seconds the batch's cache spent choosing and compacting evictions (shared by its rows).
    eviction_seconds: float = 0.0
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


@dataclass
class PrefillState:
    """The prefill of a batch's distinct prompts: per layer (keys, values, recent queries, attention
    mass) and the logits at the end of each prompt. Rows are the distinct prompts, right-padded."""

    layers: list[tuple[torch.Tensor, ...]]
    logits: torch.Tensor  # [U, V]


class PrefillCache:
    """Prefills computed once per batch of prompts and reused across samples and methods.

    Every cache holds the same prompt tokens until its first eviction, so a prompt's prefill is the
    same under every method; only what a policy records during it differs. Recent queries are
    always recorded, so one prefill serves every policy; the attention mass needs eager attention,
    so policies that use it get their own prefill, and the key says so. A batch's distinct prompts
    are prefilled together once; rows repeating a prompt (a problem's samples) share its row. A
    bench keeps one per batch of problems.
    """

    def __init__(self) -> None:
        self._states: dict[tuple, PrefillState] = {}

    @staticmethod
    def key(prompts: Sequence[Sequence[int]], config: CacheConfig, backend: str) -> tuple:
        # Recent queries are always recorded (`Decoder.prefill`); attention mass needs eager attention,
        # so it is its own prefill; reference_exact sets the scoring dtype of what is recorded.
        return (tuple(tuple(p) for p in prompts), config.policy.needs_attention_weights, config.residual,
                config.reference_exact, backend)

    def get(self, key: tuple) -> PrefillState | None:
        return self._states.get(key)

    def put(self, key: tuple, state: PrefillState) -> None:
        self._states[key] = state

    def __len__(self) -> int:
        return len(self._states)


def distinct_prompts(encoded: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts in first-seen order, and for each row the index of its prompt among them."""
    index: dict[tuple[int, ...], int] = {}
    rows = [index.setdefault(tuple(e), len(index)) for e in encoded]
    return [list(p) for p in index], rows


class Decoder:
    """One batch decoding under one cache: a right-padded prefill, then one token per row per step.

    `rows` lists the original row ids still in the batch; `drop` lets finished rows leave (the
    cache shrinks with them). Callers choose tokens; the decoder only runs the model.
    """

    def __init__(
        self,
        model,
        encoded: list[list[int]],
        config: CacheConfig,
        *,
        pad_token_id: int,
        eviction_seeds: Sequence[int],
        max_new_tokens: int | None,
        trace_sink: EventSink | None = None,
        attention_backend: str = "auto",
        profile: bool = False,
        use_hf_dynamic_cache: bool = False,
        prefills: PrefillCache | None = None,
    ):
        self.model = model
        self.config = config
        self.attention_backend = attention_backend
        self.prefills = prefills if not use_hf_dynamic_cache else None
        self.device = model.device
        self.encoded = encoded
        self.prompt_lengths = [len(ids) for ids in encoded]
        self.rows = list(range(len(encoded)))
        self.next_positions = list(self.prompt_lengths)
        self.pad_token_id = pad_token_id
        self.hf = use_hf_dynamic_cache
        if use_hf_dynamic_cache:
            if config.policy.kind != "none":
                raise InvalidParameter("use_hf_dynamic_cache", "only applies to method 'full'")
            if len(set(self.prompt_lengths)) != 1:
                raise InvalidParameter("prompts", "the DynamicCache reference path needs prompts of equal length")
            self.cache: Any = DynamicCache(config=model.config)
            self.implementation = "sdpa"
        else:
            self.cache = EvictionCache.for_model(
                model, config, batch_size=len(encoded), eviction_seeds=eviction_seeds,
                max_new_tokens=max_new_tokens, trace_sink=trace_sink,
            )
            self.cache.attention_backend = attention.resolve_backend(attention_backend, self.device)
            self.cache.set_prompt_lengths(self.prompt_lengths)
            self.cache.profile = profile
            self.implementation = attention.ATTENTION_NAME

    def prefill(self) -> torch.Tensor:
        """Logits [B, V] at the end of each row's prompt (from `prefills` when it has these prompts)."""
        if self.prefills is None:
            return self._run_prefill()
        prompts, row_prompt = distinct_prompts(self.encoded)
        key = PrefillCache.key(prompts, self.config, self.cache.attention_backend)
        state = self.prefills.get(key)
        if state is None:
            once = Decoder(self.model, prompts, dataclasses.replace(self.config, evict_after_prefill=False),
                           pad_token_id=self.pad_token_id, eviction_seeds=[0] * len(prompts), max_new_tokens=1,
                           attention_backend=self.attention_backend)
            once.cache.records_queries = True  # for any policy that loads this prefill
            logits = once._run_prefill()
            state = PrefillState([layer.prefill_state() for layer in once.cache.layers], logits)
            self.prefills.put(key, state)
        rows = torch.tensor(row_prompt, device=self.device)
        for layer, saved in zip(self.cache.layers, state.layers):
            layer.load_prefill(*saved, rows=rows)
        return state.logits[rows]

    def _run_prefill(self) -> torch.Tensor:
        width = max(self.prompt_lengths)
        # Right padding: each row's real tokens come first, so causal attention never sees the padding.
        ids = [row + [self.pad_token_id] * (width - len(row)) for row in self.encoded]
        last = sorted(set(n - 1 for n in self.prompt_lengths))
        batch = len(ids)
        out = attention.forward(
            self.model,
            self.cache,
            input_ids=torch.tensor(ids, device=self.device),
            position_ids=torch.arange(width, device=self.device).unsqueeze(0).expand(batch, -1),
            logits_to_keep=torch.tensor(last, device=self.device),
        )
        index = torch.tensor([last.index(n - 1) for n in self.prompt_lengths], device=self.device)
        return out.logits[torch.arange(batch, device=self.device), index].float()

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token per remaining row; logits [rows, V] for the next."""
        out = attention.forward(
            self.model,
            self.cache,
            input_ids=torch.tensor(list(tokens), device=self.device).unsqueeze(1),
            position_ids=torch.tensor(self.next_positions, device=self.device).unsqueeze(1),
        )
        self.next_positions = [p + 1 for p in self.next_positions]
        return out.logits[:, -1].float()

    def drop(self, keep: list[int]) -> None:
        """Keep only the rows at these batch indices."""
        self.cache.batch_select_indices(torch.tensor(keep, device=self.device))
        self.rows = [self.rows[i] for i in keep]
        self.next_positions = [self.next_positions[i] for i in keep]

    def evictions(self, index: int) -> int:
        return 0 if self.hf else self.cache.evictions[index]

    @property
    def eviction_seconds(self) -> float:
        return 0.0 if self.hf else self.cache.eviction_seconds

    def kv_bytes_per_row(self) -> int:
        """A row's share of the KV storage (every row holds the same number of slots)."""
        if self.hf:
            total = sum(layer.keys.nbytes + layer.values.nbytes for layer in self.cache.layers if layer.is_initialized)
        else:
            total = self.cache.nbytes()
        return total // len(self.rows)


def prepare(
    tokenizer, prompts, *, method, params, budget, residual, max_new_tokens, seeds, eviction_seeds,
    reference_exact=False,
    evict_after_prefill=False,
) -> tuple[CacheConfig, list[list[int]], list[int], list[int]]:
    """Validate a generation request; every rule names the parameter it checks."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidParameter("max_new_tokens", "must be an integer >= 1", max_new_tokens)
    config = CacheConfig.build(method, params, budget=budget, residual=residual, reference_exact=reference_exact,
                               evict_after_prefill=evict_after_prefill)
    encoded = _encode(tokenizer, prompts)
    seeds = list(seeds) if seeds is not None else list(range(len(encoded)))
    if len(seeds) != len(encoded):
        raise InvalidParameter("seeds", f"needs one seed per prompt ({len(encoded)})", len(seeds))
    eviction_seeds = list(eviction_seeds) if eviction_seeds is not None else [eviction_seed(s) for s in seeds]
    if len(eviction_seeds) != len(encoded):
        raise InvalidParameter("eviction_seeds", f"needs one seed per prompt ({len(encoded)})", len(eviction_seeds))
    return config, encoded, seeds, eviction_seeds


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


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
    evict_after_prefill: bool = False,
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
    profile: bool = False,
    reference_exact: bool = False,
    prefills: PrefillCache | None = None,
) -> list[GenerationResult]:
    """Generate for each prompt (a batch) under one cache method; one result per prompt, in order.

    `seeds` seed each row's sampling; `eviction_seeds` (default: derived from `seeds`) seed the
    stochastic policies, so the same seeds reproduce evictions and tokens. `forced_tokens` replays
    given continuations teacher-forced, `return_logprobs` keeps each step's log-probabilities.
    `evict_after_prefill` evicts once at the end of the prefill when a prompt exceeds the budget
    (off in the authors' code). `use_hf_dynamic_cache` runs `full` on transformers' DynamicCache
    with SDPA, as a reference point for benchmarks. `profile` synchronises the GPU around evictions
    so `eviction_seconds` is exact. `reference_exact` runs the cache as the authors' code does (see
    `vase.cache`). `prefills` computes the prefill of the batch's distinct prompts once and reuses it
    (`PrefillCache`).
    """
    config, encoded, seeds, eviction_seeds = prepare(
        tokenizer, prompts, method=method, params=params, budget=budget, residual=residual,
        max_new_tokens=max_new_tokens, seeds=seeds, eviction_seeds=eviction_seeds, reference_exact=reference_exact,
        evict_after_prefill=evict_after_prefill,
    )
    sampling = (sampling or SamplingConfig()).resolved(model)
    if forced_tokens is not None and len(forced_tokens) != len(encoded):
        raise InvalidParameter("forced_tokens", f"needs one continuation per prompt ({len(encoded)})")
    decoder = Decoder(
        model, encoded, config, pad_token_id=pad_id(tokenizer), eviction_seeds=eviction_seeds,
        max_new_tokens=max_new_tokens, trace_sink=trace_sink, attention_backend=attention_backend,
        profile=profile, use_hf_dynamic_cache=use_hf_dynamic_cache, prefills=prefills,
    )
    eos = _eos_ids(model, tokenizer) if stop_at_eos else set()
    generators = [torch.Generator(device=model.device).manual_seed(int(s)) for s in seeds]
    tokens: dict[int, list[int]] = {r: [] for r in decoder.rows}
    logprobs: dict[int, list[torch.Tensor]] = {r: [] for r in decoder.rows}
    finish: dict[int, str] = {}
    finished_at: dict[int, float] = {}
    evictions: dict[int, int] = {}

    with attention_implementation(model, decoder.implementation):
        logits = decoder.prefill()
        peak_bytes = decoder.kv_bytes_per_row()
        decode_start = time.perf_counter()
        step = 0
        while True:
            if return_logprobs:
                rows_logprobs = logits.log_softmax(dim=-1).cpu()
                for i, row in enumerate(decoder.rows):
                    logprobs[row].append(rows_logprobs[i])
            if forced_tokens is not None:
                chosen = [int(forced_tokens[row][step]) for row in decoder.rows]
            else:
                chosen = choose_tokens(logits, sampling, [generators[row] for row in decoder.rows])
            keep = []
            for i, (row, token) in enumerate(zip(decoder.rows, chosen)):
                tokens[row].append(token)
                if token in eos:
                    finish[row] = "eos"
                elif len(tokens[row]) >= max_new_tokens or (
                    forced_tokens is not None and len(tokens[row]) >= len(forced_tokens[row])
                ):
                    finish[row] = "length"
                if row in finish:
                    finished_at[row] = time.perf_counter()
                    evictions[row] = decoder.evictions(i)
                else:
                    keep.append(i)
            step += 1
            if on_step is not None:
                on_step(step, decoder.cache)
            if not keep:
                break
            if len(keep) < len(decoder.rows):
                decoder.drop(keep)
                chosen = [chosen[i] for i in keep]
            logits = decoder.step(chosen)
            peak_bytes = max(peak_bytes, decoder.kv_bytes_per_row())

    return [
        GenerationResult(
            row=row,
            prompt_tokens=decoder.prompt_lengths[row],
            tokens=tokens[row],
            text=tokenizer.decode(tokens[row], skip_special_tokens=True),
            finish_reason=finish[row],
            evictions=evictions[row],
            decode_seconds=finished_at[row] - decode_start,
            kv_cache_bytes_peak=peak_bytes,
            eviction_seconds=decoder.eviction_seconds,
            logprobs=logprobs[row] if return_logprobs else None,
        )
        for row in range(len(encoded))
    ]


def choose_tokens(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator]) -> list[int]:
    """Greedy argmax, or one draw per row from that row's own generator."""
    if not sampling.do_sample:
        return logits.argmax(dim=-1).tolist()
    probs = _filter_logits(logits, sampling).softmax(dim=-1)
    return [int(torch.multinomial(probs[i], 1, generator=g).item()) for i, g in enumerate(generators)]
