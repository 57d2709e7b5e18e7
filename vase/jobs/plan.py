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

from ..bench import BenchSpec
from ..config import EMBEDDED_MODEL, Settings, get_settings
from ..methods import MethodSpec
from ..policies import InvalidParameter, build_policy, policy_class, validate_geometry

QUEUE_CHOICES = ("auto", "gpu", "cpu")
SERVICE_KEY = "service"

# The job body's fields (see ``api.schemas.JobCreate`` for their documentation) and their defaults.
BODY_DEFAULTS: dict[str, Any] = {
    "model": None,
    "limit": 4,
    "task_seed": 0,
    "methods": [{"name": "full"}, {"name": "vase"}],
    "budgets": [128],
    "residual": 32,
    "samples": 1,
    "seeds": 0,
    "generation": {},
    "max_new_tokens": 256,
    "fidelity": False,
    "trace": "off",
    "attention_backend": "auto",
    "queue": "auto",
    "chunk_size": None,
}


class JobInvalid(InvalidParameter):
    """A job body broke a rule. ``field`` is its path in the body (``methods[1].params.n_large``)."""

    @property
    def field(self) -> str:
        return self.param


@dataclass(frozen=True)
class JobPlan:
    """A validated job: its spec, size, chunks and queue."""

    spec: BenchSpec
    n_problems: int
    n_runs: int
    total_samples: int
    chunk_size: int
    queue_kind: str  # "gpu" | "cpu"
    queue: str  # the broker queue name

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_problems / self.chunk_size) if self.n_problems else 0

    def spec_document(self) -> dict[str, Any]:
        """What the job row stores: the BenchSpec fields plus the service's plan."""
        doc = self.spec.to_dict()
        doc[SERVICE_KEY] = {
            "n_problems": self.n_problems,
            "n_runs": self.n_runs,
            "chunk_size": self.chunk_size,
            "n_chunks": self.n_chunks,
            "queue": self.queue,
            "queue_kind": self.queue_kind,
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


def _remap(error: InvalidParameter, names: Mapping[str, str], default: str | None = None) -> JobInvalid:
    field = names.get(error.param, default if default is not None else error.param)
    return JobInvalid(field, error.rule, error.value)


def _count_problems(task_name: str, limit: int | None, task_seed: int) -> int:
    """Problems the job will run: counted by loading offline tasks (cheap), else from the task's
    published size; raises JobInvalid when it cannot be known before downloading."""
    from ..tasks import get_task

    task = get_task(task_name)
    if task.offline:
        return len(task.load(limit=limit, seed=task_seed))
    size = task.size()
    if size is not None:
        return size if limit is None else min(size, limit)
    if limit is None:
        raise JobInvalid("limit", f"is required for task {task_name!r}: its size is unknown until it is downloaded")
    return limit


def plan_job(body: Mapping[str, Any], settings: Settings | None = None) -> JobPlan:
    """Validate a job body (the API's ``JobCreate`` as a dict) and plan it; raises JobInvalid.

    Types and ranges are the API schema's business; this checks what needs the registries: the
    task, each method and its parameters, each budget against the residual and every method, the
    sampling parameters, and the job's size. Nothing is stored.
    """
    settings = settings or get_settings()
    b = {**BODY_DEFAULTS, **body}  # an explicit "limit": null means every problem of the task

    # -- task ------------------------------------------------------------------------------------
    task = b.get("task")
    if not isinstance(task, str) or not task.strip():
        raise JobInvalid("task", "is required: a task name (GET /v1/tasks)")
    from ..tasks import get_task
    from ..tasks.jsonl import JSONL_PREFIX

    if task.startswith(JSONL_PREFIX) and not settings.allow_local_tasks:
        raise JobInvalid("task", "jsonl: tasks read files on the workers' disks and are disabled here "
                                 "(set VASE_ALLOW_LOCAL_TASKS=true on the API to allow them)", task)
    try:
        get_task(task)
    except (ValueError, OSError) as exc:
        raise JobInvalid("task", str(exc)) from None

    # -- methods and their parameters --------------------------------------------------------------
    methods = [MethodSpec(m["name"], dict(m.get("params") or {})) for m in b["methods"]]
    if not methods:
        raise JobInvalid("methods", "must name at least one method")
    built: list[tuple[str, Any]] = []
    for i, m in enumerate(methods):
        try:
            policy_class(m.name)
        except InvalidParameter as exc:
            raise JobInvalid(f"methods[{i}].name", exc.rule, m.name) from None
        try:
            policy = build_policy(m.name, m.params)
        except InvalidParameter as exc:
            raise JobInvalid(f"methods[{i}].params.{exc.param}", exc.rule, exc.value) from None
        except (TypeError, ValueError) as exc:
            raise JobInvalid(f"methods[{i}].params", str(exc)) from None
        key = (m.name, repr(sorted(dataclasses.asdict(policy).items())))
        for j, (earlier, _) in enumerate(built):
            if earlier == key:
                raise JobInvalid(f"methods[{i}]", f"repeats methods[{j}] (same method, same parameters "
                                                  "once defaults are filled in)")
        built.append((key, policy))

    # -- budgets x residual x methods ---------------------------------------------------------------
    budgets = list(b["budgets"])
    residual = b["residual"]
    kinds = [policy_class(m.name).kind for m in methods]
    if not budgets and any(k != "none" for k in kinds):
        raise JobInvalid("budgets", "must list at least one budget for eviction and selection methods")
    for j, budget in enumerate(budgets):
        if budget in budgets[:j]:
            raise JobInvalid(f"budgets[{j}]", "must not repeat a budget", budget)
    for i, (m, kind, (_, policy)) in enumerate(zip(methods, kinds, built)):
        if kind == "none":
            try:
                validate_geometry(None, residual, kind=kind)
            except InvalidParameter as exc:
                raise _remap(exc, {"residual": "residual"}) from None
            continue
        for j, budget in enumerate(budgets):
            try:
                validate_geometry(budget, residual, kind=kind)
            except InvalidParameter as exc:
                raise _remap(exc, {"budget": f"budgets[{j}]", "residual": "residual"}) from None
            try:
                policy.validate(budget, residual)
            except InvalidParameter as exc:
                names = {"budget": f"budgets[{j}]", "residual": "residual"}
                raise _remap(exc, names, default=f"methods[{i}].params.{exc.param}") from None

    # -- sampling ---------------------------------------------------------------------------------
    generation = dict(b.get("generation") or {})
    from ..generation import SamplingConfig

    try:
        SamplingConfig(generation.get("do_sample"), generation.get("temperature"), generation.get("top_p"),
                       generation.get("top_k")).check()
    except InvalidParameter as exc:
        raise JobInvalid(f"generation.{exc.param}", exc.rule, exc.value) from None

    model = b.get("model") or settings.default_model
    spec = BenchSpec(
        task=task, limit=b["limit"], task_seed=b["task_seed"], methods=methods, budgets=budgets,
        residual=residual, samples=b["samples"], seed=b["seeds"], model=model,
        do_sample=generation.get("do_sample"), temperature=generation.get("temperature"),
        top_p=generation.get("top_p"), top_k=generation.get("top_k"), max_new_tokens=b["max_new_tokens"],
        fidelity=bool(b["fidelity"]), trace=b["trace"], attention_backend=b["attention_backend"],
    )
    # The authoritative check (the same the CLI runs); our own checks above name fields precisely.
    try:
        spec.validate()
    except InvalidParameter as exc:
        raise _remap(exc, {"seed": "seeds", "budget": "budgets", "method": "methods", "temperature":
                           "generation.temperature", "top_p": "generation.top_p", "top_k": "generation.top_k"}) from None

    # -- size ---------------------------------------------------------------------------------------
    try:
        n_problems = _count_problems(task, spec.limit, spec.task_seed)
    except JobInvalid:
        raise
    except (ValueError, OSError) as exc:
        raise JobInvalid("task", f"could not be loaded: {exc}") from None
    if n_problems == 0:
        raise JobInvalid("task", "has no problems to run", task)
    n_runs = len(spec.runs())
    total = n_problems * n_runs * spec.samples
    if total > settings.max_job_samples:
        raise JobInvalid("samples", f"the job would have {n_problems} problems x {n_runs} runs x {spec.samples} "
                                    f"samples = {total} samples; at most {settings.max_job_samples} are allowed")

    # -- routing ------------------------------------------------------------------------------------
    queue_choice = b.get("queue") or "auto"
    if queue_choice not in QUEUE_CHOICES:
        raise JobInvalid("queue", f"must be one of {', '.join(QUEUE_CHOICES)}", queue_choice)
    if queue_choice == "auto":
        small = total * spec.max_new_tokens <= settings.cpu_job_max_tokens
        queue_kind = "cpu" if model == EMBEDDED_MODEL and small and spec.attention_backend != "flash" else "gpu"
    else:
        queue_kind = queue_choice
    if queue_kind == "cpu" and spec.attention_backend == "flash":
        raise JobInvalid("attention_backend", "'flash' needs a GPU worker: use queue 'gpu' (or 'auto')")
    chunk_size = b.get("chunk_size") or settings.chunk_problems
    return JobPlan(
        spec=spec, n_problems=n_problems, n_runs=n_runs, total_samples=total, chunk_size=int(chunk_size),
        queue_kind=queue_kind, queue=settings.queue_gpu if queue_kind == "gpu" else settings.queue_cpu,
    )
