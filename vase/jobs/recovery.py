"""Recovery: the one sweep that finds lost work and hands it out again.

The Celery workers run it with their Redis chunk tracker (:class:`ChunkTracker`); the embedded
runner runs it without one, relying on heartbeats (``Store.stale_jobs``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import UTC, datetime
from typing import Protocol

from ..config import Settings, get_settings
from ..store import ACTIVE_STATUSES, Store, StoreUnavailable
from .dispatch import Dispatcher
from .plan import service_info
from .run import finalize_if_complete

log = logging.getLogger("vase.jobs")


class ChunkTracker(Protocol):
    """Where the executor keeps per-chunk liveness (the Celery worker keeps it in Redis)."""

    def accounted(self, job_id: str, n_chunks: int) -> list[bool]:
        """Per chunk: True if it is queued, being run by a live worker, or done."""
        ...


def _age_s(when: datetime | None) -> float:
    if when is None:
        return math.inf
    return (datetime.now(UTC) - when).total_seconds()


def _active_jobs(store: Store, page: int = 500):
    """Every queued or running job, oldest pages last (a page at a time)."""
    offset = 0
    while True:
        jobs, total = store.list_jobs(status=list(ACTIVE_STATUSES), limit=page, offset=offset)
        yield from jobs
        offset += page
        if offset >= total or not jobs:
            return


def recover(
    store: Store,
    dispatcher: Dispatcher,
    tracker: ChunkTracker | None,
    *,
    settings: Settings | None = None,
    grace_s: float | None = None,
) -> dict[str, int]:
    """One recovery sweep over the active jobs; returns counts of what it did.

    - A job whose samples are all stored is marked succeeded (its last worker died before).
    - With a tracker: every chunk of an active job that is neither queued, nor leased by a live
      worker, nor done is dispatched again (its worker died, or the broker lost its message).
    - Without one: the chunks of queued jobs and of running jobs whose heartbeat is older than
      ``stale_after_s`` (``Store.stale_jobs``) are dispatched again.

    Jobs younger than ``grace_s`` (default: min(stale_after_s, 10 s)) are left alone: their
    submission may still be dispatching. Dispatching twice is harmless (samples are idempotent).
    """
    settings = settings or get_settings()
    grace = min(settings.stale_after_s, 10.0) if grace_s is None else grace_s
    done = {"finalized": 0, "dispatched": 0, "jobs": 0}
    stale = {j["id"] for j in store.stale_jobs(settings.stale_after_s)} if tracker is None else set()
    for job in list(_active_jobs(store)):
        try:
            info = service_info(job)
        except ValueError:
            continue
        if finalize_if_complete(store, job["id"]):
            done["finalized"] += 1
            continue
        if _age_s(job["updated_at"]) < grace and _age_s(job["created_at"]) < grace:
            continue
        if tracker is not None:
            flags = tracker.accounted(job["id"], info["n_chunks"])
            lost = [i for i, ok in enumerate(flags) if not ok]
        elif job["status"] == "queued" or job["id"] in stale:
            lost = list(range(info["n_chunks"]))
        else:
            lost = []
        if not lost:
            continue
        log.warning("recovery: job %s (%s): dispatching chunks %s again", job["id"], job["status"], lost)
        dispatcher.dispatch(job["id"], lost, info["queue"])
        with contextlib.suppress(StoreUnavailable):
            store.heartbeat(job["id"])  # restart the stale clock: the chunks are queued again
        done["dispatched"] += len(lost)
        done["jobs"] += 1
    return done
