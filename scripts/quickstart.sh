#!/usr/bin/env bash
# Install (if needed) and run the main job: `vase bench` on embedded defaults (the embedded SmolLM2
# on the CPU, the offline arith-chain task, full/vase/vase-dkv/snapkv at budget 128, fidelity to the
# full cache measured, results in SQLite under ~/.cache/vase). A few minutes on 2 cores.
# Arguments replace these defaults and go to `vase bench` as they are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then
  set -- --limit 2 --fidelity
fi
exec "$ROOT/.venv/bin/vase" bench "$@"
