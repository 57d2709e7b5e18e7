"""Chunk bookkeeping in Redis and the recovery sweep, on the real Redis and PostgreSQL (no model)."""

from __future__ import annotations

import json
import time

import pytest
import redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

JOB = {"task": "arith-chain", "limit": 3, "chunk_size": 1, "methods": [{"name": "full"}, {"name": "h2o"}],
       "budgets": [64], "residual": 16}


@pytest.fixture
def setup(service_env):
    from vase.config import get_settings
    from vase.store import open_store
    from worker.app import make_app
    from worker.chunks import CeleryDispatcher, RedisChunks

    settings = get_settings()
    store = open_store(settings.database_url)
    chunks = RedisChunks(settings.broker_url, settings)
    dispatcher = CeleryDispatcher(make_app(settings), chunks)
    yield settings, store, chunks, dispatcher
    chunks.client.close()


def queued_chunks(url: str, queue: str) -> list[list]:
    r = redis.Redis.from_url(url)
    try:
        return [json.loads(__import__("base64").b64decode(json.loads(m)["body"]))[0] for m in r.lrange(queue, 0, -1)]
    finally:
        r.close()


def test_lost_chunks_are_dispatched_again(setup):
    from vase.jobs import plan_job, recover, submit

    settings, store, chunks, dispatcher = setup
    job = submit(store, plan_job(JOB, settings), dispatcher)
    assert chunks.accounted(job["id"], 3) == [True, True, True]
    assert sorted(args[1] for args in queued_chunks(settings.broker_url, settings.queue_cpu)) == [0, 1, 2]
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=0)["dispatched"] == 0

    # Chunk 0 taken by a worker (lease), chunk 1 finished, chunk 2's message lost with its marker.
    lease = chunks.acquire(job["id"], 0, "w1")
    chunks.unmark_queued(job["id"], 0)
    chunks.unmark_queued(job["id"], 1)
    chunks.mark_done(job["id"], 1)
    chunks.unmark_queued(job["id"], 2)
    chunks.client.delete(settings.queue_cpu)
    assert chunks.accounted(job["id"], 3) == [True, True, False]
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=30)["dispatched"] == 0  # too young
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=0) == {"finalized": 0, "dispatched": 1,
                                                                                "jobs": 1}
    assert queued_chunks(settings.broker_url, settings.queue_cpu) == [[job["id"], 2]]
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=0)["dispatched"] == 0  # queued now

    # The worker holding chunk 0 dies: its lease expires and the chunk is lost, then dispatched.
    lease._stop.set()  # stops renewing, as a killed process would
    chunks.client.pexpire(lease.key, 50)
    time.sleep(0.1)
    assert chunks.accounted(job["id"], 3) == [False, True, True]
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=0)["dispatched"] == 1
    # the new delivery takes the chunk; any further delivery finds it held and is skipped
    assert chunks.acquire(job["id"], 0, "w2") is not None
    assert chunks.acquire(job["id"], 0, "w3") is None  # a live holder: a second delivery is skipped


def test_a_lease_taken_over_is_lost_by_its_first_holder(setup):
    _, _, chunks, _ = setup
    first = chunks.acquire("job", 0, "w1")
    first.ttl = 1
    with first:
        chunks.client.set(first.key, "w2")  # another worker took over (w1 was presumed dead)
        deadline = time.monotonic() + 5
        while not first.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.lost
    assert chunks.client.get(first.key) == b"w2"  # releasing never drops someone else's lease


def test_recovery_finalizes_a_job_whose_samples_are_all_stored(setup):
    from vase.jobs import plan_job, recover, submit

    settings, store, chunks, dispatcher = setup
    plan = plan_job({**JOB, "limit": 1}, settings)
    job = submit(store, plan, dispatcher)
    store.set_job_status(job["id"], "running")
    # the last worker stored every sample, then died before marking the job
    for i, run in enumerate(plan.spec.runs()):
        run_id = store.get_or_create_run(job["id"], f"hash{i}", task="arith-chain", method=run.method, model="m")
        store.add_sample(run_id, problem_id="arith-chain-s0-0000", sample_index=0)
    assert recover(store, dispatcher, chunks, settings=settings, grace_s=0)["finalized"] == 1
    assert store.get_job(job["id"])["status"] == "succeeded"


def test_submit_keeps_the_job_when_the_broker_is_down(setup):
    from vase.jobs import plan_job, submit
    from worker.app import make_app
    from worker.chunks import CeleryDispatcher, RedisChunks

    settings, store, _, _ = setup
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    broken = CeleryDispatcher(make_app(dead), RedisChunks(dead.broker_url, dead))
    job = submit(store, plan_job(JOB, settings), broken)
    assert store.get_job(job["id"])["status"] == "queued"  # stored; a recovery sweep will dispatch it


@pytest.fixture
def config_only_folder(tmp_path, monkeypatch):
    """An allowed model folder holding a real config.json (a tiny Qwen3's) and no weights: a job on
    it plans (its context is known) and its chunks fail when the worker loads it."""
    from tests.factories import tiny_qwen3
    from vase.config import get_settings

    folder = tmp_path / "config-only"
    tiny_qwen3()[0].config.save_pretrained(folder)
    monkeypatch.setenv("VASE_ALLOWED_MODELS", str(folder))
    get_settings.cache_clear()
    return str(folder)


def test_a_chunk_that_keeps_failing_fails_the_job(setup, config_only_folder):
    from vase.config import get_settings
    from vase.jobs import execute_chunk, plan_job, submit

    _, store, _, _ = setup
    settings = get_settings().model_copy(update={"chunk_max_attempts": 2})
    job = submit(store, plan_job({**JOB, "model": config_only_folder, "queue": "cpu"}, settings), None)
    waits = []
    assert execute_chunk(store, job["id"], 0, settings=settings, sleep=waits.append) == "failed"
    failed = store.get_job(job["id"])
    assert failed["status"] == "failed" and waits == [2.0]
    assert failed["error"].startswith("chunk 0: ") and "after 2 attempts" in failed["error"]
    assert execute_chunk(store, job["id"], 1, settings=settings) == "skipped"  # the job is over


def test_a_worker_checks_the_model_again_before_loading_it(setup, config_only_folder, monkeypatch):
    """A job planned where a model was allowed fails at once on a worker whose list lacks it."""
    from vase.config import get_settings
    from vase.jobs import execute_chunk, plan_job, submit

    _, store, _, _ = setup
    job = submit(store, plan_job({**JOB, "model": config_only_folder, "queue": "cpu"}, get_settings()), None)
    monkeypatch.delenv("VASE_ALLOWED_MODELS")
    get_settings.cache_clear()
    waits = []
    assert execute_chunk(store, job["id"], 0, settings=get_settings(), sleep=waits.append) == "failed"
    failed = store.get_job(job["id"])
    assert waits == []  # permanent: not retried
    assert failed["error"] == "chunk 0: ChunkError: model: is not a model this service runs: use " \
                              "embedded:smollm2-135m-instruct or one the operator lists in VASE_ALLOWED_MODELS"
