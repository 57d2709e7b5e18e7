"""The embedded default: `vase serve` alone (no broker, SQLite) runs jobs in its own process, the
CLI submits to it, and a job left queued by a server that died is picked up when one starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VASE = str(Path(sys.executable).with_name("vase"))
JOB = {"task": "arith-chain", "limit": 1, "methods": [{"name": "full"}, {"name": "streamingllm"}],
       "budgets": [32], "residual": 8, "samples": 1, "max_new_tokens": 16}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_command_serves_and_runs_jobs(tmp_path):
    from vase.config import Settings
    from vase.jobs import plan_job, submit
    from vase.store import open_store

    url = f"sqlite:///{tmp_path / 'vase.sqlite'}"
    env = {k: v for k, v in os.environ.items() if k not in ("VASE_BROKER_URL", "VASE_API_TOKEN")}
    env.update(VASE_DATABASE_URL=url, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    # A job stored by a server that died before running it (never handed to any runner).
    store = open_store(url, cached=False)
    left = submit(store, plan_job({**JOB, "seeds": 7}, Settings(database_url=url)), None)["id"]

    port = _port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([VASE, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        assert ready.status_code == 200 and ready.json()["mode"] == "embedded"
        assert ready.json()["checks"]["database"]["detail"] == "sqlite answers"

        made = subprocess.run([VASE, "token", "create", "me"], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps(JOB))
        cli_env = {**env, "VASE_API_URL": base, "VASE_API_TOKEN": made.stdout.strip()}
        out = subprocess.run([VASE, "submit", str(job_file), "--wait", "--poll", "0.5", "--json"], env=cli_env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr + (tmp_path / "serve.log").read_text()[-3000:]
        result = json.loads(out.stdout)
        assert result["job"]["status"] == "succeeded" and result["job"]["progress"]["done"] == 2
        assert {r["method"] for r in result["results"]} == {"full", "streamingllm"}
        for row in result["results"]:  # strict and flexible grading, side by side
            assert row["accuracy"] in (0.0, 1.0) and row["accuracy_flex"] in (0.0, 1.0)
            assert row["accuracy_flex_se"] == 0.0 and row["pass_at_k_flex"] == {"1": row["accuracy_flex"]}

        # the job the dead server left behind ran too
        deadline = time.monotonic() + 120
        while (job := httpx.get(f"{base}/v1/jobs/{left}").json())["status"] != "succeeded":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["progress"]["done"] == 2

        bad = subprocess.run([VASE, "submit", "-"], input=json.dumps({**JOB, "budgets": [30]}), env=cli_env,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "budgets[0]: must be a multiple of residual (8)" in bad.stderr
        anonymous = subprocess.run([VASE, "submit", str(job_file)], env={**cli_env, "VASE_API_TOKEN": ""},
                                   capture_output=True, text=True, timeout=60)
        assert anonymous.returncode == 1 and "401" in anonymous.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def test_embedded_server_is_one_process():
    out = subprocess.run([VASE, "serve", "--workers", "2"], env={**os.environ, "VASE_BROKER_URL": ""},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "workers:" in out.stderr
