"""End to end over HTTP: `vase serve` (Celery mode, PostgreSQL) and a real Celery worker process
run a small job on the embedded SmolLM2; results, samples and eviction traces come back over HTTP;
`vase submit` submits from the command line and a running job is cancelled."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import httpx
import pytest

from vase.store import TERMINAL_STATUSES

from .conftest import BIN, ROOT, TINY_JOB, assert_every_sample_once, free_port, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_job_over_http_with_a_real_worker(procs, service_env, tmp_path):
    from vase.store import open_store

    port = free_port()
    server = procs.start("api", [str(BIN / "vase"), "serve", "--host", "127.0.0.1", "--port", str(port)], service_env)
    made = subprocess.run([str(BIN / "vase"), "token", "create", "e2e"], env=service_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    procs.worker(service_env, "w1")
    server.wait_for("Application startup complete", timeout=120)
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert http.get("/readyz").json()["mode"] == "celery"

    body = {**TINY_JOB, "fidelity": True, "trace": "full"}
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json()["progress"]["total"] == 4 and r.json()["chunks"] == 2
    seen, deadline = [], time.monotonic() + 240
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["progress"]["done"])
        if job["status"] in TERMINAL_STATUSES:
            break
        time.sleep(0.3)
    assert job["status"] == "succeeded", (job, procs[-1].output()[-3000:])
    assert seen == sorted(seen) and job["progress"]["done"] == 4 and job["error"] is None
    t = job["timings"]
    assert t["started_at"] and t["finished_at"] and t["elapsed_s"] > 0 and t["queued_s"] is not None
    assert_every_sample_once(open_store(service_env["VASE_DATABASE_URL"]), job_id)

    # the comparison table, JSON and CSV
    results = http.get(f"/v1/jobs/{job_id}/results").json()
    assert results["complete"] is True
    rows = {row["method_name"]: row for row in results["rows"]}
    assert set(rows) == {"full", "vase"} and rows["vase"]["budget"] == 32 and rows["vase"]["method"] == "vase:n_large=4"
    assert all(row["n_samples"] == 2 and row["n_problems"] == 2 for row in rows.values())
    assert rows["vase"]["kl_mean"] is not None and 0 <= rows["vase"]["top1_agreement"] <= 1
    assert rows["vase"]["evictions"] > 0 and rows["full"]["evictions"] == 0
    for row in rows.values():  # strict and flexible grading, side by side
        assert 0 <= row["accuracy_flex"] <= 1 and row["accuracy_flex_se"] >= 0 and "1" in row["pass_at_k_flex"]
    table = list(csv.DictReader(io.StringIO(http.get(f"/v1/jobs/{job_id}/results", params={"format": "csv"}).text)))
    assert {row["method"] for row in table} == {"full", "vase:n_large=4"}

    # samples: the list, then one in full
    listed = http.get(f"/v1/jobs/{job_id}/samples").json()
    assert listed["total"] == 4
    vase_sample = next(s for s in listed["items"] if s["method"] == "vase")
    sample = http.get(f"/v1/samples/{vase_sample['id']}").json()
    assert sample["job_id"] == job_id and sample["run"]["budget"] == 32
    assert "Start with" in sample["prompt"] and sample["output"]
    assert sample["verdict"]["answer"] and sample["verdict"]["status"]
    assert {"correct_flex", "extracted_flex", "flex_rule"} <= set(sample["verdict"])
    assert (sample["verdict"]["extracted_flex"] is None) is (sample["verdict"]["flex_rule"] is None)
    assert "correct_flex" in vase_sample
    assert set(sample["loop"]) == {"detected", "start", "span"}
    assert sample["metrics"]["new_tokens"] > 0 and sample["metrics"]["evictions"] > 0
    assert sample["metrics"]["kl_mean"] is not None and sample["trace"]["level"] == "full"

    # the trace: what layer 0, head 0 held, when it evicted what
    trace = http.get(f"/v1/samples/{vase_sample['id']}/trace").json()
    assert trace["num_layers"] == 30 and trace["num_kv_heads"] == 3 and len(trace["summary"]["layers"]) == 30
    head = http.get(f"/v1/samples/{vase_sample['id']}/trace",
                    params={"layer": 0, "head": 0, "step": trace["n_steps"], "survival": True}).json()["head"]
    steps = [e["step"] for e in head["events"]]
    assert steps and steps == sorted(steps) and all(e["evicted"] for e in head["events"])
    held = head["held"]["positions"]
    length = trace["prompt_length"] + trace["n_steps"]
    assert held == sorted(held) and held[-1] < length and len(held) <= 32 + 8  # budget + a residual window
    evicted = {p for e in head["events"] for p in e["evicted"]}
    assert not evicted & set(held) and len(evicted) + len(held) == length
    assert head["survival"]["values"]
    bad = http.get(f"/v1/samples/{vase_sample['id']}/trace", params={"layer": 99, "head": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "layer"

    # `vase submit` to the running API; then cancel that job while it runs
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({**TINY_JOB, "limit": 6, "max_new_tokens": 32}))
    env = {**service_env, "VASE_API_URL": base, "VASE_API_TOKEN": token}
    submitted = subprocess.run([str(BIN / "vase"), "submit", str(job_file)], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    second = submitted.stdout.strip()
    store = open_store(service_env["VASE_DATABASE_URL"])
    wait_job(store, second, min_done=1, procs=procs)
    r = http.post(f"/v1/jobs/{second}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    job = wait_job(store, second, procs=procs, timeout=120)
    assert job["status"] == "cancelled" and job["done_samples"] < job["total_samples"]
    done = job["done_samples"]
    time.sleep(2)
    assert store.get_job(second)["done_samples"] == done  # stopped for good
    assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 409  # succeeded: nothing to cancel
    http.close()
