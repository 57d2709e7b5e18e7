"""Eviction traces: record a simulated eviction process, encode, decode, query, compare to truth."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from vase.traces import (
    POSITIONS_ENCODING,
    SUMMARY_ENCODING,
    TRACE_ENCODING,
    EvictionEvent,
    TraceReader,
    TraceRecorder,
    bytes_per_evicted_position,
    decode,
    encode,
    eviction_step,
    eviction_timeline,
    held_positions,
    magnitude_histogram,
    survival_matrix,
    trace_info,
    varint_decode,
    varint_encode,
)


class SimCache:
    """A numpy model of the eviction cache for one batch row, all layers and KV heads at once.

    Physical length grows by one per decode step; when it exceeds ``budget`` and is a multiple of
    ``residual`` an eviction keeps ``budget - residual`` candidates per (layer, head) (everything
    but the newest ``residual``) and moves the window behind them.

    ``mode``: "importance" draws the kept set without replacement with probability proportional
    to a heavy-tailed per-token importance fixed at the token's birth (what VaSE / attention
    sampling look like: old important tokens stay, most fresh tokens are evicted soon after they
    leave the window), sinks always kept; "uniform" keeps a uniformly random subset (the worst
    case for compression).
    """

    def __init__(self, *, prompt, budget, residual, steps, layers, heads, mode="importance", seed=0,
                 magnitudes=False, snapshot_steps=(), distinct_layers=None):
        self.P, self.B, self.R, self.N = prompt, budget, residual, steps
        self.layers, self.heads = layers, heads
        # Simulating 30 x 8 independent heads over 32k steps costs minutes in numpy; the large
        # test simulates `distinct_layers` layers and replays them cyclically over all layers
        # (stream sizes and query times are per stream, so they are unaffected).
        self.distinct = distinct_layers or layers
        self.mode = mode
        self.rng = np.random.default_rng(seed)
        self.magnitudes = magnitudes
        total = prompt + steps
        rows = self.distinct * heads
        with np.errstate(divide="ignore"):
            self.importance = (self.rng.pareto(1.2, size=(rows, total)) + 0.01).astype(np.float32)
        self.importance[:, :4] = np.inf  # sinks
        #: ground truth: step at which each position was evicted from each (layer, head), -1 never
        self.death = np.full((rows, total), -1, dtype=np.int64)
        self.snapshot_steps = set(snapshot_steps)
        self.snapshots: dict[int, np.ndarray] = {}
        self.n_events = 0

    def row(self, layer, head):
        return (layer % self.distinct) * self.heads + head

    def run(self, sink):
        P, B, R = self.P, self.B, self.R
        rows = self.distinct * self.heads
        K = B - R
        held = np.zeros((rows, max(P, B) + R), dtype=np.int64)  # preallocated, filled in place
        held[:, :P] = np.arange(P)
        n = P
        if 0 in self.snapshot_steps:
            self.snapshots[0] = held[:, :n].copy()
        for t in range(1, self.N + 1):
            L = P + t
            held[:, n] = L - 1
            n += 1
            if n > B and n % R == 0:
                cand, window = held[:, : n - R], held[:, n - R : n].copy()
                C = cand.shape[1]
                if self.mode == "uniform":
                    keys = self.rng.random((rows, C), dtype=np.float32)
                    keys[cand < 4] = np.inf
                else:
                    imp = np.take_along_axis(self.importance, cand, axis=1)
                    with np.errstate(divide="ignore"):
                        keys = imp / self.rng.standard_exponential((rows, C), dtype=np.float32)
                part = np.argpartition(-keys, K - 1, axis=1)[:, :K]
                ev_mask = np.ones((rows, C), dtype=bool)
                np.put_along_axis(ev_mask, part, False, axis=1)
                kept = cand[~ev_mask].reshape(rows, K)  # boolean selection keeps position order
                evicted = cand[ev_mask].reshape(rows, C - K)
                np.put_along_axis(self.death, evicted, t, axis=1)
                self.n_events += 1
                for layer in range(self.layers):
                    sl = slice(self.row(layer, 0), self.row(layer, 0) + self.heads)
                    if self.magnitudes:
                        km = torch.from_numpy(np.take_along_axis(self.importance[sl], kept[sl], 1).clip(0, 1e3))
                        em = torch.from_numpy(np.take_along_axis(self.importance[sl], evicted[sl], 1).clip(0, 1e3))
                    else:
                        km = em = None
                    sink(EvictionEvent(
                        row=0, layer=layer, logical_length=L, prompt_length=P, residual=R,
                        kept_positions=torch.from_numpy(kept[sl]),
                        evicted_positions=torch.from_numpy(evicted[sl]),
                        kept_scores=None, kept_magnitude=km, evicted_magnitude=em,
                    ))
                held[:, :K] = kept
                held[:, K:B] = window
                n = B
            if t in self.snapshot_steps:
                self.snapshots[t] = held[:, :n].copy()
        return self

    def truth_held(self, layer, head, step):
        r = self.row(layer, head)
        pos = np.arange(self.P + step)
        d = self.death[r, : self.P + step]
        return pos[(d < 0) | (d > step)]


def record(sim: SimCache, level="full") -> TraceRecorder:
    rec = TraceRecorder(level, sim.layers, sim.heads)
    sim.run(rec)
    rec.finish(0, sim.N + 1)  # N fed tokens = N + 1 generated (the last one is never fed)
    return rec


# ------------------------------------------------------------------------------------------------
def test_varint_roundtrip():
    rng = np.random.default_rng(1)
    for values in [np.zeros(0, np.int64), np.arange(100), rng.integers(0, 2**40, 1000), np.array([127, 128, 16383, 16384, 0])]:
        data = varint_encode(values)
        assert np.array_equal(varint_decode(data), np.asarray(values, np.int64))
    assert varint_encode(np.array([300])) == bytes([0xAC, 0x02])


@pytest.fixture(scope="module")
def small():
    steps = [0, 1, 5, 250, 300, 301, 302, 319, 320, 321, 333, 1000, 1999, 2000, 2500, 2999, 3000]
    sim = SimCache(prompt=100, budget=256, residual=32, steps=3000, layers=3, heads=2, seed=3,
                   magnitudes=True, snapshot_steps=steps)
    rec = record(sim)
    return sim, rec


def test_held_positions_match_simulator(small):
    sim, rec = small
    blob = encode(rec.row(0))
    reader = decode(blob)
    assert reader.encoding == TRACE_ENCODING
    assert reader.n_steps == sim.N
    for step, snap in sim.snapshots.items():
        for layer in range(sim.layers):
            for head in range(sim.heads):
                got = held_positions(blob, layer, head, step)
                want = np.sort(snap[layer * sim.heads + head])
                assert np.array_equal(got, want), (layer, head, step)
                # the reader gives the same answer as the one-shot function
                assert np.array_equal(reader.held_positions(layer, head, step), want)
    # every step, one (layer, head), against the death-step truth
    for step in range(0, sim.N + 1, 7):
        assert np.array_equal(reader.held_positions(2, 1, step), sim.truth_held(2, 1, step))
    # past the end is clamped to the end
    assert np.array_equal(reader.held_positions(0, 0, 10**9), reader.held_positions(0, 0, sim.N))
    with pytest.raises(ValueError):
        reader.held_positions(0, 0, -1)
    with pytest.raises(IndexError):
        reader.held_positions(3, 0, 1)


def test_eviction_step_and_timeline(small):
    sim, rec = small
    blob = encode(rec.row(0))
    reader = TraceReader(blob)
    rng = np.random.default_rng(0)
    for layer in range(sim.layers):
        for head in range(sim.heads):
            r = layer * sim.heads + head
            want = sim.death[r]
            got = reader.eviction_steps(layer, head)
            assert np.array_equal(got, want[: got.size])
            for p in rng.integers(0, sim.P + sim.N, 40):
                e = eviction_step(blob, layer, head, int(p))
                assert e == (None if want[p] < 0 else int(want[p]))
            steps, evicted = eviction_timeline(blob, layer, head)
            assert len(steps) == sim.n_events == len(evicted)
            assert all(np.all(np.diff(ev) > 0) for ev in evicted)
            for s, ev in zip(steps, evicted):
                assert np.all(want[ev] == s)
    for p in range(4):  # sinks are never evicted
        assert eviction_step(blob, 0, 0, p) is None


def test_survival_matrix(small):
    sim, rec = small
    blob = encode(rec.row(0))
    m = survival_matrix(blob, 1, 0, max_positions=50, max_steps=40)
    assert m.values.shape == (len(m.position_edges) - 1, len(m.step_edges) - 1)
    assert m.values.shape == (50, 40)
    # brute force: fraction kept over (position, step) pairs written
    P, N = sim.P, sim.N
    death = sim.death[1 * sim.heads + 0]
    pos = np.arange(P + N)
    birth = np.where(pos < P, 0, pos - P + 1)
    end = np.where(death < 0, N + 1, death)
    s = np.arange(N + 1)
    kept = (birth[:, None] <= s[None, :]) & (s[None, :] < end[:, None])
    written = birth[:, None] <= s[None, :]
    pe, se = m.position_edges, m.step_edges
    for i in range(len(pe) - 1):
        for j in range(len(se) - 1):
            k = kept[pe[i] : pe[i + 1], se[j] : se[j + 1]].sum()
            w = written[pe[i] : pe[i + 1], se[j] : se[j + 1]].sum()
            if w == 0:
                assert np.isnan(m.values[i, j])
            else:
                assert m.values[i, j] == pytest.approx(k / w)
    d = m.to_dict()
    assert d["values"][-1][0] is None  # last positions were not written at step 0


def test_summary_stats(small):
    sim, rec = small
    rt = rec.row(0)
    summ = rt.summary()
    assert summ["n_rounds"] == sim.n_events
    assert summ["n_events"] == sim.n_events * sim.layers
    assert summ["n_evicted"] == int((sim.death >= 0).sum())
    # recompute kept/evicted magnitudes exactly from the simulator
    layer = summ["layers"][1]
    assert layer["n_events"] == sim.n_events
    ev_stats = layer["evicted_magnitude"]
    rows = slice(1 * sim.heads, 2 * sim.heads)
    evicted_mag = sim.importance[rows][sim.death[rows] >= 0].clip(0, 1e3)
    assert ev_stats["n"] == evicted_mag.size
    assert ev_stats["mean"] == pytest.approx(float(evicted_mag.astype(np.float64).mean()), rel=1e-5)
    assert ev_stats["max"] == pytest.approx(float(evicted_mag.max()), rel=1e-6)
    assert ev_stats["p50"] == pytest.approx(float(np.median(evicted_mag)), rel=0.04)
    assert ev_stats["p99"] == pytest.approx(float(np.quantile(evicted_mag, 0.99)), rel=0.04)
    km = layer["kept_magnitude"]
    assert km["n"] == sim.n_events * sim.heads * (sim.B - sim.R)
    assert km["max"] == pytest.approx(1e3)  # sinks (inf, clipped) are kept every time

    record_ = rt.to_record()
    assert record_["encoding"] == TRACE_ENCODING and record_["level"] == "full"
    assert record_["n_evicted"] == summ["n_evicted"] and record_["meta"]["layers"][1] == layer
    info = trace_info(record_["data"])
    assert info["n_evicted"] == summ["n_evicted"] and info["num_layers"] == 3


def test_magnitude_histogram_roundtrip(small):
    import json

    from vase.traces.format import MAG_EDGES as _MAG_EDGES

    # known magnitudes: the geometric middle of a few regular bins, plus both open-ended bins
    def mid(b):  # the geometric middle of regular bin b: well inside it
        return float(np.sqrt(_MAG_EDGES[b - 1] * _MAG_EDGES[b]))

    evicted = np.array([[mid(100), mid(100), mid(150), 0.0, 1e-7],
                        [mid(200), mid(200), mid(200), 1e7, np.nan]], dtype=np.float32)
    kept = np.full((2, 3), mid(190), dtype=np.float32)
    rec = TraceRecorder("summary", 2, 2)
    rec(EvictionEvent(row=0, layer=1, logical_length=20, prompt_length=10, residual=2,
                      kept_positions=torch.tensor([[0, 1, 2], [0, 1, 2]]),
                      evicted_positions=torch.tensor([[3, 4, 5, 6, 7], [3, 4, 5, 6, 7]]),
                      kept_scores=None, kept_magnitude=torch.from_numpy(kept),
                      evicted_magnitude=torch.from_numpy(evicted)))
    meta = json.loads(json.dumps(rec.record_for(0, new_tokens=11)["meta"]))  # what the store keeps
    ev = meta["layers"][1]["evicted_magnitude"]
    assert ev["hist"]["first_bin"] == 0 and len(ev["hist"]["counts"]) == len(_MAG_EDGES) + 1  # 0 .. overflow
    assert all(isinstance(c, int) for c in ev["hist"]["counts"])
    lo, hi, counts = magnitude_histogram(ev)
    assert counts.sum() == ev["n"] == 9  # NaN carries no statistics
    assert dict(zip(np.flatnonzero(counts).tolist(), counts[counts > 0].tolist())) == {
        0: 2, 100: 2, 150: 1, 200: 3, len(_MAG_EDGES): 1}
    for v in (mid(100), mid(150), mid(200)):
        assert counts[(lo < v) & (v <= hi)].tolist() in ([2], [1], [3])
    # the open-ended bins (zero and 1e-7; 1e7) get finite display edges one bin wide
    assert np.all(lo < hi) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    assert lo[0] > 0 and hi[0] == pytest.approx(1e-6) and lo[-1] == pytest.approx(1e6)
    np.testing.assert_allclose(hi[1:101] / lo[1:101], 10 ** (1 / 32))  # regular bins: 32 per decade
    km = meta["layers"][1]["kept_magnitude"]
    assert km["hist"] == {"first_bin": 190, "counts": [6]}  # trimmed to the non-empty bins
    lo, hi, counts = magnitude_histogram(km["hist"])  # the hist entry itself works too
    assert lo[0] < mid(190) <= hi[0] and counts.tolist() == [6]
    # a layer without events, and statistics written before histograms were stored
    assert meta["layers"][0]["kept_magnitude"]["hist"] is None
    for old in (meta["layers"][0]["kept_magnitude"], {k: v for k, v in ev.items() if k != "hist"}, None, {}):
        assert all(a.size == 0 for a in magnitude_histogram(old))
    with pytest.raises(ValueError):
        magnitude_histogram({"first_bin": len(_MAG_EDGES), "counts": [1, 2]})

    # the simulated trace: every layer's histograms hold exactly its n magnitudes, bin by bin
    sim, rec_ = small
    summ = rec_.row(0).summary()
    for layer in summ["layers"]:
        for key in ("kept_magnitude", "evicted_magnitude"):
            _, _, c = magnitude_histogram(layer[key])
            assert c.sum() == layer[key]["n"] > 0
    rows = slice(1 * sim.heads, 2 * sim.heads)
    evicted_mag = sim.importance[rows][sim.death[rows] >= 0].clip(0, 1e3).astype(np.float32)
    truth = np.bincount(np.searchsorted(_MAG_EDGES, evicted_mag), minlength=len(_MAG_EDGES) + 1)
    h = summ["layers"][1]["evicted_magnitude"]["hist"]
    assert h["counts"] == truth[h["first_bin"]: h["first_bin"] + len(h["counts"])].tolist()
    assert truth.sum() == sum(h["counts"])
    assert len(json.dumps(summ)) < 20_000  # trimmed: the meta stays small


def test_summary_level_and_off():
    sim = SimCache(prompt=50, budget=128, residual=32, steps=500, layers=2, heads=2, magnitudes=True)
    rec = record(sim, level="summary")
    r = rec.record_for(0)
    assert r["encoding"] == SUMMARY_ENCODING and r["data"] == b"" and r["level"] == "summary"
    assert r["n_events"] == 2 * sim.n_events and r["meta"]["layers"][0]["kept_magnitude"]["n"] > 0
    off = TraceRecorder("off", 2, 2)
    SimCache(prompt=50, budget=128, residual=32, steps=200, layers=2, heads=2).run(off)
    assert off.rows == {} and off.record_for(0, new_tokens=200, prompt_length=50) is None
    with pytest.raises(ValueError):
        TraceRecorder("verbose", 1, 1)


def test_row_without_evictions_and_multiple_rows():
    rec = TraceRecorder("full", 2, 2)
    r = rec.record_for(3, new_tokens=10, prompt_length=20, residual=8)
    reader = decode(r["data"])
    assert r["n_evicted"] == 0 and reader.n_steps == 9  # 10 generated, 9 fed back
    assert np.array_equal(reader.held_positions(1, 1, 10), np.arange(29))
    assert bytes_per_evicted_position(r["data"]) == 0.0
    # two rows interleaved in one recorder stay separate
    a = SimCache(prompt=30, budget=64, residual=16, steps=300, layers=2, heads=2, seed=1)
    b = SimCache(prompt=45, budget=64, residual=16, steps=250, layers=2, heads=2, seed=2)
    rec2 = TraceRecorder("full", 2, 2)
    a.run(lambda ev: rec2(ev))
    b.run(lambda ev: rec2(EvictionEvent(**{**ev.__dict__, "row": 1})))
    rec2.finish(0, 301)
    rec2.finish(1, 251)
    for row, sim in ((0, a), (1, b)):
        blob = rec2.record_for(row)["data"]
        for step in (0, 100, 249):
            assert np.array_equal(held_positions(blob, 1, 0, step), sim.truth_held(1, 0, step))


def test_inconsistent_events_fall_back_to_positions():
    """Events that contradict the replay semantics are still stored exactly (positions mode)."""
    sim = SimCache(prompt=40, budget=64, residual=16, steps=400, layers=2, heads=2, seed=5)
    rec = TraceRecorder("full", 2, 2)
    events = []
    sim.run(events.append)
    # drop one of layer 1's evictions: afterwards layer 1's candidate counts no longer add up
    dropped = [e for e in events if e.layer == 1][3]
    for ev in events:
        if ev is not dropped:
            rec(ev)
    rec.finish(0, 401)
    blob = rec.record_for(0)["data"]
    reader = decode(blob)
    assert reader.encoding == POSITIONS_ENCODING
    for layer in range(2):
        for head in range(2):
            want = [e.evicted_positions[head].numpy() for e in events if e.layer == layer and e is not dropped]
            steps, got = reader.eviction_timeline(layer, head)
            assert len(got) == len(want)
            assert all(np.array_equal(g, w) for g, w in zip(got, want))


# ------------------------------------------------------------------------------------------------
# Paper-scale: 32k tokens, budget 4096, residual 64, 30 layers x 8 KV heads
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large():
    t0 = time.perf_counter()
    sim = SimCache(prompt=512, budget=4096, residual=64, steps=32768 - 512, layers=30, heads=8, seed=11,
                   distinct_layers=2)
    rec = record(sim)
    t1 = time.perf_counter()
    blob = encode(rec.row(0))
    t2 = time.perf_counter()
    print(f"\n[traces] 32k x 30x8 simulate+record {t1 - t0:.1f}s, encode {t2 - t1:.2f}s, {len(blob) / 1e6:.2f} MB")
    return sim, blob


def test_bytes_per_evicted_position_budget_256():
    for mode in ("importance", "uniform"):
        sim = SimCache(prompt=200, budget=256, residual=32, steps=8000, layers=4, heads=8, mode=mode, seed=7)
        blob = encode(record(sim).row(0))
        bpe = bytes_per_evicted_position(blob)
        print(f"\n[traces] budget 256 / residual 32, {mode}: {bpe:.3f} bytes per evicted position")
        assert bpe <= 1.0


def test_bytes_per_evicted_position_budget_4096_uniform():
    sim = SimCache(prompt=512, budget=4096, residual=64, steps=32768 - 512, layers=1, heads=8, mode="uniform", seed=8)
    blob = encode(record(sim).row(0))
    bpe = bytes_per_evicted_position(blob)
    print(f"\n[traces] budget 4096 / residual 64, 32k tokens, uniform (worst case): {bpe:.3f} bytes per evicted")
    assert bpe <= 1.0


def test_large_trace_size_and_query_speed(large):
    sim, blob = large
    bpe = bytes_per_evicted_position(blob)
    print(f"[traces] budget 4096 / residual 64, 32k tokens, 30x8: {bpe:.3f} bytes per evicted position")
    assert bpe <= 1.0
    timings: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = max(timings.get(name, 0.0), time.perf_counter() - t)
        return out

    rng = np.random.default_rng(0)
    for layer, head in [(0, 0), (17, 5), (29, 7)]:
        r = sim.row(layer, head)
        for step in (0, 4000, 16384, 32256):
            got = timed("held_positions", lambda: held_positions(blob, layer, head, step))
            assert np.array_equal(got, sim.truth_held(layer, head, step))
        for p in rng.integers(0, 32768, 3):
            e = timed("eviction_step", lambda: eviction_step(blob, layer, head, int(p)))
            assert e == (None if sim.death[r, p] < 0 else int(sim.death[r, p]))
        steps, _ = timed("eviction_timeline", lambda: eviction_timeline(blob, layer, head))
        assert len(steps) == sim.n_events
        m = timed("survival_matrix", lambda: survival_matrix(blob, layer, head, max_positions=256, max_steps=256))
        assert m.values.shape == (256, 256)
    print("[traces] worst query time over 3 streams (fresh decode each call): "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in timings.items()))
    for name, seconds in timings.items():
        assert seconds < 0.3, name


# ------------------------------------------------------------------------------------------------
# The real cache: what the trace says a (layer, head) holds is what the cache holds
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vase", "vase-dkv", "snapkv", "h2o", "random"])
def test_trace_matches_the_real_cache(tiny_qwen3, method):
    from vase import attention
    from vase.cache import CacheConfig, EvictionCache
    from vase.generation import attention_implementation

    model, tokenizer = tiny_qwen3
    budget, residual, steps = 24, 8, 70
    config = CacheConfig.build(method, None, budget=budget, residual=residual)
    n_layers, n_kv = model.config.num_hidden_layers, model.config.num_key_value_heads
    rec = TraceRecorder("full", n_layers, n_kv)
    cache = EvictionCache.for_model(model, config, batch_size=1, trace_sink=rec, max_new_tokens=steps + 1)
    cache.attention_backend = "sdpa"
    ids = tokenizer("The quick brown fox jumps over the lazy dog by the sea.", return_tensors="pt",
                    add_special_tokens=False).input_ids
    prompt = ids.shape[1]
    held: dict[int, list[list[np.ndarray]]] = {}

    def snapshot(step):
        held[step] = [[np.sort(layer.held_positions(0, h).numpy()) for h in range(n_kv)] for layer in cache.layers]

    with torch.inference_mode(), attention_implementation(model, attention.ATTENTION_NAME):
        out = attention.forward(model, cache, input_ids=ids)
        snapshot(0)
        for step in range(1, steps + 1):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = attention.forward(model, cache, input_ids=token,
                                    position_ids=torch.tensor([[prompt + step - 1]]))
            snapshot(step)
    rec.finish(0, steps + 1)  # `steps` tokens fed after the prompt's: steps + 1 generated
    record_ = rec.record_for(0)
    reader = decode(record_["data"])
    assert reader.encoding == TRACE_ENCODING  # the events agree with the replay semantics
    assert record_["n_events"] == cache.evictions[0] * n_layers > 0
    for step, layers in held.items():
        for layer in range(n_layers):
            for head in range(n_kv):
                assert np.array_equal(reader.held_positions(layer, head, step), layers[layer][head]), (step, layer, head)


def test_trace_of_a_batched_generate(tiny_qwen3):
    """Rows of different prompt lengths, sampled, some stopping early: every row's events agree
    with the replay semantics and its trace counts the cache's evictions."""
    from vase.generation import SamplingConfig, generate

    model, tokenizer = tiny_qwen3
    n_layers, n_kv = model.config.num_hidden_layers, model.config.num_key_value_heads
    rec = TraceRecorder("full", n_layers, n_kv)
    prompts = ["Hi.", "A somewhat longer prompt for the second row of the batch, it has more tokens."]
    results = generate(model, tokenizer, prompts, method="vase", budget=16, residual=4, max_new_tokens=50,
                       seeds=[1, 2], sampling=SamplingConfig(do_sample=True, temperature=1.0), trace_sink=rec,
                       attention_backend="sdpa", stop_at_eos=False)
    for res in results:
        record_ = rec.record_for(res.row, new_tokens=res.new_tokens, prompt_length=res.prompt_tokens, residual=4)
        reader = decode(record_["data"])
        assert reader.encoding == TRACE_ENCODING
        assert reader.prompt_length == res.prompt_tokens and reader.n_steps == res.new_tokens - 1
        assert record_["n_events"] == res.evictions * n_layers > 0
        for layer in range(n_layers):
            for head in range(n_kv):
                # at most budget + residual - 1 between evictions, and the newest written position
                held = reader.held_positions(layer, head, res.new_tokens)
                assert held.size < 16 + 4 and held[-1] == res.prompt_tokens + res.new_tokens - 2
