"""The compose stack end to end, in containers on this machine's own Docker engine (marker `compose`).

The CPU image is built from this repository (``local/python:3.11``, torch from the CPU wheel that
pip's own configuration offers, put in docker/wheels); postgres, redis, api, worker-cpu and dashboard
run with docker-compose.yml + docker/compose.host.yml (host network, 127.0.0.1, free ports) +
compose.test.yml (conftest.py: the engine, the stack). Then, as a user would: a token from
``vase token create`` in the api container, a job over REST until it succeeds, its results and a
sample's trace over HTTP, the dashboard in headless Chromium; a worker killed in the middle of a
job; the stack taken down (volumes kept) and up again. Finally ``down -v``.
"""

from __future__ import annotations

import time

import pytest

from .stack import SERVICES, say

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

# A job as small as the issue asks: the offline task, the full cache and VaSE at budget 64.
JOB = {"task": "arith-chain", "methods": [{"name": "full"}, {"name": "vase"}], "budgets": [64], "residual": 16,
       "samples": 1, "max_new_tokens": 48}


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
