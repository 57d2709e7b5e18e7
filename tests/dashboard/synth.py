"""A synthetic long sample for the dashboard's performance tests: a 32k-token generation with a
``full`` eviction trace (30 layers x 3 KV heads, budget 4096, residual 64), stored like a real one.

The eviction process is simulated in numpy the way the cache runs it (see tests/test_traces.py):
every ``residual`` steps past the budget each (layer, head) keeps ``budget - residual`` of its
candidates, drawn with probability proportional to a heavy-tailed per-token importance (sinks
always kept), and evicts the rest. One layer's heads are simulated and replayed for every layer
(stream sizes and decode cost per stream are what matter here). The generated tokens end in a
repetition loop, so the loop markers have something to show.
"""

from __future__ import annotations

import numpy as np

from vase.config import EMBEDDED_MODEL
from vase.traces import EvictionEvent, TraceRecorder

PROMPT, BUDGET, RESIDUAL, LAYERS, HEADS = 512, 4096, 64, 30, 3
TOTAL = 32768


def simulate(
    seed: int = 0,
    prompt: int = PROMPT,
    total: int = TOTAL,
    budget: int = BUDGET,
    residual: int = RESIDUAL,
    layers: int = LAYERS,
    heads: int = HEADS,
    level: str = "full",
) -> TraceRecorder:
    rng = np.random.default_rng(seed)
    steps = total - prompt
    K = budget - residual
    with np.errstate(divide="ignore"):
        importance = (rng.pareto(1.2, size=(heads, total)) + 0.01).astype(np.float32)
    importance[:, :4] = np.inf
    magnitude = np.clip(rng.lognormal(0.0, 0.6, size=(heads, total)), 0, 1e3).astype(np.float32)
    magnitude[:, rng.choice(total, 64, replace=False)] *= 40  # a few large-value tokens
    rec = TraceRecorder(level, layers, heads)
    held = np.zeros((heads, max(prompt, budget) + residual), dtype=np.int64)
    held[:, :prompt] = np.arange(prompt)
    n = prompt
    for t in range(1, steps + 1):
        L = prompt + t
        held[:, n] = L - 1
        n += 1
        if n > budget and n % residual == 0:
            cand, window = held[:, : n - residual], held[:, n - residual : n].copy()
            imp = np.take_along_axis(importance, cand, axis=1)
            with np.errstate(divide="ignore"):
                keys = imp / rng.standard_exponential(cand.shape, dtype=np.float32)
            part = np.argpartition(-keys, K - 1, axis=1)[:, :K]
            ev_mask = np.ones(cand.shape, dtype=bool)
            np.put_along_axis(ev_mask, part, False, axis=1)
            kept = cand[~ev_mask].reshape(heads, K)
            evicted = cand[ev_mask].reshape(heads, -1)
            km = np.take_along_axis(magnitude, kept, 1)
            em = np.take_along_axis(magnitude, evicted, 1)
            for layer in range(layers):
                rec(
                    EvictionEvent(
                        row=0,
                        layer=layer,
                        logical_length=L,
                        prompt_length=prompt,
                        residual=residual,
                        kept_positions=kept,
                        evicted_positions=evicted,
                        kept_scores=None,
                        kept_magnitude=km * (1 + layer / 10),
                        evicted_magnitude=em * (1 + layer / 10),
                    )
                )
            held[:, :K] = kept
            held[:, K:budget] = window
            n = budget
    rec.finish(0, steps + 1)
    return rec


def store_long_sample(store, *, seed: int = 0) -> int:
    """Store one 32k-token sample (vase @ 4096) with its full trace; returns the sample id."""
    rec = simulate(seed)
    rng = np.random.default_rng(seed + 1)
    n_gen = TOTAL - PROMPT + 1
    tokens = rng.integers(200, 20000, size=n_gen)
    loop_start = int(n_gen * 0.7)
    period = rng.integers(200, 20000, size=24)
    tokens[loop_start:] = np.resize(period, n_gen - loop_start)
    run_id = store.get_or_create_run(
        "cli",
        f"dashboard-synthetic-{seed}",
        task="synthetic-long",
        method="vase",
        model=EMBEDDED_MODEL,
        params={"n_large": 1024},
        budget=BUDGET,
        residual=RESIDUAL,
        trace_level="full",
    )
    sample_id = store.add_sample(
        run_id,
        problem_id="long-0000",
        sample_index=0,
        prompt=" the" * PROMPT,
        output="(synthetic output)",
        thinking=None,
        answer_text="",
        correct=False,
        grade_status="graded",
        grade_reason="synthetic",
        new_tokens=n_gen,
        truncated=True,
        loop_detected=True,
        loop_start=loop_start,
        loop_span="(period of 24 tokens)",
        tokens=[int(x) for x in tokens],
        prompt_tokens=PROMPT,
        trace=rec.record_for(0),
    )
    return int(sample_id)
