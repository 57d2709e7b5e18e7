"""Why decode does (not) get faster with a second CPU thread: memory bandwidth against compute.

Decode reads every weight of the model once per step, whatever the batch: at batch 1 a step is a
chain of matrix-vector products, bound by memory bandwidth; as the batch grows the same weights
serve more rows and the step turns compute-bound. A second thread helps a compute-bound step and
helps a bandwidth-bound one only if one core cannot use all of the memory bandwidth.

For each thread count, in one run (the counts alternate between repeats), this prints:
- the memory bandwidth one process gets (a sum over a 512 MiB fp32 tensor, read once per pass);
- the bytes of weights a decode step reads, and the step time that bandwidth allows;
- the measured decode step of the embedded SmolLM2 on the project's eviction cache (vase at
  budget 64, residual 8, evict after prefill), at batch 1, 8 and 32;
- the eviction's share of decode time and the eviction step's speed-up with the second thread.
Then 2 threads / 1 thread for each, which says where a second thread pays.

    .venv/bin/python benchmarks/decode_threads.py --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vase.generation import generate
from vase.models import load_model

PROMPT = "Remember the code of Nora: 2378. " * 12 + "What is the code of Nora?"


def bandwidth(threads: int, mib: int = 512, passes: int = 5) -> float:
    """Bytes/s of reading a large fp32 tensor (sum), best of `passes`."""
    torch.set_num_threads(threads)
    data = torch.ones(mib * 2**20 // 4)
    data.sum()  # touch every page first
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.nbytes / best


def weight_bytes(model) -> int:
    """Bytes a decode step reads: every parameter but the input embedding (a lookup), once."""
    embedding = model.get_input_embeddings().weight
    total = sum(p.nbytes for p in model.parameters())
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embedding
    return total if tied else total - embedding.nbytes


def decode_step(model, tokenizer, threads: int, batch: int, new_tokens: int) -> tuple[float, float]:
    """Seconds per decode step, and of it evicting, vase on a batch of one prompt."""
    torch.set_num_threads(threads)
    kwargs = dict(method="vase", budget=64, residual=8, evict_after_prefill=True, max_new_tokens=new_tokens,
                  stop_at_eos=False, seeds=list(range(batch)))
    generate(model, tokenizer, [PROMPT] * batch, **{**kwargs, "max_new_tokens": 2})  # warm-up
    result = generate(model, tokenizer, [PROMPT] * batch, **kwargs)[0]
    steps = result.new_tokens - 1  # the first token comes from the prefill
    return result.decode_seconds / steps, result.eviction_seconds / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    model, tokenizer = load_model()
    read = weight_bytes(model)
    bw: dict[int, list[float]] = {t: [] for t in thread_counts}
    step: dict[tuple[int, int], list[float]] = {}
    share: dict[tuple[int, int], list[float]] = {}
    for repeat in range(args.repeats):
        order = thread_counts if repeat % 2 == 0 else thread_counts[::-1]
        for threads in order:
            bw[threads].append(bandwidth(threads))
            for batch in batches:
                seconds, evicting = decode_step(model, tokenizer, threads, batch, args.new_tokens)
                step.setdefault((threads, batch), []).append(seconds)
                share.setdefault((threads, batch), []).append(evicting)

    print(f"SmolLM2-135M-Instruct fp32, {read / 2**20:.0f} MiB of weights read per decode step; "
          f"vase, budget 64, residual 8, {args.new_tokens} new tokens; medians of {args.repeats} repeats")
    print()
    print("| threads | read bandwidth GB/s | step bound by it, ms | batch | decode step ms | ms per row | "
          "eviction % of decode |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for threads in thread_counts:
        gbs = statistics.median(bw[threads])
        for batch in batches:
            ms = statistics.median(step[(threads, batch)]) * 1e3
            evict_ms = statistics.median(share[(threads, batch)]) * 1e3
            print(f"| {threads} | {gbs / 1e9:.1f} | {read / gbs * 1e3:.0f} | {batch} | {ms:.0f} | {ms / batch:.1f} | "
                  f"{100 * evict_ms / ms:.1f} |")
    if len(thread_counts) == 2:
        one, two = thread_counts
        print()
        print(f"| {two} threads / {one} thread | ratio |")
        print("| --- | ---: |")
        print(f"| read bandwidth | {statistics.median(bw[two]) / statistics.median(bw[one]):.2f} |")
        for batch in batches:
            speedup = statistics.median(step[(one, batch)]) / statistics.median(step[(two, batch)])
            print(f"| decode speed, batch {batch} | {speedup:.2f} |")
        for batch in batches:
            speedup = statistics.median(share[(one, batch)]) / statistics.median(share[(two, batch)])
            print(f"| eviction speed, batch {batch} | {speedup:.2f} |")


if __name__ == "__main__":
    main()
