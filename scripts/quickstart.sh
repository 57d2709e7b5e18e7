#!/usr/bin/env bash
# Install (if needed), prepare the embedded model, and run the main job: `vase bench` on the
# calibrated offline task (fact-recall with the README's settings: the prompt is longer than the
# budget and is compressed at the end of the prefill, so the answer is written from the evicted
# cache) with full, vase, vase-dkv, snapkv, streamingllm and random at one budget, fidelity to the
# full cache measured, results in SQLite under ~/.cache/vase. Prints the wall time of each phase,
# then how to open the dashboard on the results. Arguments replace the bench defaults and go to
# `vase bench` as they are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

t0=$(now)
bash "$ROOT/scripts/install.sh"
t1=$(now)
# The first run converts the embedded GGUF into a transformers checkpoint (cached afterwards).
"$ROOT/.venv/bin/python" -c "from vase.models import load_model; load_model()"
t2=$(now)
if [ "$#" -eq 0 ]; then
  set -- --task fact-recall --methods full,vase,vase-dkv,snapkv,streamingllm,random \
         --budgets 128 --residual 8 --evict-after-prefill --limit 48 --batch-problems 48 --max-new-tokens 16 \
         --fidelity
fi
"$ROOT/.venv/bin/vase" bench "$@"
t3=$(now)
echo "quickstart wall time: install $(elapsed "$t0" "$t1") s, model preparation $(elapsed "$t1" "$t2") s, bench $(elapsed "$t2" "$t3") s"
echo "Open these results in the dashboard: $ROOT/.venv/bin/vase dashboard  (then http://127.0.0.1:8501, page Compare)"
