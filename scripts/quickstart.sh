#!/usr/bin/env bash
# Install (if needed) and run the main job: a benchmark with the `vase bench` defaults (embedded
# SmolLM2 on the CPU, results in SQLite under ~/.cache/vase). Extra arguments go to `vase bench`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/vase" bench "$@"
