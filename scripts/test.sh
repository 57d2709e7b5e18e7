#!/usr/bin/env bash
# Install (if needed), make sure PostgreSQL and Redis are up on 127.0.0.1, then run the whole test
# suite. Extra arguments go to pytest. The exit status is pytest's.
# The suite includes the compose stack end to end (tests/containers, marker `compose`): it starts
# this machine's Docker engine with shared/tools/local-docker.sh (and stops it again), builds the
# CPU image and runs the stack; `-m "not compose"` leaves it out.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'test.sh: %s\n' "$*" >&2; }

bash scripts/install.sh

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

ensure_services() {
  if ! postgres_up; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || say "warning: pg_ctlcluster failed"
  fi
  if ! redis_up; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null \
      || say "warning: redis-server failed to start"
  fi
  local waited=0
  until postgres_up && redis_up; do
    if ((waited >= 30)); then
      postgres_up || say "error: PostgreSQL is not answering on 127.0.0.1:5432"
      redis_up || say "error: Redis is not answering on 127.0.0.1:6379"
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

# ---- ensure_chromium -------------------------------------------------------------------------
# Debian's Chromium, for the dashboard's real-browser test. Installed only when missing; a failed
# install is a warning here, and that test then fails visibly.
ensure_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  say "installing Debian chromium (for browser tests)"
  local log  # apt's chatter is shown only when it fails
  if ! log="$({ apt-get update -qq && apt-get install -y -qq chromium; } 2>&1)"; then
    printf '%s\n' "$log" >&2
    say "warning: could not install chromium"
  fi
}
# ----------------------------------------------------------------------------------------------

ensure_services
ensure_chromium

exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
