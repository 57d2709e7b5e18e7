"""GPU check: a Qwen3-shaped model with random bf16 weights decodes under `full`, `vase` and
`vase-dkv` at each budget, and this prints measured decode tokens/s and peak memory beside the
roofline prediction of docs/performance.md (`benchmarks/roofline.py`), as a markdown table.

No weights are downloaded (the lent GPU machine has no network): the model is built from a config.
Attention uses flash-attn's `flash_attn_with_kvcache` when importable, else PyTorch SDPA.

`--minutes N` plans the run to fit N minutes: a warm-up measures how far below the roofline this
machine runs, and the decode lengths (from `--lengths`, shortest first) are kept while the
predicted time of every run, scaled by that measured fraction, still fits.

    python benchmarks/gpu_check.py --minutes 10                   # Qwen3-4B shape, 4k/16k/32k
    python benchmarks/gpu_check.py --model Qwen3-14B --minutes 10 --budgets 2048
    python benchmarks/gpu_check.py --tiny --minutes 1              # CPU smoke run, a 2-layer model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from roofline import GPUS, MODELS, Gpu, ModelShape, predict  # noqa: E402

from vase.attention import flash_available  # noqa: E402
from vase.generation import generate  # noqa: E402

TINY = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=40960, tie_word_embeddings=True)
# A stand-in for a CPU's memory system, only so --tiny can print the same columns (not a prediction
# anyone should read as one).
CPU_ASSUMED = Gpu("cpu (assumed 20 GB/s, 0.1 TFLOP/s)", bandwidth=20e9, bf16_flops=1e11, memory=float("inf"))


def qwen3_config(shape: ModelShape) -> Qwen3Config:
    return Qwen3Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, tie_word_embeddings=shape.tied_embeddings, rms_norm_eps=1e-6)


def device_model() -> Gpu:
    """The roofline figures of the GPU in use (H100/H200 by name), else a stated assumption."""
    if not torch.cuda.is_available():
        return CPU_ASSUMED
    device = torch.cuda.get_device_name()
    for key, gpu in GPUS.items():
        if key in device.upper():
            return gpu
    print(f"warning: no roofline figures for {device!r}; using the H100's", file=sys.stderr)
    return GPUS["H100"]


class IdTokenizer:
    """Generation works on token ids here; decoding just joins them."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be integers >= 1, got {text!r}")
    return values


def cells(budgets: list[int]) -> list[tuple[str, int | None]]:
    return [("full", None)] + [(m, b) for b in budgets for m in ("vase", "vase-dkv")]


def plan(lengths, budgets, minutes, seconds_per_predicted_second, predicted_seconds) -> list[int]:
    """The lengths (shortest first) whose runs, at the measured fraction of the roofline, fit the time."""
    allowed, used, chosen = 60.0 * minutes, 0.0, []
    for n in sorted(lengths):
        cost = sum(predicted_seconds(n, budget) * seconds_per_predicted_second for _, budget in cells(budgets))
        if used + cost > allowed:
            break
        used += cost
        chosen.append(n)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="Qwen3-4B")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, for a CPU smoke run")
    parser.add_argument("--lengths", type=int_list, default=None,
                        help="decode lengths (default 4096,16384,32768; --tiny: 64,128,256)")
    parser.add_argument("--budgets", type=int_list, default=None, help="default 2048,4096; --tiny: 32,64")
    parser.add_argument("--minutes", type=float, default=None, help="keep only the lengths that fit this many minutes")
    parser.add_argument("--residual", type=int, default=None, help="default 64; --tiny: 8")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--attention", default="auto")
    args = parser.parse_args()
    lengths = args.lengths or ([64, 128, 256] if args.tiny else [4096, 16384, 32768])
    budgets = args.budgets or ([32, 64] if args.tiny else [2048, 4096])
    residual = args.residual or (8 if args.tiny else 64)
    if min(budgets) <= residual:
        parser.error("--budgets: every budget must be greater than --residual")
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes: must be > 0")

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    config = Qwen3Config(**TINY) if args.tiny else qwen3_config(MODELS[args.model])
    shape = ModelShape.from_config("tiny Qwen3" if args.tiny else args.model, config, dtype.itemsize)
    gpu = device_model()
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    tokenizer = IdTokenizer()
    prompt = torch.randint(1, config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1))
    prompts = [prompt.tolist()] * args.batch

    def predicted(n: int, budget: int | None):
        return predict(shape, gpu, prompt=args.prompt_tokens, new_tokens=n, budget=budget, residual=residual,
                       batch=args.batch)

    def run(method: str, n: int, budget: int | None) -> dict:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        result = generate(
            model, tokenizer, prompts, method=method, budget=budget, residual=residual, max_new_tokens=n,
            stop_at_eos=False, seeds=list(range(args.batch)), attention_backend=args.attention,
        )[0]
        if cuda:
            torch.cuda.synchronize()
        return {"tokens_per_s": result.tokens_per_s * args.batch, "new_tokens": result.new_tokens,
                "eviction_share": result.eviction_seconds / result.decode_seconds,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}

    # Warm-up (evicts a few times); its speed against the roofline sizes the plan.
    warm_n = min(lengths[0], 2 * min(budgets))
    warm = run("vase", warm_n, min(budgets))
    fraction = warm["tokens_per_s"] / predicted(warm_n, min(budgets)).tokens_per_s
    chosen = lengths
    if args.minutes is not None:
        chosen = plan(lengths, budgets, args.minutes, 1.0 / fraction,
                      lambda n, b: args.batch * n / predicted(n, b).tokens_per_s)
    setup = {"device": torch.cuda.get_device_name() if cuda else "cpu", "roofline": gpu.name,
             "flash_attn": flash_available(), "dtype": str(dtype), "model": f"{shape.name}, random weights",
             "prompt_tokens": args.prompt_tokens, "batch": args.batch, "residual": residual,
             "warm_up_fraction_of_roofline": round(fraction, 3), "lengths": chosen,
             "lengths_left_out": [n for n in lengths if n not in chosen]}
    print(json.dumps(setup), file=sys.stderr, flush=True)

    rows = []
    started = time.perf_counter()
    for n in chosen:
        for method, budget in cells(budgets):
            measured = run(method, n, budget)
            p = predicted(n, budget)
            rows.append((n, method, budget, measured, p))
            print(json.dumps({"new_tokens": n, "method": method, "budget": budget, **measured,
                              "predicted_tokens_per_s": round(p.tokens_per_s, 1)}), file=sys.stderr, flush=True)

    print(f"{shape.name}, {setup['dtype']}, {setup['device']} (roofline: {gpu.name}), batch {args.batch}, prompt "
          f"{args.prompt_tokens}, residual {residual}, flash-attn {setup['flash_attn']}; "
          f"{time.perf_counter() - started:.0f} s; lengths left out: {setup['lengths_left_out'] or 'none'}")
    print()
    print("| new tokens | method | budget | measured tok/s | predicted tok/s | measured / predicted | evict % | "
          "peak GiB | predicted GiB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, method, budget, m, p in rows:
        peak = "–" if m["peak_gib"] is None else f"{m['peak_gib']:.1f}"
        print(f"| {n} | {method} | {budget or '–'} | {m['tokens_per_s']:.1f} | {p.tokens_per_s:.1f} | "
              f"{m['tokens_per_s'] / p.tokens_per_s:.2f} | {100 * m['eviction_share']:.1f} | {peak} | "
              f"{p.peak_memory_gib:.1f} |")


if __name__ == "__main__":
    main()
