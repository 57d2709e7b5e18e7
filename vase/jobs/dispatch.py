"""Handing a stored job's chunks to whatever runs them (Celery, or the embedded runner)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from ..store import Store
from .plan import JobPlan

log = logging.getLogger("vase.jobs")


class Dispatcher(Protocol):
    """Hands chunks of a stored job to whatever executes them."""

    kind: str

    def dispatch(self, job_id: str, chunks: Iterable[int], queue: str) -> None: ...


class DispatchError(RuntimeError):
    """The chunks could not be handed over (broker down); the job stays stored and queued."""


def submit(store: Store, plan: JobPlan, dispatcher: Dispatcher | None, *, owner: str | None = None) -> dict[str, Any]:
    """Store the job (committed), then dispatch its chunks. Returns the job.

    If dispatching fails the job stays ``queued`` in the database and a worker's recovery sweep
    hands its chunks over later; the error is logged, not raised (the job is not lost).
    """
    job = store.insert_job(plan.spec_document(), model=str(plan.spec.model), task=plan.spec.task,
                           total_samples=plan.total_samples, owner=owner)
    if dispatcher is not None:
        try:
            dispatcher.dispatch(job["id"], range(plan.n_chunks), plan.queue)
        except Exception as exc:  # noqa: BLE001 - a broker error must not lose the stored job
            log.warning("job %s stored but not dispatched (%s); recovery will dispatch it", job["id"], exc)
    return job
