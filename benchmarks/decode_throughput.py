"""Decode speed and KV memory of cache methods side by side, on the embedded SmolLM2 on this CPU.

Runs each method in one process, one after another, on the same prompt, greedy, a fixed number of
new tokens (EOS ignored so every method decodes the same length). Prints tokens/s, KV bytes at the
start and peak, the share of decode time spent in evictions, and each method's speed as a ratio to
the full cache on transformers' DynamicCache. Repeats alternate the method order to spread drift.

    .venv/bin/python benchmarks/decode_throughput.py --new-tokens 2048 --budget 256 --residual 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from vase.generation import generate
from vase.models import load_model
from vase.traces import TraceRecorder

PROMPT = "Write a very long, detailed story about a lighthouse keeper who discovers a hidden map."

METHODS = [  # (label, method, use the HF DynamicCache reference path, trace level)
    ("full (HF DynamicCache)", "full", True, "off"),
    ("full (vase, preallocated)", "full", False, "off"),
    ("vase", "vase", False, "off"),
    ("vase + trace full", "vase", False, "full"),
    ("vase-dkv", "vase-dkv", False, "off"),
    ("snapkv", "snapkv", False, "off"),
    ("streamingllm", "streamingllm", False, "off"),
]


def measure(model, tokenizer, prompt, method, hf, trace, args, sizes):
    budget = None if method == "full" else args.budget
    sizes.clear()
    config = model.config
    recorder = TraceRecorder(trace, config.num_hidden_layers, config.num_key_value_heads)
    result = generate(
        model, tokenizer, [prompt], method=method, budget=budget, residual=args.residual,
        max_new_tokens=args.new_tokens, stop_at_eos=False, use_hf_dynamic_cache=hf,
        trace_sink=recorder if recorder.enabled else None,
        on_step=lambda step, cache: sizes.append(_kv_bytes(cache)),
    )[0]
    return result


def _kv_bytes(cache) -> int:
    if hasattr(cache, "nbytes"):
        return cache.nbytes()
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.is_initialized)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=2048)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--residual", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(None, device="cpu", dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True)
    generate(model, tokenizer, [prompt], max_new_tokens=16)  # warm-up

    samples: dict[str, list[dict]] = {label: [] for label, *_ in METHODS}
    for repeat in range(args.repeats):
        order = METHODS if repeat % 2 == 0 else list(reversed(METHODS))
        for label, method, hf, trace in order:
            sizes: list[int] = []
            r = measure(model, tokenizer, prompt, method, hf, trace, args, sizes)
            budget_step = next((i for i, _ in enumerate(sizes) if r.prompt_tokens + i + 1 > args.budget), None)
            after_budget = sizes[budget_step:] if budget_step is not None else []
            samples[label].append({
                "tokens_per_s": r.tokens_per_s,
                "new_tokens": r.new_tokens,
                "evictions": r.evictions,
                "kv_bytes_first": sizes[0],
                "kv_bytes_peak": max(sizes),
                "kv_constant_after_budget": len(set(after_budget)) <= 1,
                "eviction_share": r.eviction_seconds / r.decode_seconds if r.decode_seconds else 0.0,
            })
            print(f"  {label:28s} {r.tokens_per_s:7.1f} tok/s", file=sys.stderr)

    reference = statistics.median(s["tokens_per_s"] for s in samples[METHODS[0][0]])
    rows = []
    for label, *_ in METHODS:
        runs = samples[label]
        tps = statistics.median(s["tokens_per_s"] for s in runs)
        rows.append({
            "method": label,
            "tokens_per_s": round(tps, 2),
            "speedup_vs_hf_full": round(tps / reference, 3),
            "kv_bytes_first_step": runs[0]["kv_bytes_first"],
            "kv_bytes_peak": max(s["kv_bytes_peak"] for s in runs),
            "kv_constant_after_budget": all(s["kv_constant_after_budget"] for s in runs),
            "evictions": runs[0]["evictions"],
            "eviction_share_of_decode": round(statistics.median(s["eviction_share"] for s in runs), 4),
        })
    header = {"model": "SmolLM2-135M-Instruct (fp32, CPU)", "threads": args.threads, "new_tokens": args.new_tokens,
              "budget": args.budget, "residual": args.residual, "repeats": args.repeats}
    if args.json:
        print(json.dumps({"setup": header, "rows": rows}, indent=2))
        return
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'method':28s} {'tok/s':>8s} {'x HF full':>9s} {'KV MiB peak':>11s} {'KV const':>8s} "
          f"{'evictions':>9s} {'evict %':>7s}")
    for row in rows:
        print(f"{row['method']:28s} {row['tokens_per_s']:8.1f} {row['speedup_vs_hf_full']:9.2f} "
              f"{row['kv_bytes_peak'] / 2**20:11.2f} {str(row['kv_constant_after_budget']):>8s} "
              f"{row['evictions']:9d} {100 * row['eviction_share_of_decode']:7.2f}")


if __name__ == "__main__":
    main()
