"""Scores on hand-built tensors against a direct, loop-by-loop reading of the spec's formulas."""

import math

import pytest
import torch

from vase.policies import EvictionContext, InvalidParameter, build_policy, policy_names, validate_geometry
from vase.policies.scores import cur_scores, gumbel_keys, key_redundancy, value_magnitude, window_attention

B, HQ, H, W, N, D = 2, 6, 2, 4, 11, 8  # 3 query heads per KV head


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "q": torch.randn(B, HQ, W, D, generator=g),
        "k": torch.randn(B, H, N, D, generator=g),
        "v": torch.randn(B, H, N, D, generator=g),
    }


def direct_attention(q, k, smoothing, tau=1.0):
    groups = HQ // H
    out = torch.zeros(B, H, N)
    for b in range(B):
        for kv in range(H):
            per_head = []
            for g in range(groups):
                qh = kv * groups + g
                rows = []
                for w in range(W):
                    logits = torch.tensor([float(q[b, qh, w] @ k[b, kv, j]) / (math.sqrt(D) * tau) for j in range(N)])
                    rows.append(torch.softmax(logits, 0))
                mean = torch.stack(rows).mean(0)
                if smoothing:  # average pool, kernel 5, zero padding 2, divisor always 5
                    padded = torch.cat([torch.zeros(2), mean, torch.zeros(2)])
                    mean = torch.stack([padded[j : j + 5].sum() / 5 for j in range(N)])
                per_head.append(mean)
            out[b, kv] = torch.stack(per_head).mean(0)
    return out


@pytest.mark.parametrize("smoothing", [False, True])
def test_window_attention_matches_the_formula(tensors, smoothing):
    got = window_attention(tensors["q"], tensors["k"], smoothing=smoothing)
    assert torch.allclose(got, direct_attention(tensors["q"], tensors["k"], smoothing), atol=1e-6)


@pytest.mark.parametrize("smoothing", [False, True])
def test_window_attention_is_the_same_whatever_the_chunking(tensors, smoothing):
    """Chunks of one KV head, of three, or all four (b, h) pairs at once give the very same floats."""
    per_head = (HQ // H) * W * N * 4
    whole = window_attention(tensors["q"], tensors["k"], smoothing=smoothing, chunk_bytes=1 << 30)
    for chunk_bytes in (1, 3 * per_head):
        got = window_attention(tensors["q"], tensors["k"], smoothing=smoothing, chunk_bytes=chunk_bytes)
        assert torch.equal(got, whole)
    assert torch.allclose(whole, direct_attention(tensors["q"], tensors["k"], smoothing), atol=1e-6)


def test_temperature_divides_the_logits(tensors):
    got = window_attention(tensors["q"], tensors["k"], smoothing=False, temperature=2.0)
    assert torch.allclose(got, direct_attention(tensors["q"], tensors["k"], False, tau=2.0), atol=1e-6)


def test_value_magnitudes(tensors):
    v = tensors["v"]
    for b in range(B):
        for h in range(H):
            for j in range(N):
                vec = v[b, h, j]
                assert value_magnitude(v, "range")[b, h, j] == pytest.approx(float(vec.max() - vec.min()), abs=1e-6)
                assert value_magnitude(v, "l2")[b, h, j] == pytest.approx(float(vec.pow(2).sum().sqrt()), abs=1e-5)
                assert value_magnitude(v, "var")[b, h, j] == pytest.approx(float(vec.var()), abs=1e-5)


def test_cur_scores_match_the_formula(tensors):
    k, v = tensors["k"], tensors["v"]
    G = torch.randn(B, D, 20, generator=torch.Generator().manual_seed(1)) / math.sqrt(20)
    got = cur_scores(k, v, G)
    for b in range(B):
        for h in range(H):
            raw = torch.tensor([float((k[b, h, j] @ G[b]).pow(2).sum() * (v[b, h, j] @ G[b]).pow(2).sum()) for j in range(N)])
            assert torch.allclose(got[b, h], raw / raw.sum(), atol=1e-6)


def test_rkv_redundancy_matches_the_formula(tensors):
    k = tensors["k"]
    got = key_redundancy(k)
    for b in range(B):
        for h in range(H):
            unit = [k[b, h, j] / k[b, h, j].norm() for j in range(N)]
            mean_sim = torch.tensor([sum(float(unit[i] @ unit[j]) for j in range(N) if j != i) / N for i in range(N)])
            assert torch.allclose(got[b, h], torch.softmax(mean_sim, 0), atol=1e-6)


def test_rkv_redundancy_keeps_what_the_similarity_matrix_keeps():
    """At a realistic size, R-KV's kept set equals the one from the full N x N cosine-similarity matrix."""
    g = torch.Generator().manual_seed(3)
    n, keep = 1024, 960
    keys = torch.randn(2, 4, n, 64, generator=g) + torch.randn(64, generator=g)  # a shared direction, as in models
    attention = torch.softmax(2 * torch.randn(2, 4, n, generator=g), dim=-1)
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    similarity = unit @ unit.transpose(-1, -2)
    similarity.diagonal(dim1=-2, dim2=-1).zero_()
    expected = similarity.sum(dim=-1).div(n).softmax(dim=-1)
    got = key_redundancy(keys)
    assert torch.allclose(got, expected, rtol=1e-5, atol=0)
    kept = (0.5 * attention - 0.5 * got).topk(keep, dim=-1).indices.sort(dim=-1).values
    expected_kept = (0.5 * attention - 0.5 * expected).topk(keep, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(kept, expected_kept)


def context(tensors, **extra):
    positions = torch.arange(N).expand(B, H, N)
    gens = [torch.Generator().manual_seed(s) for s in range(B)]
    return EvictionContext(
        keys=tensors["k"], values=tensors["v"], positions=positions, budget=N + 1, residual=4,
        queries=tensors["q"], newest_query=tensors["q"][:, :, -1:], generators=gens, row_states=[{}, {}], **extra,
    )


def test_vase_reserves_the_largest_values_and_sinks(tensors):
    ctx = context(tensors)  # keep = budget - residual = 8 of 11
    policy = build_policy("vase", {"n_large": 5})
    scores = policy.score(ctx)
    magnitude = value_magnitude(tensors["v"], "range")
    magnitude[..., :4] = float("inf")
    reserved = magnitude.topk(5, dim=-1).indices
    assert torch.isinf(scores.gather(-1, reserved)).all()
    assert torch.isinf(scores).sum() == B * H * 5


def test_gumbel_keys_sample_in_proportion_to_weights():
    # Drawing 1 of 3 items: the top key lands on each item about as often as its weight says.
    weights = torch.tensor([[0.6, 0.3, 0.1]])
    counts = torch.zeros(3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4000):
        counts[gumbel_keys(weights, [gen]).argmax()] += 1
    assert torch.allclose(counts / 4000, weights[0], atol=0.03)
    # A zero weight is never drawn ahead of a positive one.
    keys = gumbel_keys(torch.tensor([[0.0, 1e-9, 1.0]]), [gen])
    assert keys[0, 0] == float("-inf")


def test_dkv_sinks_score_one_and_resample_per_eviction(tensors):
    policy = build_policy("vase-dkv")
    first = policy.score(context(tensors))
    assert (first[..., :4] == 1.0).all() and (first[..., 4:] < 1.0).all()
    ctx = context(tensors)
    a, b = policy.score(ctx), policy.score(ctx)  # same generators advance: a fresh G each time
    assert not torch.allclose(a, b)
    fixed = build_policy("cur-fixed")
    ctx = context(tensors)
    assert torch.allclose(fixed.score(ctx), fixed.score(ctx))  # G drawn once, reused


def test_streamingllm_prefers_sinks_then_recent(tensors):
    scores = build_policy("streamingllm").score(context(tensors))
    kept = scores.topk(7, dim=-1).indices.sort(dim=-1).values
    assert kept[0, 0].tolist() == [0, 1, 2, 3, 8, 9, 10]


def test_evict_large_keeps_the_smallest_ranges(tensors):
    scores = build_policy("evict-large").score(context(tensors))
    assert torch.equal(scores.argmax(-1), value_magnitude(tensors["v"]).argmin(-1))


@pytest.mark.parametrize(
    "budget,residual,param",
    [(64, 64, "budget"), (100, 64, "budget"), (0, 64, "budget"), (128, 0, "residual"), (128, -8, "residual")],
)
def test_geometry_rules_name_the_parameter(budget, residual, param):
    with pytest.raises(InvalidParameter) as err:
        validate_geometry(budget, residual, kind="eviction")
    assert err.value.param == param and param in str(err.value)


@pytest.mark.parametrize(
    "name,params,param",
    [
        ("vase", {"n_large": -3}, "n_large"),
        ("rkv", {"lam": 1.5}, "lam"),
        ("value-norm", {"metric": "max"}, "metric"),
        ("snapkv", {"window": 3}, "window"),
        ("vase", {"n_large": "many"}, "n_large"),
        ("vase", {"metric": "max"}, "metric"),
        ("range-attn", {"metric": "mean"}, "metric"),
        ("random", {"n_sink": -1}, "n_sink"),
        ("snapkv", {"n_sink": 1.5}, "n_sink"),
        ("nope", {}, "method"),
    ],
)
def test_bad_method_parameters_name_the_parameter(name, params, param):
    with pytest.raises(InvalidParameter) as err:
        build_policy(name, params)
    assert err.value.param == param


def test_vase_reserve_must_leave_room_for_sampling():
    from vase.cache import CacheConfig

    with pytest.raises(InvalidParameter, match="n_large"):
        CacheConfig.build("vase", {"n_large": 96}, budget=128, residual=32)
    CacheConfig.build("vase", {"n_large": 95}, budget=128, residual=32)
    # Default reserve budget // 4 must also fit: 16 // 4 = 4 >= 16 - 12 = 4.
    with pytest.raises(InvalidParameter):
        CacheConfig.build("vase", None, budget=16, residual=12)


def test_registry_has_every_method_of_the_spec():
    expected = {"full", "vase", "vase-dkv", "snapkv", "attn-sample", "rkv", "cur-fixed", "value-norm",
                "streamingllm", "h2o", "tova", "random", "evict-large", "attn-random", "quest", "range-attn"}
    assert expected <= set(policy_names())


def _context(tensors, *, budget=9, residual=1, reference_exact=False, rows=B):
    positions = torch.arange(N).expand(B, H, N)
    return EvictionContext(keys=tensors["k"], values=tensors["v"], positions=positions, budget=budget,
                           residual=residual, queries=tensors["q"],
                           generators=[torch.Generator().manual_seed(i) for i in range(rows)],
                           reference_exact=reference_exact)


@pytest.mark.parametrize("n_sink", [0, 4])
def test_random_reserves_the_sinks_only_when_asked(tensors, n_sink):
    policy = build_policy("random", {"n_sink": n_sink})
    kept_sinks = 0
    for seed in range(20):
        ctx = _context(tensors)
        ctx.generators = [torch.Generator().manual_seed(seed + 100 * b) for b in range(B)]
        kept = policy.score(ctx).topk(ctx.keep, dim=-1).indices
        kept_sinks += int((kept < 4).sum())
    full = 20 * B * H * 4
    assert (kept_sinks == full) == (n_sink == 4)


@pytest.mark.parametrize("metric", ["range", "var", "l2"])
def test_range_attn_keeps_the_largest_values_then_attention_top_k(tensors, metric):
    ctx = _context(tensors)
    n_large = 3
    kept = build_policy("range-attn", {"n_large": n_large, "metric": metric}).score(ctx).topk(ctx.keep, -1).indices
    magnitude = value_magnitude(tensors["v"], metric)
    reserved = magnitude.topk(n_large, dim=-1).indices
    rest = direct_attention(tensors["q"], tensors["k"], True).scatter(-1, reserved, -1.0)
    expected = torch.cat([reserved, rest.topk(ctx.keep - n_large, dim=-1).indices], dim=-1)
    assert torch.equal(kept.sort(-1).values, expected.sort(-1).values)


@pytest.mark.parametrize("metric", ["range", "var", "l2"])
def test_vase_reserves_the_largest_of_its_metric_in_their_order_when_reference_exact(tensors, metric):
    n_large = 3
    policy = build_policy("vase", {"n_large": n_large, "metric": metric, "n_sink": 0})
    magnitude = value_magnitude(tensors["v"], metric)
    reserved = magnitude.topk(n_large, dim=-1).indices  # largest first
    exact = policy.score(_context(tensors, reference_exact=True)).topk(8, dim=-1).indices
    assert torch.equal(exact[..., :n_large], reserved)
    default = policy.score(_context(tensors)).topk(8, dim=-1).indices
    assert torch.equal(default[..., :n_large].sort(-1).values, reserved.sort(-1).values)
    assert torch.equal(default.sort(-1).values, exact.sort(-1).values)  # same draw, only the order differs
