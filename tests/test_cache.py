"""The eviction cache on real forward passes: the embedded SmolLM2 (Llama) and a tiny Qwen3."""

import pytest
import torch

from vase import attention
from vase.cache import CacheConfig, EvictionCache, compact_in_place
from vase.generation import attention_implementation, generate
from vase.policies import EvictionContext, policy_class, policy_names
from vase.policies.scores import value_magnitude

EVICTION_METHODS = [m for m in policy_names() if policy_class(m).kind == "eviction"]
PROMPT = "The quick brown fox jumps over the lazy dog. In the beginning there was a small village by the sea."
LONG_PROMPT = " ".join([PROMPT] * 4)  # 88 tokens


def drive(model, tokenizer, method, *, budget, residual, steps, params=None, sink=None, prompt=PROMPT,
          evict_after_prefill=False):
    """Prefill then feed greedy tokens one by one; yields (cache, logical length) after every step."""
    config = CacheConfig.build(method, params, budget=budget, residual=residual,
                               evict_after_prefill=evict_after_prefill)
    cache = EvictionCache.for_model(model, config, batch_size=1, trace_sink=sink, max_new_tokens=steps + 1)
    cache.attention_backend = "sdpa"
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode(), attention_implementation(model, attention.ATTENTION_NAME):
        out = attention.forward(model, cache, input_ids=ids)
        length = ids.shape[1]
        yield cache, length
        for _ in range(steps):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = attention.forward(model, cache, input_ids=token, position_ids=torch.tensor([[length]]))
            length += 1
            yield cache, length


@pytest.fixture(scope="module")
def smollm2_full(smollm2):
    model, tokenizer = smollm2
    return generate(model, tokenizer, [PROMPT], method="full", max_new_tokens=12, return_logprobs=True)[0]


@pytest.mark.parametrize("method", [m for m in policy_names() if m != "full"])
def test_budget_above_length_gives_full_cache_logits_smollm2(smollm2, smollm2_full, method):
    model, tokenizer = smollm2
    params = {"n_large": 16} if method in ("vase", "attn-random") else None
    full = smollm2_full
    got = generate(model, tokenizer, [PROMPT], method=method, params=params, budget=128, residual=16,
                   max_new_tokens=12, return_logprobs=True)[0]
    assert got.evictions == 0
    assert got.tokens == full.tokens
    for a, b in zip(full.logprobs, got.logprobs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_full_cache_matches_transformers_dynamic_cache(smollm2):
    model, tokenizer = smollm2
    ours = generate(model, tokenizer, [PROMPT], method="full", max_new_tokens=16, return_logprobs=True)[0]
    ref = generate(model, tokenizer, [PROMPT], method="full", max_new_tokens=16, return_logprobs=True,
                   use_hf_dynamic_cache=True)[0]
    assert ours.tokens == ref.tokens
    for a, b in zip(ours.logprobs, ref.logprobs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_qwen3", "smollm2"])
@pytest.mark.parametrize("method", ["vase", "vase-dkv", "snapkv", "streamingllm", "h2o"])
def test_eviction_schedule_sinks_window_and_positions(request, fixture, method):
    model, tokenizer = request.getfixturevalue(fixture)
    budget, residual = 32, 8
    params = {"n_large": 8} if method == "vase" else None
    expected = None
    for cache, logical in drive(model, tokenizer, method, budget=budget, residual=residual, steps=40, params=params):
        lengths = [layer.lengths[0] for layer in cache.layers]
        if expected is None:
            expected = logical  # prompt: stored whole, no eviction during prefill
        else:
            expected += 1
            if expected > budget and expected % residual == 0:
                expected = budget
        assert lengths == [expected] * len(cache.layers)
        for layer in cache.layers:
            held = layer.positions[0, :, : layer.lengths[0]]
            assert (held.diff(dim=-1) > 0).all()  # distinct, in position order
            recent = torch.arange(max(0, logical - residual), logical)
            assert torch.isin(recent, held).all()  # the recency window is always kept
            if method in ("vase", "vase-dkv", "streamingllm"):
                assert torch.isin(torch.arange(4), held).all()  # sinks
    assert cache.evictions[0] > 0


@pytest.mark.parametrize("method", ["vase", "vase-dkv", "snapkv", "streamingllm", "h2o", "random"])
def test_evict_after_prefill_leaves_the_cache_at_the_budget(tiny_qwen3, method):
    """With evict_after_prefill a prompt over the budget is evicted at the end of the prefill: the
    cache holds `budget` tokens (the prompt's last `residual` among them) before the first decode
    step; later evictions follow the usual schedule from there."""
    model, tokenizer = tiny_qwen3
    budget, residual = 16, 8
    params = {"n_large": 4} if method == "vase" else None
    prompt_len = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    assert prompt_len > budget
    steps = drive(model, tokenizer, method, budget=budget, residual=residual, steps=20, params=params,
                  evict_after_prefill=True)
    cache, logical = next(steps)
    assert logical == prompt_len
    assert [layer.lengths[0] for layer in cache.layers] == [budget] * len(cache.layers)
    assert cache.evictions == [1]
    for layer in cache.layers:
        held = layer.positions[0, :, :budget]
        assert (held.diff(dim=-1) > 0).all()
        assert torch.isin(torch.arange(prompt_len - residual, prompt_len), held).all()
    expected = budget
    for cache, logical in steps:
        expected += 1
        if expected % residual == 0 and expected > budget:
            expected = budget
        assert [layer.lengths[0] for layer in cache.layers] == [expected] * len(cache.layers)
    # Off (the default, as in the authors' code): the prefill stores the whole prompt.
    cache, _ = next(drive(model, tokenizer, method, budget=budget, residual=residual, steps=0, params=params))
    assert cache.layers[0].lengths[0] == prompt_len and cache.evictions == [0]
    # A prompt within the budget is not evicted either way.
    cache, _ = next(drive(model, tokenizer, method, budget=64, residual=residual, steps=0, params=params,
                          evict_after_prefill=True))
    assert cache.layers[0].lengths[0] == prompt_len and cache.evictions == [0]


@pytest.mark.parametrize("method,params", [("snapkv", None), ("vase", {"n_large": 4})])
@pytest.mark.parametrize("reference_exact", [False, True])
def test_stored_keys_match_their_original_positions(tiny_qwen3, method, params, reference_exact):
    """Layer 0's keys depend only on (token, position): each kept slot equals the full forward's key.
    Reference-exact slots are not in position order; `positions` must follow them all the same."""
    from transformers import DynamicCache

    model, tokenizer = tiny_qwen3
    fed: list[int] = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    config = CacheConfig.build(method, params, budget=24, residual=8, reference_exact=reference_exact)
    cache = EvictionCache.for_model(model, config, batch_size=1)
    cache.attention_backend = "sdpa"
    with torch.inference_mode(), attention_implementation(model, attention.ATTENTION_NAME):
        out = attention.forward(model, cache, input_ids=torch.tensor([fed]))
        for _ in range(30):
            token = int(out.logits[0, -1].argmax())
            out = attention.forward(model, cache, input_ids=torch.tensor([[token]]),
                                    position_ids=torch.tensor([[len(fed)]]))
            fed.append(token)
    assert cache.evictions[0] > 0
    reference = DynamicCache(config=model.config)
    with torch.inference_mode():
        attention.forward(model, reference, input_ids=torch.tensor([fed]))
    full_keys = reference.layers[0].keys[0]  # [H, T, D]
    layer = cache.layers[0]
    n = layer.lengths[0]
    for head in range(full_keys.shape[0]):
        positions = layer.positions[0, head, :n]
        torch.testing.assert_close(layer.keys[0, head, :n], full_keys[head, positions], atol=1e-5, rtol=1e-5)
        assert torch.equal(layer.held_positions(0, head), positions)
        assert positions.unique().numel() == n
        kept = positions[: config.keep]
        assert bool((kept.diff() > 0).all()) != reference_exact  # ranking order, not position order


def test_vase_keeps_the_top_value_range_tokens(smollm2):
    model, tokenizer = smollm2
    events = []
    n_large = 8
    for _ in drive(model, tokenizer, "vase", budget=32, residual=8, steps=24, params={"n_large": n_large},
                   sink=events.append):
        pass
    assert events
    for event in events:
        positions = torch.cat([event.kept_positions, event.evicted_positions], dim=1)
        magnitude = torch.cat([event.kept_magnitude, event.evicted_magnitude], dim=1)
        magnitude = magnitude.masked_fill(positions < 4, float("inf"))
        top = positions.gather(1, magnitude.topk(n_large, dim=1).indices)
        for head in range(top.shape[0]):
            assert torch.isin(top[head], event.kept_positions[head]).all()
        assert event.evicted_positions.shape[1] == event.residual  # residual evicted per head


def test_trace_events_partition_the_candidates(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    events = []
    for cache, logical in drive(model, tokenizer, "vase-dkv", budget=24, residual=8, steps=30, sink=events.append):
        pass
    layers = len(cache.layers)
    assert len(events) == cache.evictions[0] * layers
    for e in events:
        union = torch.cat([e.kept_positions, e.evicted_positions], dim=1).sort(dim=1).values
        assert (union.diff(dim=1) > 0).all()
        assert e.kept_positions.shape[1] == 24 - 8
        assert e.logical_length % 8 == 0 and e.logical_length > 24


def test_kv_storage_does_not_grow_after_the_budget(tiny_qwen3):
    """Allocated once at the prefill for the whole prompt, shrunk once at the first eviction to the
    budget plus the recency window, never reallocated after that."""
    model, tokenizer = tiny_qwen3
    budget, residual = 24, 8
    prompt_len = len(tokenizer(LONG_PROMPT, add_special_tokens=False)["input_ids"])
    assert prompt_len > budget + residual
    capacities, pointers = [], []
    for cache, _ in drive(model, tokenizer, "vase", budget=budget, residual=residual, steps=60,
                          params={"n_large": 4}, prompt=LONG_PROMPT):
        capacities.append(cache.layers[0].capacity)
        pointers.append(cache.layers[0].keys.data_ptr())
    assert cache.evictions[0] > 1
    first = capacities.index(budget + residual)  # the step of the first eviction
    assert capacities[:first] == [prompt_len + residual] * first
    assert capacities[first:] == [budget + residual] * (len(capacities) - first)
    assert len(set(pointers[:first])) == 1 and len(set(pointers[first:])) == 1


def _eviction_params(method: str) -> dict | None:
    """Parameters that let `method` run with budget 16, residual 8 on the tiny model."""
    return {"n_large": 4} if method in ("vase", "attn-random") else None


@pytest.mark.parametrize("evict_after_prefill", [False, True])
@pytest.mark.parametrize("method", EVICTION_METHODS)
def test_an_eviction_releases_the_prompt_slots(tiny_qwen3, method, evict_after_prefill):
    """Once a row has evicted it holds at most budget + residual slots; the prompt's other slots are
    freed, and `nbytes` reports what remains."""
    model, tokenizer = tiny_qwen3
    budget, residual = 16, 8
    prompt_len = len(tokenizer(LONG_PROMPT, add_special_tokens=False)["input_ids"])
    assert prompt_len > budget + residual
    for cache, _ in drive(model, tokenizer, method, budget=budget, residual=residual, steps=12,
                          params=_eviction_params(method), evict_after_prefill=evict_after_prefill,
                          prompt=LONG_PROMPT):
        expected = budget + residual if cache.evictions[0] else prompt_len + residual
        for layer in cache.layers:
            assert layer.capacity == expected
            assert layer.nbytes() == 2 * layer.keys[0, :, 0].numel() * expected * layer.keys.element_size()
            assert layer.positions.shape[2] == expected
            if layer.accumulated is not None:
                assert layer.accumulated.shape[2] == expected
        if evict_after_prefill:
            assert cache.evictions[0] >= 1  # at the budget from the end of the prefill on
    assert cache.evictions[0] > 0


def _prompt_of(tokenizer, n: int) -> list[int]:
    ids = tokenizer(LONG_PROMPT, add_special_tokens=False)["input_ids"]
    assert len(ids) >= n
    return ids[:n]


@pytest.mark.parametrize("method", EVICTION_METHODS)
def test_rows_that_evict_later_keep_their_slots(tiny_qwen3, method):
    """Right-padded rows evict at different steps: the first row (47 tokens) evicts after one step,
    the second (33) only after seven; until then the cache keeps room for the second row's growth,
    and every row decodes exactly as it does alone (a dropped live slot would change its tokens, an
    undersized buffer would overflow)."""
    model, tokenizer = tiny_qwen3
    budget, residual, steps = 16, 8, 24
    prompts = [_prompt_of(tokenizer, 47), _prompt_of(tokenizer, 33)]
    kwargs = dict(method=method, params=_eviction_params(method), budget=budget, residual=residual,
                  max_new_tokens=steps, stop_at_eos=False)
    seen = []  # (lengths, capacity, evictions) before each decode step

    def record(step, cache):
        seen.append((list(cache.layers[0].lengths), cache.layers[0].capacity, list(cache.evictions)))

    batch = generate(model, tokenizer, prompts, seeds=[1, 2], on_step=record, **kwargs)
    # After step 1 the first row has evicted (48 -> 16); the second holds 34 and evicts at 40.
    assert seen[1] == ([budget, 34], 40, [1, 0])
    for (_, before, evicted_before), (lengths, capacity, evicted) in zip(seen, seen[1:]):
        # At an eviction: the longest row's next eviction length (the first multiple of the residual
        # above both its length and the budget), if that is less than before; unchanged in between.
        reach = (max(budget, *lengths) // residual + 1) * residual
        assert capacity == (min(before, reach) if evicted != evicted_before else before)
        assert capacity >= max(lengths) + 1  # room for the next token
    assert seen[-1][1] == budget + residual
    for prompt, seed, got in zip(prompts, [1, 2], batch):
        alone = generate(model, tokenizer, [prompt], seeds=[seed], **kwargs)[0]
        assert got.tokens == alone.tokens
        assert got.evictions == alone.evictions > 1


def test_quest_selects_at_most_the_budget_in_pages():
    from vase.policies import build_policy

    quest = build_policy("quest")
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 2, 100, 8, generator=g)
    query = torch.randn(2, 4, 1, 8, generator=g)
    mask = quest.select(query, keys, [100, 70], budget=32)
    assert mask.shape == (2, 4, 1, 100)
    assert (mask.sum(-1) <= 32).all()
    assert mask[0, :, 0, 96:100].all() and mask[1, :, 0, 64:70].all()  # the newest page is always attended
    assert not mask[1, :, 0, 70:].any()  # nothing past a row's length


def _tiny(architecture: str):
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
               "qwen3": (Qwen3Config, Qwen3ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    config_cls, model_cls = classes[architecture]
    extra = {"sliding_window": None} if architecture == "mistral" else {}
    config = config_cls(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, **extra)
    torch.manual_seed(0)
    return model_cls(config).eval()


class _Ids:
    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "qwen3", "mistral"])
def test_architectures_run_through_the_registered_attention(architecture):
    model = _tiny(architecture)
    prompt = [list(range(3, 23))]
    full = generate(model, _Ids(), prompt, method="full", max_new_tokens=40, return_logprobs=True, stop_at_eos=False,
                    use_hf_dynamic_cache=True)[0]
    roomy = generate(model, _Ids(), prompt, method="vase", budget=128, residual=8, max_new_tokens=40, stop_at_eos=False,
                     return_logprobs=True)[0]
    assert roomy.tokens == full.tokens
    for a, b in zip(full.logprobs, roomy.logprobs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    tight = generate(model, _Ids(), prompt, method="vase", budget=16, residual=8, max_new_tokens=40,
                     stop_at_eos=False)[0]
    assert tight.evictions == 5  # logical 24, 32, 40, 48, 56 (prompt 20, 39 tokens fed)


def test_flash_backend_needs_cuda_and_flash_attn():
    from vase.attention import resolve_backend

    if not attention.flash_available():
        with pytest.raises(ValueError, match="attention_backend"):
            resolve_backend("flash", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="attention_backend"):
        resolve_backend("paged", torch.device("cpu"))


@pytest.mark.parametrize("feature", [5, None])
def test_compact_in_place_moves_the_kept_slots_to_the_front(feature):
    """The front ends up as a plain gather of the kept slots; nothing past it is touched."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 40) + ((feature,) if feature else ())
    stored = torch.randn(*shape, generator=g)
    kept = torch.rand(2, 3, 36, generator=g).argsort(dim=-1)[..., :30].sort(dim=-1).values  # 30 of the first 36
    index = kept.unsqueeze(-1).expand(-1, -1, -1, feature) if feature else kept
    expected_front = stored.gather(2, index)
    expected_rest = stored[:, :, 30:].clone()
    compact_in_place(stored, kept)
    assert torch.equal(stored[:, :, :30], expected_front)
    assert torch.equal(stored[:, :, 30:], expected_rest)  # nothing past the kept slots is touched



@pytest.mark.parametrize("method", EVICTION_METHODS)
def test_eviction_keeps_the_top_scores_in_position_order(method):
    """One eviction: the cache holds exactly the top-K candidates by the policy's score (same seeds), in
    position order, then the recency window."""
    batch, heads, q_heads, head_dim, budget, residual = 2, 4, 8, 128, 1024, 64
    length, keep = budget + residual, budget - residual
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(batch, heads, length, head_dim, generator=g)
    values = torch.randn(batch, heads, length, head_dim, generator=g)
    queries = torch.randn(batch, q_heads, residual, head_dim, generator=g)
    accumulated = torch.rand(batch, heads, length, generator=g)
    config = CacheConfig.build(method, budget=budget, residual=residual)
    cache = EvictionCache(config, 1, batch_size=batch, eviction_seeds=[5, 6])
    layer = cache.layers[0]
    layer.lazy_initialization(keys, values)
    layer.keys[:, :, :length], layer.values[:, :, :length] = keys, values
    layer.positions[:, :, :length] = torch.arange(length)
    if layer.accumulated is not None:
        layer.accumulated[:, :, :length] = accumulated
    layer.queries, layer.query_slot = queries.clone(), 0
    # What a straightforward selection keeps: top-K of the policy's scores, sorted.
    ctx = EvictionContext(
        keys=keys[:, :, :budget].clone(), values=values[:, :, :budget].clone(),
        positions=torch.arange(budget).expand(batch, heads, budget), budget=budget, residual=residual,
        queries=queries, newest_query=queries[:, :, -1:], accumulated_attention=accumulated[:, :, :budget],
        generators=[torch.Generator().manual_seed(s) for s in (5, 6)], row_states=[{}, {}],
    )
    scores = torch.nan_to_num(config.policy.score(ctx).float(), nan=torch.finfo(torch.float32).min,
                              neginf=torch.finfo(torch.float32).min)
    kept = scores.topk(keep, dim=-1).indices.sort(dim=-1).values
    # The decode step that makes the cache `length` long: eviction is due.
    layer.starts, layer.logical, layer.pending_tokens = [length - 1] * batch, [length - 1] * batch, 1
    layer.finish_forward()
    assert layer.lengths == [budget] * batch
    window = torch.arange(budget, length).expand(batch, heads, residual)
    assert torch.equal(layer.positions[:, :, :budget], torch.cat([kept, window], dim=-1))
    slots = torch.cat([kept, window], dim=-1).unsqueeze(-1).expand(-1, -1, -1, head_dim)
    assert torch.equal(layer.keys[:, :, :budget], keys.gather(2, slots))
    assert torch.equal(layer.values[:, :, :budget], values.gather(2, slots))
