"""Per-sample time of model processes sharing the machine: threads sized by vase.runtime vs torch's default.

The situation of a worker's pool (concurrency P), or of a bench beside a worker: P processes run the
embedded SmolLM2 at the same time, each generating the same VaSE sample (budget 64, greedy, a fixed
number of new tokens) again and again. Each round runs the P processes twice, once with threads set
by ``vase.runtime.size_threads(P)`` (what ``vase worker --concurrency P`` does) and once with torch's
default (a thread per core of the machine); the order alternates between rounds. The processes load
the model, then start timing together. Prints every per-sample time, the medians, and the ratio
default / sized, all from this one run.

    .venv/bin/python benchmarks/thread_sizing.py --processes 2 --rounds 3 --samples 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = "Compute step by step: start with 7, add 5, multiply by 3, subtract 4, then add 9. What is the result?"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VASE_TORCH_THREADS")


def child(mode: str, processes: int, samples: int, new_tokens: int) -> None:
    if mode == "sized":
        from vase.runtime import size_threads

        size_threads(processes)  # before torch is imported, as `vase worker` does
    import torch

    from vase.generation import generate
    from vase.models import load_model

    model, tokenizer = load_model(None, device="cpu", dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True)

    def one(tokens: int) -> float:
        started = time.perf_counter()
        generate(model, tokenizer, [prompt], method="vase", budget=64, residual=16, max_new_tokens=tokens,
                 stop_at_eos=False, seeds=[0])
        return time.perf_counter() - started

    one(8)  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()  # every process starts timing at once
    times = [one(new_tokens) for _ in range(samples)]
    print(json.dumps({"threads": torch.get_num_threads(), "times": times}), flush=True)


def run_group(mode: str, args) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    cmd = [sys.executable, __file__, "--child", mode, "--processes", str(args.processes), "--samples",
           str(args.samples), "--new-tokens", str(args.new_tokens)]
    logs = [tempfile.TemporaryFile("w+") for _ in range(args.processes)]  # stderr: shown if a process fails
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
             for log in logs]
    for p, log in zip(procs, logs, strict=True):
        if p.stdout.readline().strip() != "ready":
            p.wait(60)
            log.seek(0)
            raise SystemExit(f"a {mode} process failed:\n{log.read()[-3000:]}")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait(60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="Model processes running at once.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3, help="Samples per process and round.")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--child", choices=["sized", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.processes, args.samples, args.new_tokens)
        return

    from vase.runtime import usable_cpus

    times: dict[str, list[float]] = {"sized": [], "default": []}
    threads: dict[str, set[int]] = {"sized": set(), "default": set()}
    print(f"{args.processes} processes at once, {usable_cpus():g} usable CPUs, {args.new_tokens} new tokens per sample "
          f"(VaSE, budget 64), {args.samples} samples per process and round")
    for round_ in range(args.rounds):
        order = ["sized", "default"] if round_ % 2 == 0 else ["default", "sized"]
        for mode in order:
            for result in run_group(mode, args):
                times[mode] += result["times"]
                threads[mode].add(result["threads"])
            print(f"round {round_ + 1} {mode:7s}: " + " ".join(f"{t:.2f}" for t in times[mode][-args.processes * args.samples:])
                  + " s", flush=True)
    medians = {mode: statistics.median(ts) for mode, ts in times.items()}
    for mode in ("sized", "default"):
        print(f"{mode:7s} threads {sorted(threads[mode])}: median {medians[mode]:.2f} s per sample "
              f"(min {min(times[mode]):.2f}, max {max(times[mode]):.2f}, n={len(times[mode])})")
    print(f"default / sized: {medians['default'] / medians['sized']:.2f}x per-sample time")


if __name__ == "__main__":
    main()
