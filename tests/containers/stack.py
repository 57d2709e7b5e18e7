"""The compose test's parts: this machine's Docker engine, the runs of the test that share it, and
the stack (compose on the repository's files, its HTTP API). conftest.py makes fixtures of them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PREFIX = "vase-e2e-"
FILES = [ROOT / "docker-compose.yml", ROOT / "docker/compose.host.yml", Path(__file__).with_name("compose.test.yml")]
SERVICES = ["postgres", "redis", "api", "worker-cpu", "dashboard"]
WHEELS = ROOT / "docker/wheels"
# local-docker.sh keeps its engine here (LD_ROOT): how a run tells whether it is running already.
ENGINE_SOCKET = Path(os.environ.get("LD_ROOT", "/var/lib/local-docker")) / "docker.sock"
# The runs of this test on this machine: a lock, a file per run (its pid), and a mark that a run
# of this test (not a person) started the engine.
RUNS = Path(tempfile.gettempdir()) / "vase-e2e-runs"
STARTED_MARK = RUNS / "engine-started-by-a-run"


def say(message: str) -> None:
    print(f"[compose] {message}", flush=True)


def local_docker_script() -> Path:
    wanted = os.environ.get("VASE_LOCAL_DOCKER")
    candidates = [Path(wanted)] if wanted else [d / "shared/tools/local-docker.sh" for d in ROOT.parents]
    for script in candidates:
        if script.is_file():
            return script
    pytest.fail("no Docker engine: local-docker.sh is neither in shared/tools beside the repository nor at "
                "$VASE_LOCAL_DOCKER, and the compose test needs it to start one")


def docker(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)


def engine_answers(env: dict[str, str]) -> bool:
    try:
        return docker(env, "info", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def runs_locked() -> Iterator[None]:
    RUNS.mkdir(exist_ok=True)
    with open(RUNS / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def live_runs() -> set[int]:
    """Pids of the registered runs still alive (the files of dead ones are removed)."""
    alive = set()
    for entry in RUNS.glob("run-*"):
        pid = int(entry.name.removeprefix("run-"))
        if pid_alive(pid):
            alive.add(pid)
        else:
            entry.unlink(missing_ok=True)
    return alive


def remove_stacks_of_dead_runs(env: dict[str, str]) -> None:
    label = "label=com.docker.compose.project"
    projects = set(docker(env, "ps", "-a", "--filter", label, "--format", '{{.Label "com.docker.compose.project"}}').stdout.split())
    projects |= set(docker(env, "volume", "ls", "--filter", label, "--format", '{{.Label "com.docker.compose.project"}}').stdout.split())
    for project in projects:
        pid = project.removeprefix(PROJECT_PREFIX)
        if project.startswith(PROJECT_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            containers = docker(env, "ps", "-aq", "--filter", f"{label}={project}").stdout.split()
            volumes = docker(env, "volume", "ls", "-q", "--filter", f"{label}={project}").stdout.split()
            if containers:
                docker(env, "rm", "-f", *containers, timeout=120)
            if volumes:
                docker(env, "volume", "rm", "-f", *volumes, timeout=120)
            say(f"removed {project}, left by a run that died")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Stack:
    compose_binary: Path
    env: dict[str, str]
    project: str
    api: str
    dashboard: str
    timings: dict[str, float] = field(default_factory=dict)
    token: str = ""

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for f in FILES for arg in ("-f", str(f))]
        cmd = [str(self.compose_binary), *files, "--project-directory", str(ROOT), "-p", self.project, *args]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            pytest.fail(f"docker-compose {' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}"
                        f"\n{out.stderr[-3000:]}")
        return out

    def up(self, *services: str) -> float:
        """`up -d --wait`: returns once every service runs and each health check passes."""
        started = time.monotonic()
        out = self.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "300", *services, check=False)
        if out.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "40", check=False)
            pytest.fail(f"docker-compose up {' '.join(services)} failed ({out.returncode}):\n{out.stderr[-3000:]}\n"
                        f"--- logs ---\n{logs.stdout[-6000:]}")
        return time.monotonic() - started

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def wait_job(self, job_id: str, timeout: float = 900, until=None) -> dict:
        """Poll the job until it finishes (or ``until(job)`` holds); fails with the worker's log."""
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while True:
                job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                if (until or (lambda j: j["status"] in ("succeeded", "failed", "cancelled")))(job):
                    return job
                if time.monotonic() > deadline:
                    logs = self.compose("logs", "--no-color", "--tail", "60", "worker-cpu", check=False).stdout
                    pytest.fail(f"job {job_id} still {job['status']} after {timeout:.0f} s: {job['progress']}\n{logs}")
                time.sleep(1.0)

    def samples(self, job_id: str) -> list[dict]:
        with self.client() as http:
            body = http.get(f"/v1/jobs/{job_id}/samples", params={"limit": 1000}).raise_for_status().json()
        assert body["total"] == len(body["items"])
        return body["items"]


def torch_wheel() -> None:
    """The torch build installed here (the CPU one), as a wheel in docker/wheels: pip takes it from its
    own configuration (a local folder of wheels on these machines) and copies it there."""
    import torch

    if any(WHEELS.glob(f"torch-{torch.__version__}-*.whl")):
        return
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(WHEELS),
         f"torch=={torch.__version__}"],
        capture_output=True, text=True, timeout=900,
    )
    if out.returncode != 0:
        pytest.fail(f"no torch wheel for the image: pip download torch=={torch.__version__} failed:\n{out.stderr[-2000:]}")
