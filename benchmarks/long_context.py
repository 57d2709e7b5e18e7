"""Long-context decode on the embedded SmolLM2 (8k context): where attention over the cache counts.

A fixed prompt of `--prompt-tokens` token ids (seeded random ids from the vocabulary, as in the
authors' throughput script: content does not change the work) and `--new-tokens` greedy tokens
(EOS ignored, so every method decodes the same length). Methods: full on transformers'
DynamicCache, full on the preallocated eviction cache, vase, vase-dkv, snapkv, streamingllm, and
NVIDIA kvpress's `DecodingPress` with SnapKV and StreamingLLM at the same setting (compress to
`budget` every `residual` steps). Prints decode tokens/s, time to first token, KV MiB and the share
of decode time spent evicting, per thread count; then the ratios vase / full and
vase / kvpress SnapKV, and 2 threads / 1 thread per method. The method order alternates between
passes (reversed every other pass) to spread the drift of a shared machine.

kvpress is not a project dependency. It pins transformers < 5.3, so this script creates its own
virtualenv on first use (default ~/.cache/vase/kvpress-venv; `--kvpress-venv`):
    python3 -m venv ~/.cache/vase/kvpress-venv
    ~/.cache/vase/kvpress-venv/bin/pip install torch==2.13.0 kvpress
and runs `benchmarks/kvpress_runner.py` (our code) with that interpreter, one process per
measurement, on the same token ids and the same saved model folder. `--no-kvpress` skips it.

    .venv/bin/python benchmarks/long_context.py                  # 6000-token prompt, 256 new tokens
    .venv/bin/python benchmarks/long_context.py --threads 1,2 --prompt-tokens 2048 --new-tokens 128
    .venv/bin/python benchmarks/long_context.py --profile vase,full   # where decode time goes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vase.generation import generate
from vase.models import embedded_cache_dir, load_model
from vase.policies.base import DEFAULT_SINKS

RUNNER = Path(__file__).with_name("kvpress_runner.py")
DEFAULT_VENV = Path.home() / ".cache" / "vase" / "kvpress-venv"
KVPRESS_REQUIREMENTS = ("torch==2.13.0", "kvpress")


@dataclass(frozen=True)
class Method:
    label: str
    method: str  # a vase method, or the kvpress press for kvpress rows
    hf: bool = False  # full on transformers' DynamicCache
    kvpress: bool = False


METHODS = [
    Method("full (HF DynamicCache)", "full", hf=True),
    Method("full (preallocated)", "full"),
    Method("vase", "vase"),
    Method("vase-dkv", "vase-dkv"),
    Method("snapkv", "snapkv"),
    Method("streamingllm", "streamingllm"),
    Method("kvpress SnapKV DecodingPress", "snapkv", kvpress=True),
    Method("kvpress StreamingLLM DecodingPress", "streamingllm", kvpress=True),
]
BY_LABEL = {m.label: m for m in METHODS}
SHORT = {"full": "full (HF DynamicCache)", "full-prealloc": "full (preallocated)", "vase": "vase",
         "vase-dkv": "vase-dkv", "snapkv": "snapkv", "streamingllm": "streamingllm",
         "kvpress-snapkv": "kvpress SnapKV DecodingPress", "kvpress-streamingllm": "kvpress StreamingLLM DecodingPress"}


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1, got {text!r}")
    return values


def method_list(text: str) -> list[Method]:
    names = [x for x in text.split(",") if x]
    unknown = [n for n in names if n not in SHORT]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"must name methods among {', '.join(SHORT)}, got {text!r}")
    return [BY_LABEL[SHORT[n]] for n in names]


def ensure_kvpress_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import kvpress"], capture_output=True).returncode == 0:
        return python
    print(f"creating kvpress's virtualenv at {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KVPRESS_REQUIREMENTS], check=True)
    return python


def run_ours(model, tokenizer, ids, method: Method, args) -> dict:
    started = time.perf_counter()
    first: list[float] = []
    live: list[int] = []

    def on_step(step, cache):
        if step == 1:
            first.append(time.perf_counter())
        lengths = [layer.keys.shape[2] if method.hf else max(layer.lengths) for layer in cache.layers]
        live.append(sum(lengths))

    r = generate(
        model, tokenizer, [ids], method=method.method, budget=None if method.method == "full" else args.budget,
        residual=args.residual, max_new_tokens=args.new_tokens, stop_at_eos=False, use_hf_dynamic_cache=method.hf,
        on_step=on_step,
    )[0]
    per_token = _kv_bytes_per_token(model)
    return {
        "new_tokens": r.new_tokens,
        "tokens_per_s": r.tokens_per_s,
        "ttft_s": first[0] - started,
        "kv_mib_allocated": r.kv_cache_bytes_peak / 2**20,
        "kv_mib_live_end": live[-1] * per_token / model.config.num_hidden_layers / 2**20,
        "eviction_share": r.eviction_seconds / r.decode_seconds if r.decode_seconds else 0.0,
        "tokens": r.tokens,
    }


def _kv_bytes_per_token(model) -> int:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4  # fp32


def run_kvpress(python: Path, model_dir: Path, ids, method: Method, threads: int, args) -> dict:
    request = {"model": str(model_dir), "ids": ids, "new_tokens": args.new_tokens, "press": method.method,
               "budget": args.budget, "residual": args.residual, "snapkv_window": args.snapkv_window,
               "n_sink": DEFAULT_SINKS, "threads": threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([str(python), str(RUNNER)], input=json.dumps(request), capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(f"kvpress runner failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "new_tokens": out["new_tokens"],
        "tokens_per_s": out["new_tokens"] / out["decode_s"],
        "ttft_s": out["ttft_s"],
        "kv_mib_allocated": out["kv_bytes_peak"] / 2**20,
        "kv_mib_live_end": out["kv_bytes_end"] / 2**20,
        "eviction_share": None,
        "tokens": out["tokens"],
        "versions": f"kvpress {out['kvpress_version']}, transformers {out['transformers_version']}",
    }


def profile(model, tokenizer, ids, methods: list[Method], args) -> None:
    """Operator-level time of the decode steps (the profiler starts after the prefill) per method."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for method in methods:
        if method.kvpress:
            print(f"--profile skips {method.label} (it runs in another virtualenv)")
            continue
        prof = torch_profile(activities=[ProfilerActivity.CPU])

        def on_step(step, cache):
            if step == 1:
                prof.start()

        r = generate(
            model, tokenizer, [ids], method=method.method, budget=None if method.method == "full" else args.budget,
            residual=args.residual, max_new_tokens=args.new_tokens, stop_at_eos=False,
            use_hf_dynamic_cache=method.hf, on_step=on_step,
        )[0]
        prof.stop()
        share = r.eviction_seconds / r.decode_seconds
        print(f"\n## profile of decode: {method.label}  ({r.tokens_per_s:.2f} tok/s, eviction {100 * share:.1f}% "
              f"of decode)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=6000)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--residual", type=int, default=64)
    parser.add_argument("--snapkv-window", type=int, default=None,
                        help="kvpress SnapKV window (default residual - 1: DecodingPress scores with the hidden "
                             "states buffered since the last compression, and SnapKV needs more than its window)")
    parser.add_argument("--threads", type=positive_ints, default=[1], help="thread counts to measure, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", type=method_list, default=METHODS, help=f"any of {','.join(SHORT)}")
    parser.add_argument("--no-kvpress", action="store_true", help="leave out the kvpress rows")
    parser.add_argument("--kvpress-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--model", default=None, help="a local model folder (default: the embedded SmolLM2)")
    parser.add_argument("--profile", type=method_list, default=None,
                        help="instead of the table, profile these methods' decode (one thread count)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args()
    if args.snapkv_window is None:
        args.snapkv_window = args.residual - 1
    if args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    if args.budget <= args.residual:
        parser.error("--budget: must be greater than --residual")

    model, tokenizer = load_model(args.model, device="cpu", dtype=torch.float32)
    if args.prompt_tokens + args.new_tokens > model.config.max_position_embeddings:
        parser.error(f"--prompt-tokens + --new-tokens: must fit the model's {model.config.max_position_embeddings} "
                     "positions")
    ids = torch.randint(100, model.config.vocab_size, (args.prompt_tokens,),
                        generator=torch.Generator().manual_seed(0)).tolist()
    if args.profile is not None:
        torch.set_num_threads(args.threads[0])
        profile(model, tokenizer, ids, args.profile, args)
        return

    methods = [m for m in args.methods if not (m.kvpress and args.no_kvpress)]
    kvpress_python = ensure_kvpress_venv(args.kvpress_venv) if any(m.kvpress for m in methods) else None
    model_dir = Path(args.model) if args.model else embedded_cache_dir()
    generate(model, tokenizer, [ids[:64]], max_new_tokens=4)  # warm-up

    samples: dict[tuple[str, int], list[dict]] = {}
    versions = ""
    passes = [(repeat, threads) for repeat in range(args.repeats) for threads in args.threads]
    for index, (repeat, threads) in enumerate(passes):
        torch.set_num_threads(threads)
        order = methods if index % 2 == 0 else list(reversed(methods))
        for method in order:
            if method.kvpress:
                sample = run_kvpress(kvpress_python, model_dir, ids, method, threads, args)
                versions = sample.pop("versions")
            else:
                sample = run_ours(model, tokenizer, ids, method, args)
            if sample["new_tokens"] != args.new_tokens:
                raise SystemExit(f"{method.label}: decoded {sample['new_tokens']} tokens, not {args.new_tokens}")
            samples.setdefault((method.label, threads), []).append(sample)
            share = "" if sample["eviction_share"] is None else f" eviction {100 * sample['eviction_share']:.1f}%"
            print(f"  pass {index} threads={threads} {method.label:36s} {sample['tokens_per_s']:7.2f} tok/s "
                  f"ttft {sample['ttft_s']:6.2f} s KV held {sample['kv_mib_live_end']:.1f} MiB{share}",
                  file=sys.stderr, flush=True)

    rows = summarise(samples, methods, args.threads)
    print_report(rows, methods, args, versions)
    if args.json:
        args.json.write_text(json.dumps({"setup": vars(args) | {"methods": [m.label for m in methods],
                                                                 "json": str(args.json),
                                                                 "kvpress_venv": str(args.kvpress_venv)},
                                         "rows": rows}, indent=2, default=str))


def summarise(samples, methods, thread_counts) -> list[dict]:
    rows = []
    for threads in thread_counts:
        for m in methods:
            runs = samples[(m.label, threads)]
            shares = [s["eviction_share"] for s in runs if s["eviction_share"] is not None]
            rows.append({
                "method": m.label, "threads": threads,
                "tokens_per_s": statistics.median(s["tokens_per_s"] for s in runs),
                "ttft_s": statistics.median(s["ttft_s"] for s in runs),
                "kv_mib_allocated": max(s["kv_mib_allocated"] for s in runs),
                "kv_mib_live_end": runs[0]["kv_mib_live_end"],
                "eviction_share": statistics.median(shares) if shares else None,
                "new_tokens": runs[0]["new_tokens"],
                "samples": len(runs),
            })
    return rows


def print_report(rows, methods, args, versions) -> None:
    print(f"SmolLM2-135M-Instruct fp32 CPU, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, "
          f"budget {args.budget}, residual {args.residual}, greedy, repeats {args.repeats}, threads "
          f"{','.join(map(str, args.threads))}"
          + (f"; {versions}, SnapKV window {args.snapkv_window}" if versions else ""))
    print()
    print("| threads | method | decode tok/s | TTFT s | KV MiB allocated | KV MiB held at end | eviction % of decode |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        share = "–" if r["eviction_share"] is None else f"{100 * r['eviction_share']:.1f}"
        print(f"| {r['threads']} | {r['method']} | {r['tokens_per_s']:.2f} | {r['ttft_s']:.1f} | "
              f"{r['kv_mib_allocated']:.1f} | {r['kv_mib_live_end']:.1f} | {share} |")
    tps = {(r["method"], r["threads"]): r["tokens_per_s"] for r in rows}
    print()
    print("| threads | ratio | value | goal |")
    print("| ---: | --- | ---: | --- |")
    for threads in args.threads:
        for denominator, goal in (("full (HF DynamicCache)", 2.0), ("full (preallocated)", 2.0),
                                  ("kvpress SnapKV DecodingPress", 1.5)):
            if ("vase", threads) in tps and (denominator, threads) in tps:
                value = tps[("vase", threads)] / tps[(denominator, threads)]
                verdict = "met" if value >= goal else "missed"
                print(f"| {threads} | vase / {denominator} | {value:.2f} | >= {goal} ({verdict}) |")
    if 1 in args.threads and 2 in args.threads:
        print()
        print("| method | tok/s 2 threads / 1 thread | 2 threads faster? |")
        print("| --- | ---: | --- |")
        for m in methods:
            value = tps[(m.label, 2)] / tps[(m.label, 1)]
            print(f"| {m.label} | {value:.2f} | {'yes' if value > 1.0 else 'no'} |")


if __name__ == "__main__":
    main()
