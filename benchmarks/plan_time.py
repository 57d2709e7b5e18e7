"""Time `vase.jobs.plan_job` for one job body in several source trees, side by side in one run.

    python benchmarks/plan_time.py --source main=/path/to/main --source new=. --repeats 3

Each repeat runs every tree once in a fresh process (the order alternates between repeats), after
a warm-up plan in that process; it prints the seconds of the timed plan per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CODE = """
import json, sys, time
from vase.jobs import plan_job
plan_job({"task": "arith-chain", "limit": 1})  # imports, once
body = json.loads(sys.argv[1])
started = time.perf_counter()
plan = plan_job(body)
print(json.dumps({"seconds": time.perf_counter() - started, "samples": plan.total_samples}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", required=True, help="LABEL=DIR of a source tree (repeatable)")
    parser.add_argument("--body", default='{"task": "fact-recall", "limit": 20000}', help="the job body (JSON)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = dict(item.split("=", 1) for item in args.source)
    times: dict[str, list[float]] = {label: [] for label in sources}
    for repeat in range(args.repeats):
        order = list(sources) if repeat % 2 == 0 else list(sources)[::-1]
        for label in order:
            root = os.path.abspath(sources[label])
            env = {**os.environ, "PYTHONPATH": root, "VASE_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-c", CODE, args.body], cwd=root, env=env, capture_output=True,
                                 text=True, check=True)
            times[label].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    print(f"plan_job({args.body}), {args.repeats} runs each, alternating order")
    print("| source | seconds | median |")
    print("| --- | --- | --- |")
    for label, xs in times.items():
        print(f"| {label} | {', '.join(f'{x:.3f}' for x in xs)} | {sorted(xs)[len(xs) // 2]:.3f} |")


if __name__ == "__main__":
    main()
