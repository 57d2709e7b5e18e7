"""One eviction step on identical tensors: this project's cache against the authors' ``EvictLayer``.

The setting of issue 13: a cache of ``budget + residual`` tokens at the moment an eviction is due
(budget 4096, residual 64), 8 KV heads, 32 query heads, head_dim 128, fp32. Both sides get the same
keys, values and query window (each in its own layout: ours [B, H, L, D], theirs [B, L, H, D]) and
run their whole eviction step through the call decode makes: scoring, selection, compaction.

For every method with a counterpart in the authors' code, each repeat times ours and theirs once,
alternating which goes first; the table gives the median milliseconds and the ratio ours / theirs
(the median of the per-repeat ratios, and their range). For deterministic methods it also says
whether the two kept the same token sets (they should: the first eviction of a fresh cache). Methods
without a counterpart are timed on our side alone. ``--compare-threads`` times our step (and theirs,
and a plain matmul as a control for what a second thread gives on this machine) at 1 and 2 intra-op
threads, alternating, to show whether it scales or runs on one thread. ``--profile`` prints
torch.profiler's table for one step of each side.

The authors' code is loaded at run time from a checkout (GitHub terarachang/VaSE); nothing of it is
part of this project:

    git clone https://github.com/terarachang/VaSE /tmp/VaSE
    .venv/bin/python benchmarks/eviction_step.py --reference /tmp/VaSE --repeats 7
    .venv/bin/python benchmarks/eviction_step.py --compare-threads --methods snapkv vase vase-dkv
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vase.cache import CacheConfig, EvictionCache
from vase.policies import policy_class, policy_names

REFERENCE_MODULE = "eval/reasoning_tasks/modified/transformers/cache_utils.py"

# Our method name -> the authors' eviction_mode (their smoothing on, R-KV lambda 0.5, n_large budget // 4).
REFERENCE_MODES = {
    "snapkv": "attn",
    "rkv": "attn_rkv",
    "vase": "range_sink_sample_attn",
    "vase-dkv": "cur_resample_gauss",
    "cur-fixed": "cur_fixed_gauss",
    "evict-large": "evict_large_range",
    "attn-sample": "attn_sample",
    "attn-random": "attn_random",
}


@dataclass(frozen=True)
class Setting:
    budget: int
    residual: int
    batch: int
    kv_heads: int
    q_heads: int
    head_dim: int

    @property
    def length(self) -> int:  # the cache length at which an eviction is due
        return self.budget + self.residual


def make_tensors(s: Setting, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(s.batch, s.kv_heads, s.length, s.head_dim, generator=g)
    values = torch.randn(s.batch, s.kv_heads, s.length, s.head_dim, generator=g)
    # A few large-magnitude values, as the paper observes, so the value reserve has something to find.
    outliers = torch.rand(s.batch, s.kv_heads, s.length, 1, generator=g) < 0.02
    values = torch.where(outliers, values * 20, values)
    queries = torch.randn(s.batch, s.q_heads, s.residual, s.head_dim, generator=g)
    accumulated = torch.rand(s.batch, s.kv_heads, s.length, generator=g)
    return {"keys": keys, "values": values, "queries": queries, "accumulated": accumulated}


class OurStep:
    """Our cache's layer 0, put back into the state "one append before an eviction" before each step."""

    def __init__(self, method: str, s: Setting, tensors: dict[str, torch.Tensor], seed: int):
        self.s, self.tensors, self.seed = s, tensors, seed
        config = CacheConfig.build(method, budget=s.budget, residual=s.residual)
        self.cache = EvictionCache(config, 1, batch_size=s.batch)
        self.layer = self.cache.layers[0]
        self.layer.lazy_initialization(tensors["keys"], tensors["values"])

    def reset(self) -> None:
        layer, t, n = self.layer, self.tensors, self.s.length
        layer.keys[:, :, :n] = t["keys"]
        layer.values[:, :, :n] = t["values"]
        layer.positions[:, :, :n] = torch.arange(n)
        if layer.accumulated is not None:
            layer.accumulated[:, :, :n] = t["accumulated"]
        layer.queries = t["queries"].clone()
        layer.query_slot = 0
        layer.row_states = [{} for _ in range(self.s.batch)]
        self.cache.eviction_generators = [torch.Generator().manual_seed(self.seed + r) for r in range(self.s.batch)]
        # The decode step that makes the cache `length` long has written its token; commit it.
        layer.starts = [n - 1] * self.s.batch
        layer.logical = [n - 1] * self.s.batch
        layer.pending_tokens = 1

    def run(self) -> None:
        self.layer.finish_forward()
        assert self.layer.lengths == [self.s.budget] * self.s.batch, "no eviction ran"

    def kept(self) -> list[list[set[int]]]:
        keep = self.s.budget - self.s.residual
        pos = self.layer.positions[:, :, :keep]
        return [[set(pos[b, h].tolist()) for h in range(pos.shape[1])] for b in range(pos.shape[0])]


def load_reference(checkout: Path):
    path = checkout / REFERENCE_MODULE
    if not path.is_file():
        raise SystemExit(f"--reference: {path} not found (give the root of a terarachang/VaSE checkout)")
    spec = importlib.util.spec_from_file_location("vase_reference_cache_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EvictLayer


class ReferenceStep:
    """The authors' EvictLayer for the same tensors, driven through post_attention_update as decode does."""

    def __init__(self, evict_layer, method: str, s: Setting, tensors: dict[str, torch.Tensor], seed: int):
        self.s, self.tensors, self.seed = s, tensors, seed
        policy = policy_class(method)()
        self.layer = evict_layer(
            0, s.budget, s.residual, REFERENCE_MODES[method], rkv_lambda=getattr(policy, "lam", 0.5),
            smooth=getattr(policy, "smoothing", True), verbose=False, n_large=s.budget // 4,
            temperature=getattr(policy, "temperature", 1.0),
        )
        # Their layout: [B, L, H, D]; lazy_initialization sizes the buffers from a prompt-shaped tensor.
        prompt = tensors["keys"].transpose(1, 2)
        self.layer.lazy_initialization(prompt, prompt)

    def reset(self) -> None:
        layer, t, n = self.layer, self.tensors, self.s.length
        layer.k_cache[:, :n].copy_(t["keys"].transpose(1, 2))
        layer.v_cache[:, :n].copy_(t["values"].transpose(1, 2))
        layer.queries = t["queries"].clone()
        layer._q_write_pos = 0
        layer.cache_seqlens.fill_(n - 1)
        if hasattr(layer, "G"):
            del layer.G
        torch.manual_seed(self.seed)  # their sampling draws from torch's global generator

    def run(self) -> None:
        self.layer.post_attention_update(1)
        assert int(self.layer.cache_seqlens[0]) == self.s.budget, "no eviction ran"

    def kept(self, s: Setting, tensors: dict[str, torch.Tensor]) -> list[list[set[int]]]:
        """Which original positions they kept: match each kept key back to its slot (random keys differ)."""
        keep = s.budget - s.residual
        out = []
        for b in range(s.batch):
            heads = []
            for h in range(s.kv_heads):
                kept_keys = self.layer.k_cache[b, :keep, h]
                lookup = {tuple(k): i for i, k in enumerate(tensors["keys"][b, h, :, :4].tolist())}
                heads.append({lookup[tuple(k)] for k in kept_keys[:, :4].tolist()})
            out.append(heads)
        return out


def timed(step) -> float:
    step.reset()
    started = time.perf_counter()
    step.run()
    return (time.perf_counter() - started) * 1e3


def print_profile(label: str, step) -> None:
    from torch.profiler import ProfilerActivity, profile

    step.reset()
    step.run()  # warm
    step.reset()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step.run()
    print(f"\n--- profile: {label} ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def fmt_range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def compare(args, s: Setting, tensors, evict_layer) -> None:
    print(f"\n| method | ours ms | reference ms | ours / reference (median) | range over {args.repeats} repeats "
          "| same kept sets |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    to_profile = []
    for method in args.methods:
        ours = OurStep(method, s, tensors, args.seed)
        ref = ReferenceStep(evict_layer, method, s, tensors, args.seed) if evict_layer and method in REFERENCE_MODES else None
        timed(ours)  # warm-up
        if ref is not None:
            timed(ref)
        ours_ms, ref_ms = [], []
        for i in range(args.repeats):
            if ref is None:
                ours_ms.append(timed(ours))
            elif i % 2 == 0:
                ours_ms.append(timed(ours))
                ref_ms.append(timed(ref))
            else:
                ref_ms.append(timed(ref))
                ours_ms.append(timed(ours))
        same = "-"
        if ref is not None and not policy_class(method).stochastic:
            ours.reset(), ours.run(), ref.reset(), ref.run()
            same = "yes" if ours.kept() == ref.kept(s, tensors) else "NO"
        if ref is None:
            print(f"| {method} | {statistics.median(ours_ms):.1f} | – | – | – | – |", flush=True)
        else:
            ratios = [a / b for a, b in zip(ours_ms, ref_ms)]
            print(f"| {method} | {statistics.median(ours_ms):.1f} | {statistics.median(ref_ms):.1f} | "
                  f"{statistics.median(ratios):.2f} | {fmt_range(ratios)} | {same} |", flush=True)
        to_profile.append((f"ours {method}", ours))
        if ref is not None:
            to_profile.append((f"reference {method} ({REFERENCE_MODES[method]})", ref))
    if args.profile:
        for label, step in to_profile:
            print_profile(label, step)


class ControlStep:
    """A plain torch product the size of one chunk of attention logits: what 2 threads give any op here."""

    def __init__(self, s: Setting):
        groups = s.q_heads // s.kv_heads
        self.q = torch.randn(s.batch * s.kv_heads, groups * s.residual, s.head_dim)
        self.k = torch.randn(s.batch * s.kv_heads, s.budget, s.head_dim)

    def reset(self) -> None:
        pass

    def run(self) -> None:
        torch.matmul(self.q, self.k.transpose(-1, -2))


def compare_threads(args, s: Setting, tensors, evict_layer) -> None:
    print(f"\nThe eviction step at 1 and 2 intra-op threads (alternating, {args.repeats} repeats each; "
          "1 / 2 above 1 means 2 threads are faster):")
    print("| step | 1 thread ms | 2 threads ms | 1 / 2 (median) | range |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    steps = [("control: torch.matmul, one layer's logits", ControlStep(s))]
    for method in args.methods:
        steps.append((f"ours {method}", OurStep(method, s, tensors, args.seed)))
        if evict_layer is not None and method in REFERENCE_MODES:
            steps.append((f"reference {method}", ReferenceStep(evict_layer, method, s, tensors, args.seed)))
    for label, step in steps:
        times: dict[int, list[float]] = {1: [], 2: []}
        for n in (1, 2):
            torch.set_num_threads(n)
            timed(step)  # warm-up at this size
        for i in range(args.repeats):
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):
                torch.set_num_threads(n)
                times[n].append(timed(step))
        speedups = [a / b for a, b in zip(times[1], times[2])]
        print(f"| {label} | {statistics.median(times[1]):.1f} | {statistics.median(times[2]):.1f} | "
              f"{statistics.median(speedups):.2f} | {fmt_range(speedups)} |", flush=True)
    torch.set_num_threads(args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="Root of a checkout of the authors' code (terarachang/VaSE).")
    eviction_methods = [m for m in policy_names() if policy_class(m).kind == "eviction"]
    parser.add_argument("--methods", nargs="+", default=eviction_methods, choices=eviction_methods)
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--residual", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--q-heads", type=int, default=32)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the comparison.")
    parser.add_argument("--compare-threads", action="store_true",
                        help="Also time the step (ours, theirs, a plain matmul) at 1 vs 2 threads.")
    parser.add_argument("--profile", action="store_true", help="Print torch.profiler's table for each step.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("budget", "residual", "batch", "kv_heads", "q_heads", "head_dim", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1")
    if args.q_heads % args.kv_heads:
        parser.error("--q-heads: must be a multiple of --kv-heads")

    torch.set_num_threads(args.threads)
    s = Setting(args.budget, args.residual, args.batch, args.kv_heads, args.q_heads, args.head_dim)
    evict_layer = load_reference(args.reference) if args.reference else None
    tensors = make_tensors(s, args.seed)
    load = os.getloadavg()
    print(f"eviction step: budget {s.budget}, residual {s.residual}, batch {s.batch}, {s.kv_heads} KV heads, "
          f"{s.q_heads} query heads, head_dim {s.head_dim}, fp32, {args.threads} thread(s); torch {torch.__version__}; "
          f"load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    compare(args, s, tensors, evict_layer)
    if args.compare_threads:
        compare_threads(args, s, tensors, evict_layer)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
