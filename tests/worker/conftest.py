"""Real processes for the worker tests: Celery workers (`celery -A worker.app worker`), the API
(`vase serve`), a private redis-server; every one is killed in teardown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vase.store import TERMINAL_STATUSES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A tiny job on the embedded SmolLM2: a chunk per problem, two runs, a budget that evicts.
TINY_JOB = {
    "task": "arith-chain", "limit": 2, "chunk_size": 1,
    "methods": [{"name": "full"}, {"name": "vase", "params": {"n_large": 4}}],
    "budgets": [32], "residual": 8, "samples": 1, "max_new_tokens": 24,
}


# One torch thread per process: on a shared 2-core machine, more threads only fight each other
# (4x slower decoding measured with the other test processes running).
SUBPROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                  "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        self._fh = open(log, "ab")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {text!r} after {timeout} s:\n{self.output()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL the whole process group (the worker and its pool processes), no cleanup."""
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, grace: float = 10) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # leftover pool processes too
        except ProcessLookupError:
            pass
        if self.popen.poll() is None:
            self.popen.wait(timeout=30)
        self._fh.close()


@pytest.fixture
def procs(tmp_path):
    """Start processes with ``procs.start(name, argv, env)``; all are stopped at teardown."""

    class Procs(list):
        def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
            proc = Proc(name, argv, env, tmp_path / f"{name}.log")
            self.append(proc)
            return proc

        def worker(self, env: dict[str, str], name: str, *, queues: str = "vase.cpu", pool: str = "prefork") -> Proc:
            argv = [str(BIN / "celery"), "-A", "worker.app", "worker", "-Q", queues, "--pool", pool,
                    "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
                    "--hostname", f"{name}@%h"]
            proc = self.start(name, argv, env)
            proc.wait_for(" ready.", timeout=120)
            return proc

        def redis(self, port: int) -> Proc:
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "no"]
            proc = self.start(f"redis-{port}", argv, dict(os.environ))
            proc.wait_for("Ready to accept connections", timeout=30)
            return proc

    started = Procs()
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def service_env(postgres_url, redis_url, monkeypatch):
    """Environment of the API and workers: fresh Postgres database, fresh Redis db, fast recovery
    (leases expire after 4 s, sweeps every second). Also applied to this process's settings."""
    from vase.config import get_settings

    env = {
        "VASE_DATABASE_URL": postgres_url,
        "VASE_BROKER_URL": redis_url,
        "VASE_STALE_AFTER_S": "4",
        "VASE_RECOVERY_INTERVAL_S": "1",
        "VASE_WORKER_DB_RETRY_S": "90",
        **SUBPROCESS_ENV,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("VASE_API_TOKEN", "VASE_REQUIRE_TOKEN_FOR_READS", "VASE_WORKER_GPUS"):
        monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    try:
        yield {**os.environ, **env}
    finally:
        get_settings.cache_clear()


@pytest.fixture
def api(service_env):
    """The API in this process (Celery mode), with a token: (client, store, auth headers)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from vase.config import get_settings

    with TestClient(create_app(get_settings())) as client:
        store = client.app.state.service.store
        yield client, store, {"Authorization": f"Bearer {store.create_token('tests')}"}


def wait_job(store, job_id: str, *, until=TERMINAL_STATUSES, timeout: float = 240,
             min_done: int | None = None, procs=None) -> dict:
    """Poll the job until its status is in ``until`` (or ``min_done`` samples are stored)."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if min_done is not None and job["done_samples"] >= min_done:
            return job
        if min_done is None and job["status"] in until:
            return job
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in (procs or []))
    raise AssertionError(f"job {job_id} is {job and job['status']} after {timeout} s: {job}\n{logs}")


def assert_every_sample_once(store, job_id: str) -> None:
    """Every (run, problem, sample) of the job is stored, none twice."""
    from vase.spec import JobSpec
    from vase.tasks import get_task

    job = store.get_job(job_id)
    spec = JobSpec.from_stored(job["spec"])
    problems = {p.id for p in get_task(spec.task).load(limit=spec.limit, seed=spec.task_seed)}
    runs = store.list_runs(job_id=job_id)
    assert len(runs) == len(spec.runs())
    samples = store.list_samples(job_id=job_id, include_text=False)
    keys = [(s["run_id"], s["problem_id"], s["sample_index"]) for s in samples]
    assert len(keys) == len(set(keys)), "a sample was stored twice"
    expected = {(r["id"], p, i) for r in runs for p in problems for i in range(spec.samples)}
    assert set(keys) == expected
    assert job["done_samples"] == job["total_samples"] == len(expected)
