"""Faults while a job runs on real workers: a worker killed with SIGKILL, Redis restarted, the
database stopped. Each time the job completes with every sample stored exactly once."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from .conftest import SUBPROCESS_ENV, TINY_JOB, assert_every_sample_once, free_port, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_worker_killed_mid_job_another_finishes_it(api, procs, service_env):
    client, store, auth = api
    first = procs.worker(service_env, "w1")
    job_id = client.post("/v1/jobs", json={**TINY_JOB, "limit": 3}, headers=auth).json()["id"]
    job = wait_job(store, job_id, min_done=1, procs=procs)
    first.kill9()  # mid-chunk: its lease stops being renewed, its message stays unacknowledged
    job = store.get_job(job_id)
    assert job["status"] == "running" and job["done_samples"] < job["total_samples"], job
    second = procs.worker(service_env, "w2")
    job = wait_job(store, job_id, procs=procs)
    assert job["status"] == "succeeded", job
    assert_every_sample_once(store, job_id)
    assert "dispatching chunks" in second.output()  # the dead worker's chunk was handed out again
    assert second.output().count("Loaded embedded:smollm2") == 1  # once per process, reused by each task
    r = client.get(f"/v1/jobs/{job_id}/results")
    assert [row["n_samples"] for row in r.json()["rows"]] == [3, 3]


def test_redis_restarted_mid_job(procs, postgres_url, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from vase.config import get_settings

    port = free_port()
    redis_proc = procs.redis(port)
    env = {"VASE_DATABASE_URL": postgres_url, "VASE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "VASE_STALE_AFTER_S": "4", "VASE_RECOVERY_INTERVAL_S": "1", **SUBPROCESS_ENV}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        procs.worker({**os.environ, **env}, "w1")
        with TestClient(create_app(get_settings())) as client:
            store = client.app.state.service.store
            auth = {"Authorization": f"Bearer {store.create_token('tests')}"}
            job_id = client.post("/v1/jobs", json={**TINY_JOB, "limit": 3}, headers=auth).json()["id"]
            wait_job(store, job_id, min_done=1, procs=procs)
            # Restart: this Redis keeps nothing, so the queued chunks and their markers are gone.
            redis_proc.stop()
            time.sleep(1)
            procs.redis(port)
            job = wait_job(store, job_id, procs=procs)
            assert job["status"] == "succeeded", job
            assert_every_sample_once(store, job_id)
            assert client.get("/readyz").status_code == 200
    finally:
        get_settings.cache_clear()


def _cluster() -> str:
    return max(os.listdir("/etc/postgresql"))


def _pg(action: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _cluster(), "main", action], check=True,
                   capture_output=True, timeout=60)


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], timeout=10).returncode == 0


def test_database_stopped_api_answers_503_then_recovers(api, procs, service_env):
    client, store, auth = api
    procs.worker(service_env, "w1")
    job_id = client.post("/v1/jobs", json=TINY_JOB, headers=auth).json()["id"]
    wait_job(store, job_id, min_done=1, procs=procs)
    try:
        _pg("stop")  # the shared server: other tests may notice; keep it short
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "database_unavailable" and r.headers["retry-after"]
        assert client.post("/v1/jobs", json=TINY_JOB, headers=auth).status_code == 503
        assert client.get("/v1/jobs").status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        assert client.get("/healthz").status_code == 200
        time.sleep(1)
    finally:
        _pg("start")
    deadline = time.monotonic() + 60
    while not _pg_ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get("/readyz").status_code == 200
    job = wait_job(store, job_id, procs=procs)
    assert job["status"] == "succeeded", job
    assert_every_sample_once(store, job_id)
    assert store.list_jobs()[1] == 1  # the job written before the outage is there; none written during it
    assert client.post("/v1/jobs", json={**TINY_JOB, "queue": "gpu"}, headers=auth).status_code == 201
