"""Celery tasks. They only route work to :mod:`vase.jobs`."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from vase.config import get_settings
from vase.jobs import ChunkOutcome, execute_chunk, fail_job
from vase.store import StoreUnavailable

from .app import app, get_chunks, get_store

log = logging.getLogger("vase.worker")

#: Outcomes after which the chunk needs no further delivery.
FINAL = {ChunkOutcome.DONE, ChunkOutcome.SKIPPED, ChunkOutcome.CANCELLED, ChunkOutcome.FAILED, ChunkOutcome.GONE}


def _store_or_none(wait_s: float):
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return get_store()
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                log.warning("database unavailable (%s); leaving the chunk to recovery", exc)
                return None
            time.sleep(1.0)


@app.task(name="vase.run_chunk", bind=True)
def run_chunk(self, job_id: str, chunk: int) -> str:
    """Run one chunk of a job (its problems across every run); idempotent."""
    settings = get_settings()
    chunks = get_chunks()
    store = _store_or_none(settings.worker_db_retry_s)
    if store is None:
        return ChunkOutcome.DEFERRED
    owner = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def heartbeat() -> None:
        store.heartbeat(job_id)

    lease = chunks.acquire(job_id, chunk, owner, on_tick=heartbeat)
    if lease is None:
        return "busy"
    with lease:
        chunks.unmark_queued(job_id, chunk)
        tries = chunks.attempt(job_id, chunk)
        limit = 2 * settings.chunk_max_attempts
        if tries > limit:
            try:
                fail_job(store, job_id, f"chunk {chunk}: taken {tries - 1} times by workers that died before "
                                        f"finishing it (out of memory, killed?)")
            except StoreUnavailable:
                return ChunkOutcome.DEFERRED
            chunks.mark_done(job_id, chunk)
            return ChunkOutcome.FAILED
        started = time.perf_counter()
        outcome = execute_chunk(store, job_id, chunk, settings=settings, interrupted=lambda: lease.lost)
        log.info("job %s chunk %d: %s in %.1f s", job_id, chunk, outcome, time.perf_counter() - started)
        chunks.attempt(job_id, chunk, -1)  # only takes that died with their worker keep counting
        if outcome in FINAL:
            chunks.mark_done(job_id, chunk)
        return outcome
