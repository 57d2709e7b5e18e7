"""Greedy decode under an NVIDIA kvpress `DecodingPress`, timed like `vase.generation.generate`.

Runs inside kvpress's own virtualenv (kvpress pins transformers < 5.3, the project uses newer), so
it imports neither vase nor anything of this repository: `benchmarks/long_context.py` creates that
virtualenv, starts this file with its interpreter, hands it a JSON request on stdin and reads one
JSON line back. Our own code; kvpress is only imported.

Timing mirrors `generate`: time to first token is the prefill (model call and argmax); decode time
runs from the end of the prefill to the choice of the last token, and tokens/s is new tokens over
it. Greedy, EOS ignored, so every run decodes exactly `new_tokens` tokens.

Request: {"model": folder, "ids": [...], "new_tokens": N, "press": "none"|"snapkv"|"streamingllm",
          "budget": B, "residual": R, "snapkv_window": W, "n_sink": S, "threads": T}
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from importlib import metadata

import torch
from transformers import AutoModelForCausalLM, DynamicCache


def build_press(request: dict):
    from kvpress import DecodingPress, SnapKVPress, StreamingLLMPress

    if request["press"] == "none":
        return None
    if request["press"] == "snapkv":
        base = SnapKVPress(window_size=request["snapkv_window"])
    elif request["press"] == "streamingllm":
        base = StreamingLLMPress(n_sink=request["n_sink"])
    else:
        raise SystemExit(f"press: must be none, snapkv or streamingllm, got {request['press']!r}")
    # Compress to `budget` every `residual` steps: the cache then holds budget..budget+residual
    # tokens, as vase's does between evictions.
    return DecodingPress(base_press=base, compression_interval=request["residual"], target_size=request["budget"],
                         hidden_states_buffer_size=request["residual"])


def kv_bytes(cache: DynamicCache) -> int:
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.keys is not None)


@torch.inference_mode()
def run(request: dict) -> dict:
    torch.set_num_threads(request["threads"])
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32).eval()
    model.set_attn_implementation("sdpa")
    press = build_press(request)
    ids = torch.tensor([request["ids"]])
    cache = DynamicCache()
    tokens: list[int] = []
    peak = 0
    with press(model) if press is not None else contextlib.nullcontext():
        started = time.perf_counter()
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        decode_start = time.perf_counter()
        tokens.append(int(logits.argmax(-1)))
        first_token = time.perf_counter()
        while len(tokens) < request["new_tokens"]:
            logits = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True).logits[:, -1]
            tokens.append(int(logits.argmax(-1)))
            peak = max(peak, kv_bytes(cache))
        finished = time.perf_counter()
    return {
        "press": request["press"],
        "kvpress_version": metadata.version("kvpress"),
        "transformers_version": metadata.version("transformers"),
        "new_tokens": len(tokens),
        "ttft_s": first_token - started,
        "decode_s": finished - decode_start,
        "kv_bytes_peak": peak,
        "kv_bytes_end": kv_bytes(cache),
        "tokens": tokens,
    }


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
