"""GPU check: a Qwen3-4B-shaped model with random bf16 weights decodes a long output under
`full`, `vase` and `vase-dkv`, and this prints decode tokens/s and peak GPU memory for each.

No weights are downloaded (the lent GPU machine has no network): the model is built from a config.
Attention uses flash-attn's `flash_attn_with_kvcache` when importable, else PyTorch SDPA.

    python benchmarks/gpu_check.py                      # 16k new tokens, budget 2048 (GPU)
    python benchmarks/gpu_check.py --tiny --new-tokens 64 --budget 32 --residual 8   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from vase.attention import flash_available
from vase.generation import generate

QWEN3_4B = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000.0,
    tie_word_embeddings=True, rms_norm_eps=1e-6,
)
TINY = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=40960)


class IdTokenizer:
    """Generation works on token ids here; decoding just joins them."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=16384)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--residual", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--methods", default="full,vase,vase-dkv")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model, for a CPU smoke run")
    parser.add_argument("--attention", default="auto")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    config = Qwen3Config(**(TINY if args.tiny else QWEN3_4B))
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    tokenizer = IdTokenizer()
    prompt = torch.randint(1, config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1))
    prompts = [prompt.tolist()] * args.batch
    setup = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "flash_attn": flash_available(),
        "dtype": str(dtype),
        "model": "tiny Qwen3" if args.tiny else "Qwen3-4B shape, random weights",
        **{k: getattr(args, k) for k in ("new_tokens", "budget", "residual", "prompt_tokens", "batch")},
    }
    print(json.dumps(setup), flush=True)
    generate(model, tokenizer, prompts, method="vase", budget=args.budget, residual=args.residual,
             max_new_tokens=args.budget, stop_at_eos=False, attention_backend=args.attention)  # warm-up, evicts once

    rows = []
    for method in args.methods.split(","):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        started = time.perf_counter()
        result = generate(
            model, tokenizer, prompts, method=method, budget=None if method == "full" else args.budget,
            residual=args.residual, max_new_tokens=args.new_tokens, stop_at_eos=False, seeds=list(range(args.batch)),
            attention_backend=args.attention,
        )[0]
        if cuda:
            torch.cuda.synchronize()
        row = {
            "method": method,
            "tokens_per_s_per_row": round(result.tokens_per_s, 1),
            "tokens_per_s_batch": round(result.tokens_per_s * args.batch, 1),
            "new_tokens": result.new_tokens,
            "evictions": result.evictions,
            "kv_cache_mib": round(result.kv_cache_bytes_peak * args.batch / 2**20, 1),
            "eviction_share": round(result.eviction_seconds / result.decode_seconds, 4),
            "wall_s": round(time.perf_counter() - started, 1),
        }
        if cuda:
            row["peak_gpu_mib_above_weights"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
            row["peak_gpu_mib_total"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    full = next((r for r in rows if r["method"] == "full"), None)
    if full:
        for r in rows:
            print(f"{r['method']:10s} {r['tokens_per_s_per_row']:8.1f} tok/s  x{r['tokens_per_s_per_row'] / full['tokens_per_s_per_row']:.2f} vs full"
                  f"  KV {r['kv_cache_mib']:.1f} MiB  peak GPU {r.get('peak_gpu_mib_total', 0):.0f} MiB")


if __name__ == "__main__":
    main()
