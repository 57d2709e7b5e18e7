"""Fixtures from the authors' implementation, for tests/policies/test_reference_equivalence.py.

Loads `EvictLayer` from a checkout of GitHub terarachang/VaSE at run time (nothing of it is
copied here), feeds it and the project's cache the same keys, values and post-RoPE queries (one
layer, 2 KV heads, 4 query heads, head_dim 16, a 40-token prompt then 32 decode steps: budget 32,
residual 8, so 4 evictions), in fp32 and bf16, and stores under tests/fixtures/:
- the inputs and the seeds;
- deterministic modes (batch of one; the CUR and random-reserve modes seeded through torch's
  global generator, which draws what the project's per-row generator draws): the kept positions
  after every eviction, in the reference's slot order;
- stochastic modes (a batch of `--rows` rows, one seed): per eviction, head and position, how
  many rows kept it.
Then prints how the project compares, default vs reference-exact: per-eviction Jaccard of the
kept sets (deterministic) and the chi-square / df of inclusion frequencies (stochastic).

    .venv/bin/python benchmarks/reference_fixtures.py --reference /path/to/VaSE-checkout
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from policies.reference_replay import (  # noqa: E402
    DETERMINISTIC,
    DTYPES,
    FIXTURE,
    STOCHASTIC,
    Stream,
    chi2_per_df,
    inclusion_counts,
    jaccard,
    method_for,
    replay,
)

from vase.policies import build_policy  # noqa: E402

REFERENCE_FILE = "eval/reasoning_tasks/modified/transformers/cache_utils.py"
BUDGET, RESIDUAL, N_LARGE = 32, 8, 8
PROMPT, STEPS = 40, 32
HEADS, Q_HEADS, HEAD_DIM = 2, 4, 16


def load_evict_layer(checkout: Path):
    path = checkout / REFERENCE_FILE
    spec = importlib.util.spec_from_file_location("vase_reference_cache_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EvictLayer


def make_stream(seed: int) -> Stream:
    """Random keys and queries; values with a heavy-tailed magnitude per token (a few large ones,
    as the paper observes) so the value reserve has something to find."""
    g = torch.Generator().manual_seed(seed)
    total = PROMPT + STEPS
    keys = torch.randn(total, HEADS, HEAD_DIM, generator=g)
    scale = torch.exp(torch.randn(total, HEADS, 1, generator=g))
    values = torch.randn(total, HEADS, HEAD_DIM, generator=g) * scale
    queries = 2.0 * torch.randn(total, Q_HEADS, HEAD_DIM, generator=g)
    return Stream(keys, values, queries, PROMPT)


def reference_replay(EvictLayer, stream: Stream, mode: str, *, rows: int, seed: int) -> list[torch.Tensor]:
    """The authors' layer driven as their patched attention drives it; kept positions after each
    eviction in slot order ([rows, H, K]), recovered by matching the kept keys to the inputs."""
    layer = EvictLayer(0, BUDGET, RESIDUAL, mode, rkv_lambda=0.5, smooth=True, verbose=False, n_large=N_LARGE)
    k = stream.keys.unsqueeze(0).expand(rows, -1, -1, -1)  # [B, T, H, D] (their layout)
    v = stream.values.unsqueeze(0).expand(rows, -1, -1, -1)
    q = stream.queries.permute(1, 0, 2).unsqueeze(0).expand(rows, -1, -1, -1)  # [B, Hq, T, D]
    p = stream.prompt
    torch.manual_seed(seed)
    k_cache, v_cache, _ = layer.prepare(k[:, :p], v[:, :p])
    k_cache[:, :p] = k[:, :p]
    v_cache[:, :p] = v[:, :p]
    layer.update_queries(q[:, :, :p].contiguous())
    layer.post_attention_update(p)
    lookup = [{tuple(stream.keys[t, h].tolist()): t for t in range(stream.keys.shape[0])} for h in range(HEADS)]
    kept = []
    for t in range(p, stream.keys.shape[0]):
        n = int(layer.cache_seqlens[0])
        layer.k_cache[:, n] = k[:, t]
        layer.v_cache[:, n] = v[:, t]
        layer.update_queries(q[:, :, t : t + 1].contiguous())
        layer.post_attention_update(1)
        if int(layer.cache_seqlens[0]) < n + 1:
            keep = BUDGET - RESIDUAL
            held = layer.k_cache[:, :keep]  # [B, K, H, D]
            kept.append(torch.tensor([[[lookup[h][tuple(held[b, s, h].tolist())] for s in range(keep)]
                                       for h in range(HEADS)] for b in range(rows)]))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="checkout of GitHub terarachang/VaSE")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / FIXTURE)
    parser.add_argument("--rows", type=int, default=400, help="rows (seeded draws) per stochastic mode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    EvictLayer = load_evict_layer(args.reference)
    commit = subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    base = make_stream(args.seed)
    geometry = dict(budget=BUDGET, residual=RESIDUAL)
    cases = []
    print(f"reference {commit or '?'}; budget {BUDGET}, residual {RESIDUAL}, n_large {N_LARGE}, prompt {PROMPT}, "
          f"{STEPS} decode steps, H={HEADS}, Hq={Q_HEADS}, D={HEAD_DIM}")
    print(f"{'mode':24s} {'dtype':9s} {'method':32s} default (per eviction)            reference-exact")
    for dtype_name, dtype in DTYPES.items():
        stream = base.to(dtype)
        for mode in DETERMINISTIC:
            method, params = method_for(mode, N_LARGE)
            assert build_policy(method, params).reference_mode() == mode, (method, params, mode)
            seed = args.seed + 1
            ref = reference_replay(EvictLayer, stream, mode, rows=1, seed=seed)
            ours = {exact: replay(stream, method, params, seeds=[seed], reference_exact=exact, **geometry)
                    for exact in (False, True)}
            figures = {exact: [jaccard(r[0].sort().values, o[0].sort().values) for r, o in zip(ref, got)]
                       for exact, got in ours.items()}
            cases.append({"mode": mode, "method": method, "params": params, "dtype": dtype_name,
                          "kind": "deterministic", "seed": seed, "rows": 1, "kept": torch.stack(ref)})
            print(f"{mode:24s} {dtype_name:9s} {method + str(params):32s} "
                  f"Jaccard {' '.join(f'{j:.2f}' for j in figures[False]):28s} "
                  f"Jaccard {' '.join(f'{j:.2f}' for j in figures[True])}")
        for mode in STOCHASTIC:
            method, params = method_for(mode, N_LARGE)
            assert build_policy(method, params).reference_mode() == mode, (method, params, mode)
            seed = args.seed + 2
            length = stream.keys.shape[0]
            ref = inclusion_counts(reference_replay(EvictLayer, stream, mode, rows=args.rows, seed=seed), length)
            seeds = [seed * 100_003 + i for i in range(args.rows)]
            figures = {}
            for exact in (False, True):
                got = inclusion_counts(replay(stream, method, params, seeds=seeds, reference_exact=exact,
                                              **geometry), length)
                figures[exact] = [chi2_per_df(ref[e], got[e], args.rows, args.rows) for e in range(ref.shape[0])]
            cases.append({"mode": mode, "method": method, "params": params, "dtype": dtype_name,
                          "kind": "stochastic", "seed": seed, "rows": args.rows, "counts": ref})
            print(f"{mode:24s} {dtype_name:9s} {method + str(params):32s} "
                  f"chi2/df {' '.join(f'{c:.2f}' for c in figures[False]):28s} "
                  f"chi2/df {' '.join(f'{c:.2f}' for c in figures[True])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "meta": {"reference_commit": commit, "reference_file": REFERENCE_FILE, "torch": str(torch.__version__),
                 "budget": BUDGET, "residual": RESIDUAL, "n_large": N_LARGE, "prompt": PROMPT, "steps": STEPS},
        "inputs": {"keys": base.keys, "values": base.values, "queries": base.queries},
        "cases": cases,
    }, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
