"""Wall time of one bench grid, the old way and the default way, side by side in one process.

The same grid (every method) runs into two fresh SQLite stores: the old path (one problem at a
time, its samples as one batch, each run prefilling its prompt again) and the default (problems
in batches of `--batch-problems`, each batch's prompts prefilled once for every run:
`PrefillCache`); repeats alternate the order. Both keep the full run's log-probabilities for
fidelity. Prints each pass's seconds, the ratio old/new, and whether the stored tokens are
identical (they must be, for greedy decoding).

    VASE_TORCH_THREADS=1 .venv/bin/python benchmarks/prefill_reuse.py --task "fact-recall?facts=8&filler=20" \\
        --limit 4 --samples 2 --budget 64 --residual 8 --max-new-tokens 24 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vase.bench import Bench
from vase.methods import parse_methods
from vase.models import load_model
from vase.spec import JobSpec
from vase.store import open_store


def one_pass(spec, model, tokenizer, folder: Path, name: str, reuse: bool) -> tuple[float, list]:
    store = open_store(f"sqlite:///{folder / f'{name}.sqlite'}", cached=False)
    bench = Bench(spec, store, model=model, tokenizer=tokenizer, reuse_prefill=reuse,
                  batch_problems=None if reuse else 1)
    started = time.perf_counter()
    bench.execute()
    seconds = time.perf_counter() - started
    tokens = [(s["problem_id"], s["sample_index"], s["metrics"]["tokens"])
              for r in bench.runs for s in store.list_samples(run_id=r.run_id)]
    return seconds, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="fact-recall?facts=8&filler=20")
    ap.add_argument("--methods", default="full,vase,vase-dkv,snapkv,streamingllm,random")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--residual", type=int, default=8)
    ap.add_argument("--evict-after-prefill", action="store_true")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--fidelity", action="store_true")
    ap.add_argument("--batch-problems", type=int, default=JobSpec.default("batch_problems"))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    model, tokenizer = load_model()
    spec = JobSpec(task=args.task, limit=args.limit, samples=args.samples, methods=parse_methods(args.methods),
                   budgets=[args.budget], residual=args.residual, evict_after_prefill=args.evict_after_prefill,
                   max_new_tokens=args.max_new_tokens, fidelity=args.fidelity, batch_problems=args.batch_problems)
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for reuse in order:
                seconds, tokens = one_pass(spec, model, tokenizer, Path(tmp), f"{repeat}-{reuse}", reuse)
                times[reuse].append(seconds)
                outputs.setdefault(reuse, tokens)
                print(f"repeat {repeat} {'batched' if reuse else 'old    '}: {seconds:7.1f} s", flush=True)
    old, new = statistics.median(times[False]), statistics.median(times[True])
    n = args.limit * args.samples * (len(spec.runs()))
    print(f"grid: {args.task}, {len(spec.runs())} runs x {args.limit} problems x {args.samples} samples = {n} samples")
    print(f"median seconds: old path {old:.1f}, batches of {args.batch_problems} with prefill reuse {new:.1f}; "
          f"speed-up old/new = {old / new:.2f}x")
    print(f"stored tokens identical: {outputs[True] == outputs[False]}")
    return 0 if outputs[True] == outputs[False] else 1


if __name__ == "__main__":
    sys.exit(main())
