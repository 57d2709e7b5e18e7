"""Calibrate the generated tasks' difficulty on a model (default: the embedded SmolLM2): measured tables.

Greedy decoding, one sample per problem, so the standard error is over problems. Prints:

1. ``--curve``: full-cache accuracy (strict and flexible) of ``fact-recall`` against the number of
   facts and the filler length, with the prompt's mean length in tokens.
2. ``--methods``: every method at one budget on one task setting (``--task``), with flexible and
   strict accuracy ± SE, loop rate, evictions and whether the first eviction came before the first
   answer token; then which methods are pairwise more than 2 SE apart.

    VASE_TORCH_THREADS=1 .venv/bin/python benchmarks/calibrate_tasks.py --curve --problems 20 \\
        --facts 4,8,16 --filler 10,30,60
    VASE_TORCH_THREADS=1 .venv/bin/python benchmarks/calibrate_tasks.py --problems 40 \\
        --task "fact-recall?facts=8&filler=20" --budget 64 --residual 8 --evict-after-prefill
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time

from vase.generation import generate
from vase.grading import grade
from vase.metrics import detect_repetition_loop, mean_and_se
from vase.models import load_model
from vase.prompting import prompt_opens_thinking, render_prompt
from vase.tasks import get_task


def run_task(model, tokenizer, task: str, *, n: int, method: str, budget: int | None, residual: int,
             evict_after_prefill: bool, max_new_tokens: int, batch: int) -> dict:
    problems = get_task(task).load(limit=n, seed=0)
    prompts = [render_prompt(tokenizer, p) for p in problems]
    strict, flex, loops, evictions, prompt_tokens = [], [], [], [], []
    started = time.perf_counter()
    for start in range(0, len(problems), batch):
        chunk = slice(start, start + batch)
        results = generate(model, tokenizer, prompts[chunk], method=method,
                           budget=None if method == "full" else budget, residual=residual,
                           evict_after_prefill=evict_after_prefill, max_new_tokens=max_new_tokens)
        for problem, prompt, result in zip(problems[chunk], prompts[chunk], results):
            verdict = grade(problem, result.text, opened_in_prompt=prompt_opens_thinking(prompt))
            strict.append(float(bool(verdict.correct)))
            flex.append(float(bool(verdict.correct_flex)))
            loops.append(float(detect_repetition_loop(result.tokens) is not None))
            evictions.append(result.evictions)
            prompt_tokens.append(result.prompt_tokens)
    return {"task": task, "method": method, "strict": mean_and_se(strict), "flex": mean_and_se(flex),
            "loops": sum(loops) / len(loops), "evictions": sum(evictions) / len(evictions),
            "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens), "n": len(problems),
            "seconds": time.perf_counter() - started}


def first_eviction_step(prompt_tokens: float, budget: int, residual: int, evict_after_prefill: bool) -> int:
    """Decode steps before the first eviction acts on the logits (0: the first token already sees it)."""
    if evict_after_prefill and prompt_tokens > budget:
        return 0
    first = (max(budget, int(prompt_tokens)) // residual + 1) * residual
    return first - int(prompt_tokens) + 1


def pct(value: tuple[float, float]) -> str:
    return f"{100 * value[0]:5.1f} ± {100 * value[1]:4.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curve", action="store_true", help="print the full-cache fact-recall curve only")
    ap.add_argument("--facts", default="4,8,16")
    ap.add_argument("--filler", default="10,30,60")
    ap.add_argument("--task", default="fact-recall")
    ap.add_argument("--methods", default="full,vase,vase-dkv,snapkv,streamingllm,random")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--residual", type=int, default=8)
    ap.add_argument("--evict-after-prefill", action="store_true")
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model, tokenizer = load_model(args.model)
    rows = []
    if args.curve:
        print(f"full cache, greedy, {args.problems} problems, max {args.max_new_tokens} new tokens")
        print(f"{'facts':>5} {'filler':>6} {'prompt tok':>10} {'flex acc % ± SE':>16} {'strict % ± SE':>15} {'s':>6}")
        for facts, filler in itertools.product(args.facts.split(","), args.filler.split(",")):
            row = run_task(model, tokenizer, f"fact-recall?facts={facts}&filler={filler}", n=args.problems,
                           method="full", budget=None, residual=args.residual, evict_after_prefill=False,
                           max_new_tokens=args.max_new_tokens, batch=args.batch)
            rows.append(row)
            print(f"{facts:>5} {filler:>6} {row['prompt_tokens']:10.0f} {pct(row['flex']):>16} "
                  f"{pct(row['strict']):>15} {row['seconds']:6.0f}", flush=True)
    else:
        print(f"{args.task}: budget {args.budget}, residual {args.residual}, evict_after_prefill "
              f"{args.evict_after_prefill}, greedy, {args.problems} problems, max {args.max_new_tokens} new tokens")
        print(f"{'method':<13} {'flex acc % ± SE':>16} {'strict % ± SE':>15} {'loop %':>6} {'evictions':>9} "
              f"{'prompt tok':>10} {'1st evict step':>14} {'s':>5}")
        for method in args.methods.split(","):
            row = run_task(model, tokenizer, args.task, n=args.problems, method=method, budget=args.budget,
                           residual=args.residual, evict_after_prefill=args.evict_after_prefill,
                           max_new_tokens=args.max_new_tokens, batch=args.batch)
            rows.append(row)
            step = "-" if method == "full" else str(first_eviction_step(
                row["prompt_tokens"], args.budget, args.residual, args.evict_after_prefill))
            print(f"{method:<13} {pct(row['flex']):>16} {pct(row['strict']):>15} {100 * row['loops']:6.1f} "
                  f"{row['evictions']:9.1f} {row['prompt_tokens']:10.0f} {step:>14} {row['seconds']:5.0f}", flush=True)
        apart = []
        for a, b in itertools.combinations(rows, 2):
            gap = abs(a["flex"][0] - b["flex"][0])
            se = math.hypot(a["flex"][1], b["flex"][1])
            if gap > 2 * se:
                apart.append(f"{a['method']}/{b['method']}")
        print("pairs more than 2 SE apart (flexible; SE of the difference):", ", ".join(apart) or "none")
    if args.json:
        print(json.dumps(rows, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
