"""Running a chunk of a job (its problems across every run of the grid) and the job's status."""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Settings, get_settings
from ..spec import JobInvalid, JobSpec, check_model
from ..store import TERMINAL_STATUSES, Store, StoreUnavailable
from .plan import chunk_bounds, service_info

log = logging.getLogger("vase.jobs")


# ------------------------------------------------------------------------------------------------
# Status
# ------------------------------------------------------------------------------------------------
def finalize_if_complete(store: Store, job_id: str) -> bool:
    """Mark the job succeeded when every planned sample is stored. True if it is (now) succeeded."""
    job = store.get_job(job_id)
    if job is None:
        return False
    if job["status"] == "succeeded":
        return True
    if job["status"] in TERMINAL_STATUSES:
        return False
    if job["total_samples"] and job["done_samples"] >= job["total_samples"]:
        if store.set_job_status(job_id, "succeeded"):
            log.info("job %s succeeded (%d samples)", job_id, job["done_samples"])
        return True
    return False


def fail_job(store: Store, job_id: str, error: str) -> None:
    """Mark the job failed (its other chunks stop at their next check)."""
    if store.set_job_status(job_id, "failed", error=error[:4000]):
        log.error("job %s failed: %s", job_id, error.splitlines()[0] if error else "")


def job_should_stop(store: Store, job_id: str) -> bool:
    """True when the job was cancelled, failed or deleted (refreshes its heartbeat too)."""
    if store.heartbeat(job_id):
        return True
    job = store.get_job(job_id)
    return job is None or job["status"] in TERMINAL_STATUSES


# ------------------------------------------------------------------------------------------------
# Running a chunk
# ------------------------------------------------------------------------------------------------
class ChunkOutcome:
    DONE = "done"  # every sample of the chunk is stored
    CANCELLED = "cancelled"  # the job was cancelled (or failed) meanwhile
    SKIPPED = "skipped"  # the job is already finished
    INTERRUPTED = "interrupted"  # this worker was asked to stop (shutdown, lease lost); work resumes elsewhere
    FAILED = "failed"  # the job was marked failed
    DEFERRED = "deferred"  # the database stayed unreachable; the chunk is left to recovery
    GONE = "gone"  # the job no longer exists


def problems_that_fit(spec: JobSpec, info: Mapping[str, Any], settings: Settings) -> int:
    """The spec's `batch_problems`, lowered so that the batch's KV cache (the plan's per-problem
    estimate) fits what a worker of the job's queue gives it (``VASE_WORKER_KV_GIB_*``)."""
    per_problem = (info.get("estimate") or {}).get("kv_bytes_per_problem")
    if not per_problem:
        return spec.batch_problems
    limit_gib = settings.worker_kv_gib_cpu if info.get("queue_kind") == "cpu" else settings.worker_kv_gib_gpu
    return max(1, min(spec.batch_problems, int(limit_gib * 2**30 // per_problem)))


def _chunk_problems(job: Mapping[str, Any], spec: JobSpec, chunk: int):
    from ..tasks import get_task

    info = service_info(job)
    if not 0 <= chunk < info["n_chunks"]:
        raise ChunkError(f"chunk {chunk} does not exist (the job has {info['n_chunks']})", permanent=True)
    problems = get_task(spec.task).load(limit=spec.limit, seed=spec.task_seed)
    if len(problems) != info["n_problems"]:
        raise ChunkError(
            f"task {spec.task!r} now has {len(problems)} problems (limit {spec.limit}); the job was planned "
            f"for {info['n_problems']}: resubmit it", permanent=True,
        )
    start, end = chunk_bounds(info["n_problems"], info["chunk_size"], chunk)
    return problems[start:end]


class ChunkError(RuntimeError):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def chunk_is_complete(store: Store, job: Mapping[str, Any], problems) -> bool:
    """True when every (run, problem, sample) of these problems is stored (no model needed)."""
    info = service_info(job)
    spec = JobSpec.from_stored(job["spec"])
    want = info["n_runs"] * spec.samples
    return all(store.count_samples(job_id=job["id"], problem_id=p.id) >= want for p in problems)


def run_chunk(
    store: Store,
    job_id: str,
    chunk: int,
    *,
    interrupted: Callable[[], bool] | None = None,
    on_sample: Callable[[], None] | None = None,
) -> str:
    """Run chunk ``chunk`` of job ``job_id`` once: every missing sample of its problems across
    every run. Returns a :class:`ChunkOutcome` value; raises on errors (see :func:`execute_chunk`).

    The model is loaded through ``vase.models.load_model`` (memoised per process, so a worker loads
    each model once and reuses it for every task of that model).
    """
    from ..bench import Bench
    from ..models import load_model

    job = store.get_job(job_id)
    if job is None:
        return ChunkOutcome.GONE
    if job["status"] in TERMINAL_STATUSES:
        return ChunkOutcome.SKIPPED
    spec = JobSpec.from_stored(job["spec"])
    problems = _chunk_problems(job, spec, chunk)
    if chunk_is_complete(store, job, problems):
        finalize_if_complete(store, job_id)
        return ChunkOutcome.DONE
    if not store.set_job_status(job_id, "running"):
        return ChunkOutcome.SKIPPED  # finished (cancelled, failed) meanwhile
    try:  # the API checked it; a worker checks again against its own settings before loading anything
        check_model(spec.model, get_settings())
    except JobInvalid as exc:
        raise ChunkError(f"model: {exc.rule}", permanent=True) from None
    model, tokenizer = load_model(spec.model)
    bench = Bench(spec, store, scope=job_id, model=model, tokenizer=tokenizer,
                  batch_problems=problems_that_fit(spec, service_info(job), get_settings()))
    runs = store.list_runs(job_id=job_id)
    if len(runs) > len(bench.runs):
        raise ChunkError(
            f"the job's runs were planned with another model configuration ({len(runs)} runs for "
            f"{len(bench.runs)} cells): workers of one queue must load the model identically "
            f"(this one: {bench.fingerprint.get('dtype')} on {model.device})", permanent=True,
        )

    def should_cancel() -> bool:
        return (interrupted is not None and interrupted()) or job_should_stop(store, job_id)

    finished = bench.execute(problems=problems, should_cancel=should_cancel, on_sample=on_sample)
    if finished:
        finalize_if_complete(store, job_id)
        return ChunkOutcome.DONE
    if interrupted is not None and interrupted():
        return ChunkOutcome.INTERRUPTED
    job = store.get_job(job_id)
    if job is None:
        return ChunkOutcome.GONE
    if job["cancel_requested"] and store.set_job_status(job_id, "cancelled"):
        log.info("job %s cancelled", job_id)
    return ChunkOutcome.CANCELLED


def execute_chunk(
    store: Store,
    job_id: str,
    chunk: int,
    *,
    settings: Settings | None = None,
    interrupted: Callable[[], bool] | None = None,
    on_sample: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """:func:`run_chunk` with the service's error policy.

    - The database is down: wait and resume, for up to ``worker_db_retry_s``; then ``deferred``
      (recovery hands the chunk out again once the database is back).
    - Any other error: try again, up to ``chunk_max_attempts`` in all; then the job is ``failed``
      with the error. A permanent error (the job cannot run as planned) fails it at once.
    """
    settings = settings or get_settings()
    attempts = 0
    db_wait_started: float | None = None
    while True:
        if interrupted is not None and interrupted():
            return ChunkOutcome.INTERRUPTED
        try:
            return run_chunk(store, job_id, chunk, interrupted=interrupted, on_sample=on_sample)
        except StoreUnavailable as exc:
            now = time.monotonic()
            db_wait_started = db_wait_started or now
            if now - db_wait_started >= settings.worker_db_retry_s:
                log.warning("job %s chunk %d: database unavailable for %.0f s, leaving it to recovery: %s",
                            job_id, chunk, now - db_wait_started, exc)
                return ChunkOutcome.DEFERRED
            log.warning("job %s chunk %d: database unavailable, retrying: %s", job_id, chunk, exc)
            sleep(min(2.0, max(0.2, settings.worker_db_retry_s / 30)))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            db_wait_started = None
            attempts += 1
            permanent = isinstance(exc, ChunkError) and exc.permanent
            detail = f"chunk {chunk}: {type(exc).__name__}: {exc}"
            if permanent or attempts >= settings.chunk_max_attempts:
                log.error("job %s %s\n%s", job_id, detail, traceback.format_exc())
                with contextlib.suppress(StoreUnavailable):
                    fail_job(store, job_id, detail if permanent else f"{detail} (after {attempts} attempts)")
                    return ChunkOutcome.FAILED
                return ChunkOutcome.DEFERRED
            log.warning("job %s %s (attempt %d of %d); retrying", job_id, detail, attempts,
                        settings.chunk_max_attempts)
            sleep(min(30.0, 2.0 ** attempts))
