"""Planning a job: validate its body against the registries and size it, before anything is stored.

:func:`plan_job` is the one place a job body becomes a :class:`JobPlan`; every rule it checks
raises :class:`JobInvalid` naming the body field (``methods[1].params.n_large``) and the rule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import EMBEDDED_MODEL, Settings, get_settings
from ..spec import JobInvalid, JobSpec, check_context, check_load, check_model, model_shape

SERVICE_KEY = "service"


@dataclass(frozen=True)
class JobPlan:
    """A validated job: its spec, size, chunks and queue."""

    spec: JobSpec
    n_problems: int
    n_runs: int
    total_samples: int
    chunk_size: int
    queue_kind: str  # "gpu" | "cpu"
    queue: str  # the broker queue name
    estimate: dict[str, Any] = dataclasses.field(default_factory=dict)  # vase.spec.Estimate

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_problems / self.chunk_size) if self.n_problems else 0

    def spec_document(self) -> dict[str, Any]:
        """What the job row stores: the JobSpec fields plus the service's plan."""
        doc = self.spec.to_dict()
        doc[SERVICE_KEY] = {
            "n_problems": self.n_problems,
            "n_runs": self.n_runs,
            "chunk_size": self.chunk_size,
            "n_chunks": self.n_chunks,
            "queue": self.queue,
            "queue_kind": self.queue_kind,
            "estimate": self.estimate,
        }
        return doc


def chunk_bounds(n_problems: int, chunk_size: int, index: int) -> tuple[int, int]:
    """[start, end) of chunk ``index`` in the job's problem list."""
    start = index * chunk_size
    return start, min(n_problems, start + chunk_size)


def service_info(job: Mapping[str, Any]) -> dict[str, Any]:
    """The plan stored with a job (n_problems, n_runs, chunk_size, n_chunks, queue)."""
    info = (job.get("spec") or {}).get(SERVICE_KEY)
    if not info:
        raise ValueError(f"job {job.get('id')} has no service plan (it was not submitted through vase.jobs)")
    return info


def _count_problems(spec: JobSpec) -> int:
    """Problems the job will run, without making them: generated tasks count, offline files load
    (cheap), hub tasks use their published size; raises JobInvalid when it cannot be known before
    downloading."""
    from ..tasks import get_task

    task = get_task(spec.task)
    if task.offline:
        return task.count(limit=spec.limit, seed=spec.task_seed)
    size = task.size()
    if size is not None:
        return size if spec.limit is None else min(size, spec.limit)
    if spec.limit is None:
        raise JobInvalid("limit", f"is required for task {spec.task!r}: its size is unknown until it is downloaded")
    return spec.limit


def plan_job(job: JobSpec | Mapping[str, Any], settings: Settings | None = None) -> JobPlan:
    """Validate a job and plan it; raises JobInvalid naming the field. Nothing is stored.

    ``job`` is a :class:`JobSpec` (the API's body) or a mapping of its fields. On top of
    :meth:`JobSpec.check` (task, methods, budgets, duplicates, sampling): the model must be
    allowed, the job must fit the model's context, a worker's memory and the service's caps, and
    it is routed to a queue.
    """
    settings = settings or get_settings()
    spec = job if isinstance(job, JobSpec) else JobSpec.parse(job)
    from ..tasks.jsonl import JSONL_PREFIX

    if spec.task.startswith(JSONL_PREFIX) and not settings.allow_local_tasks:
        raise JobInvalid("task", "jsonl: tasks read files on the workers' disks and are disabled here "
                                 "(set VASE_ALLOW_LOCAL_TASKS=true on the API to allow them)", spec.task)
    spec.check()
    model = check_model(spec.model, settings)
    spec = spec.model_copy(update={"model": model})

    # -- size ---------------------------------------------------------------------------------------
    try:
        n_problems = _count_problems(spec)
    except JobInvalid:
        raise
    except (ValueError, OSError) as exc:
        raise JobInvalid("task", f"could not be loaded: {exc}") from None
    if n_problems == 0:
        raise JobInvalid("task", "has no problems to run", spec.task)
    shape = model_shape(model, settings)
    prompt = check_context(spec, shape, n_problems)
    n_runs = len(spec.runs())
    total = n_problems * n_runs * spec.samples
    if total > settings.max_job_samples:
        raise JobInvalid("samples", f"the job would have {n_problems} problems x {n_runs} runs x {spec.samples} "
                                    f"samples = {total} samples; at most {settings.max_job_samples} are allowed")

    # -- routing ------------------------------------------------------------------------------------
    if spec.queue == "auto":
        small = total * spec.max_new_tokens <= settings.cpu_job_max_tokens
        queue_kind = "cpu" if model == EMBEDDED_MODEL and small and spec.attention_backend != "flash" else "gpu"
    else:
        queue_kind = spec.queue
    if queue_kind == "cpu" and spec.attention_backend == "flash":
        raise JobInvalid("attention_backend", "'flash' needs a GPU worker: use queue 'gpu' (or 'auto')")

    estimate = check_load(spec, shape, prompt=prompt, total_samples=total, queue_kind=queue_kind, settings=settings)
    return JobPlan(
        spec=spec, n_problems=n_problems, n_runs=n_runs, total_samples=total,
        chunk_size=max(spec.chunk_size or settings.chunk_problems, math.ceil(n_problems / settings.max_job_chunks)),
        queue_kind=queue_kind,
        queue=settings.queue_gpu if queue_kind == "gpu" else settings.queue_cpu, estimate=estimate.as_dict(),
    )
