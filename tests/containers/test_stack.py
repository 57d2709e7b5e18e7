"""The compose stack end to end, in containers on this machine's own Docker engine (marker `compose`).

The engine comes from ``local-docker.sh up`` (shared/tools beside the repository, or
``$VASE_LOCAL_DOCKER``): a dockerd without bridge networking, with base images built from Debian's
packages. The CPU image is built from this repository (``local/python:3.11``, torch from the CPU
wheel that pip's own configuration offers, put in docker/wheels). postgres, redis, api, worker-cpu
and dashboard then run with docker-compose.yml + docker/compose.host.yml (host network, 127.0.0.1,
free ports) + compose.test.yml. As a user would: a token from ``vase token create`` in the api
container, a job over REST until it succeeds, its results and a sample's trace over HTTP, the
dashboard in headless Chromium; a worker killed in the middle of a job; the stack taken down (volumes
kept) and up again. Finally ``down -v``, and the engine is stopped again if this test started it.

No engine, no image: the test fails and says why; it never skips.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "vase-e2e"
FILES = [ROOT / "docker-compose.yml", ROOT / "docker/compose.host.yml", Path(__file__).with_name("compose.test.yml")]
SERVICES = ["postgres", "redis", "api", "worker-cpu", "dashboard"]
WHEELS = ROOT / "docker/wheels"
# local-docker.sh keeps its engine here (LD_ROOT): how this test tells whether it was running before.
ENGINE_SOCKET = Path(os.environ.get("LD_ROOT", "/var/lib/local-docker")) / "docker.sock"
# A job as small as the issue asks: the offline task, the full cache and VaSE at budget 64.
JOB = {"task": "arith-chain", "methods": [{"name": "full"}, {"name": "vase"}], "budgets": [64], "residual": 16,
       "samples": 1, "max_new_tokens": 48}


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


def engine_answers(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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
    api: str
    dashboard: str
    timings: dict[str, float] = field(default_factory=dict)
    token: str = ""

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for f in FILES for arg in ("-f", str(f))]
        cmd = [str(self.compose_binary), *files, "--project-directory", str(ROOT), "-p", PROJECT, *args]
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


@pytest.fixture(scope="module")
def engine() -> Iterator[dict[str, str]]:
    """The local engine's environment (DOCKER_HOST, base image names); stopped afterwards if it was not
    running before."""
    script = local_docker_script()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HF_", "VASE_", "DOCKER_"))}
    was_running = engine_answers({**base, "DOCKER_HOST": f"unix://{ENGINE_SOCKET}"})
    started = time.monotonic()
    out = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True, timeout=1800, env=base)
    if out.returncode != 0:
        pytest.fail(f"no Docker engine: `{script} up` exited {out.returncode}:\n{out.stderr[-3000:]}")
    env = dict(base)
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            env[key] = value
    if not engine_answers(env):
        pytest.fail(f"no Docker engine: `{script} up` succeeded but `docker info` fails at {env.get('DOCKER_HOST')}")
    say(f"engine up in {time.monotonic() - started:.1f} s (was running before: {was_running})")
    try:
        yield env
    finally:
        if not was_running:
            subprocess.run(["bash", str(script), "down"], capture_output=True, text=True, timeout=120, env=base)
            say("engine stopped again")


@pytest.fixture(scope="module")
def stack(engine, compose_binary) -> Iterator[Stack]:
    """The built image and the running stack; torn down with its volumes at the end."""
    postgres_port, redis_port, api_port, dashboard_port = free_ports(4)
    env = {
        **engine,
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "PYTHON_IMAGE": engine["LOCAL_PYTHON_IMAGE"],
        "POSTGRES_IMAGE": engine["LOCAL_POSTGRES_IMAGE"],
        "REDIS_IMAGE": engine["LOCAL_REDIS_IMAGE"],
        "TORCH_WHEELS": str(WHEELS.relative_to(ROOT)),
        "POSTGRES_PORT": str(postgres_port),
        "REDIS_PORT": str(redis_port),
        "API_PORT": str(api_port),
        "DASHBOARD_PORT": str(dashboard_port),
        # The machine is shared and small: one CPU per service (the worker sizes its threads to it).
        "POSTGRES_CPUS": "1", "REDIS_CPUS": "1", "API_CPUS": "1", "WORKER_CPU_CPUS": "1", "DASHBOARD_CPUS": "1",
        "VASE_STALE_AFTER_S": "10",
    }
    s = Stack(compose_binary, env, api=f"http://127.0.0.1:{api_port}", dashboard=f"http://127.0.0.1:{dashboard_port}")
    s.compose("down", "-v", "--remove-orphans", check=False)  # what a run that crashed may have left
    _torch_wheel()
    started = time.monotonic()
    s.compose("build", "api", timeout=2400)
    s.timings["build_s"] = time.monotonic() - started
    say(f"image built in {s.timings['build_s']:.1f} s")
    try:
        s.timings["up_s"] = s.up(*SERVICES)
        say(f"stack healthy in {s.timings['up_s']:.1f} s (ports api {api_port}, dashboard {dashboard_port}, "
            f"postgres {postgres_port}, redis {redis_port})")
        token = s.compose("exec", "-T", "api", "vase", "token", "create", "e2e").stdout.strip().splitlines()
        assert token and len(token[-1]) >= 20, f"vase token create printed {token!r}"
        s.token = token[-1]
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False)
        left = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                              env=env, capture_output=True, text=True, timeout=60).stdout.split()
        assert not left, f"volumes left after down -v: {left}"


def _torch_wheel() -> None:
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


# ------------------------------------------------------------------------------------------------
# One job: REST in, results and a trace out
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_job(stack) -> dict:
    with stack.client() as http:
        r = http.post("/v1/jobs", json={**JOB, "limit": 1, "trace": "full"})
        assert r.status_code == 201, r.text
        job = r.json()
    assert job["queue"] == "vase.cpu"  # the embedded model, a small job: the CPU worker's queue
    started = time.monotonic()
    job = stack.wait_job(job["id"])
    stack.timings["first_job_s"] = time.monotonic() - started
    say(f"job {job['id'][:8]}: {job['status']} in {stack.timings['first_job_s']:.1f} s, {job['progress']}")
    assert job["status"] == "succeeded", job
    return job


def test_a_job_over_rest_results_and_a_trace(stack, first_job):
    job_id = first_job["id"]
    assert first_job["progress"]["done"] == first_job["progress"]["total"] == 2
    with stack.client() as http:
        rows = http.get(f"/v1/jobs/{job_id}/results").raise_for_status().json()["rows"]
        assert sorted((r["method"], r["n_samples"]) for r in rows) == [("full", 1), ("vase", 1)]
        vase = next(s for s in stack.samples(job_id) if s["method"] == "vase")
        assert vase["budget"] == 64 and 0 < vase["new_tokens"] <= 48
        sample = http.get(f"/v1/samples/{vase['id']}").raise_for_status().json()
        assert sample["output"] and sample["prompt"]
        trace = http.get(f"/v1/samples/{vase['id']}/trace").raise_for_status().json()
        # The embedded SmolLM2: 30 layers, 3 KV heads; a cache of 64 over a longer sequence evicted.
        assert trace["level"] == "full" and trace["num_layers"] == 30 and trace["num_kv_heads"] == 3
        assert trace["n_evicted"] > 0 and trace["prompt_length"] + vase["new_tokens"] > 64
        head = http.get(f"/v1/samples/{vase['id']}/trace", params={"layer": 0, "head": 0}).raise_for_status().json()
        assert head["head"]


def test_the_worker_sized_its_threads_to_its_cpu_share(stack, first_job):
    # worker-cpu has `cpus: 1` (a cgroup quota on a 2-core machine): one torch thread per process.
    log = stack.compose("logs", "--no-color", "worker-cpu").stdout
    assert "1 process(es) of 1 torch thread(s)" in log, log[-2000:]


# The text of every cell of each data grid on the page. Streamlit draws a grid on a canvas and keeps
# its cells, as text, in an accessible table beside it: that is what is read here.
GRID_CELLS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).map(
  grid => Array.from(grid.querySelectorAll('[data-testid^="glide-cell-"]')).map(cell => cell.textContent))"""


def wait_for_grid_with(page, *wanted: str) -> None:
    """Wait until one data grid on the page shows every one of ``wanted`` as a cell."""
    check = f"(wanted) => ({GRID_CELLS_JS})().some(cells => wanted.every(w => cells.includes(w)))"
    try:
        page.wait_for_function(check, arg=list(wanted), timeout=60_000)
    except Exception as exc:  # noqa: BLE001 - report what the grids held instead
        pytest.fail(f"no data grid shows {wanted} ({type(exc).__name__}); the grids hold {page.evaluate(GRID_CELLS_JS)}")


def test_the_dashboard_shows_the_job_and_its_table(stack, first_job, tmp_path):
    from playwright.sync_api import sync_playwright

    from dashboard.screenshots import CHROMIUM_ARGS, capture, chromium_path

    results = capture(stack.dashboard, tmp_path / "shots")  # every page renders without an error
    assert {r.name: r.errors for r in results if not r.ok} == {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{stack.dashboard}/jobs", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("heading", name="Jobs").wait_for(timeout=60_000)
            # The jobs table: the job, its status, its samples and methods.
            wait_for_grid_with(page, first_job["id"][:8], "✓ succeeded", "2 / 2", "full, vase", "64")
            # Its details: progress, and the results table with a row per method.
            page.get_by_text("Job details").click()
            page.get_by_text("2 of 2 samples · succeeded").wait_for(timeout=60_000)
            wait_for_grid_with(page, "full", "vase", "64", "arith-chain")
            page.screenshot(path=str(tmp_path / "jobs-details.png"), full_page=True)
        finally:
            browser.close()


# ------------------------------------------------------------------------------------------------
# Faults: a worker killed in the middle of a job; the whole stack down and up again
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recovered_job(stack, first_job) -> dict:
    with stack.client() as http:
        r = http.post("/v1/jobs", json={**JOB, "limit": 4})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    total = 8
    job = stack.wait_job(job_id, until=lambda j: j["progress"]["done"] >= 2 or j["status"] not in ("queued", "running"))
    assert job["status"] == "running" and job["progress"]["done"] < total, job
    before = {s["id"]: (s["run_id"], s["problem_id"], s["sample_index"]) for s in stack.samples(job_id)}
    stack.compose("kill", "worker-cpu")
    say(f"killed worker-cpu with {len(before)} of {total} samples stored")
    started = time.monotonic()
    stack.up("worker-cpu")
    job = stack.wait_job(job_id)
    stack.timings["recovery_s"] = time.monotonic() - started
    say(f"job {job_id[:8]}: {job['status']} {stack.timings['recovery_s']:.1f} s after the restart")
    assert job["status"] == "succeeded", job
    return {"job": job, "before": before}


def test_a_killed_worker_s_job_completes_with_every_sample_once(stack, recovered_job):
    job, before = recovered_job["job"], recovered_job["before"]
    samples = stack.samples(job["id"])
    keys = [(s["run_id"], s["problem_id"], s["sample_index"]) for s in samples]
    assert len(keys) == len(set(keys)) == job["progress"]["total"] == 8  # every sample, exactly once
    assert {s["id"]: k for s, k in zip(samples, keys, strict=True) if s["id"] in before} == before  # kept, not redone


def test_jobs_and_samples_survive_down_and_up(stack, first_job, recovered_job):
    jobs = {j["id"]: j for j in (first_job, recovered_job["job"])}
    stored = {job_id: stack.samples(job_id) for job_id in jobs}
    stack.compose("down")  # volumes kept
    assert stack.compose("ps", "-q").stdout.strip() == ""
    stack.timings["up_again_s"] = stack.up(*SERVICES)
    with stack.client() as http:
        listed = {j["id"]: j for j in http.get("/v1/jobs", params={"limit": 50}).raise_for_status().json()["items"]}
    for job_id in jobs:
        assert listed[job_id]["status"] == "succeeded"
        assert stack.samples(job_id) == stored[job_id]
    say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in stack.timings.items()))
