"""Benchmark jobs for the service: planning, chunked execution, status, recovery, in-process runner.

The API and the workers hold no benchmark logic; they call this package.

A *job* is a :class:`~vase.spec.JobSpec` submitted over the API. :func:`plan_job`
(:mod:`.plan`) validates the body against the policy registry's rules (every error names the body
field and the rule) and counts its samples without loading a model. :func:`submit`
(:mod:`.dispatch`) commits the job row first and only then hands its chunks to a dispatcher
(Celery, or the in-process :class:`EmbeddedRunner` of :mod:`.embedded`), so no job ever exists
only in a broker.

A *chunk* is the unit of work: a slice of the job's problems run across every run of the grid
(full cache first, as fidelity needs). :func:`run_chunk` (:mod:`.run`) executes one with
``Bench(spec, store, scope=job_id).execute(problems=chunk)``. Samples are keyed (run, problem,
sample index) in the store, so a chunk delivered twice, or resumed after its worker died, neither
duplicates nor loses a sample: it only generates what is missing. :func:`recover`
(:mod:`.recovery`) is the one sweep that hands lost chunks out again, for the Celery workers and
the embedded runner alike.

Job status: ``queued`` -> ``running`` (a chunk started) -> ``succeeded`` (every sample stored) |
``failed`` (a chunk kept raising) | ``cancelled`` (asked for; workers stop between samples).
"""

from .dispatch import Dispatcher, DispatchError, submit
from .embedded import EmbeddedRunner
from ..spec import QUEUE_CHOICES, JobInvalid
from .plan import SERVICE_KEY, JobPlan, chunk_bounds, plan_job, service_info
from .recovery import ChunkTracker, recover
from .run import (
    ChunkError,
    ChunkOutcome,
    chunk_is_complete,
    execute_chunk,
    fail_job,
    finalize_if_complete,
    job_should_stop,
    run_chunk,
)

__all__ = [
    "QUEUE_CHOICES",
    "SERVICE_KEY",
    "ChunkError",
    "ChunkOutcome",
    "ChunkTracker",
    "DispatchError",
    "Dispatcher",
    "EmbeddedRunner",
    "JobInvalid",
    "JobPlan",
    "chunk_bounds",
    "chunk_is_complete",
    "execute_chunk",
    "fail_job",
    "finalize_if_complete",
    "job_should_stop",
    "plan_job",
    "recover",
    "run_chunk",
    "service_info",
    "submit",
]
