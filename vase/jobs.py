"""Benchmark jobs for the service: planning, chunked execution, status, recovery, in-process runner.

The API and the workers hold no benchmark logic; they call this module.

A *job* is a :class:`~vase.bench.BenchSpec` submitted over the API. :func:`plan_job` validates the
body against the policy registry's rules (every error names the body field and the rule) and
counts its samples without loading a model. :func:`submit` commits the job row first and only
then hands its chunks to a dispatcher (Celery, or the in-process :class:`EmbeddedRunner`), so no
job ever exists only in a broker.

A *chunk* is the unit of work: a slice of the job's problems run across every run of the grid
(full cache first, as fidelity needs). :func:`run_chunk` executes one with
``Bench(spec, store, scope=job_id).execute(problems=chunk)``. Samples are keyed (run, problem,
sample index) in the store, so a chunk delivered twice, or resumed after its worker died, neither
duplicates nor loses a sample: it only generates what is missing.

Job status: ``queued`` -> ``running`` (a chunk started) -> ``succeeded`` (every sample stored) |
``failed`` (a chunk kept raising) | ``cancelled`` (asked for; workers stop between samples).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .bench import BenchSpec, MethodSpec
from .config import EMBEDDED_MODEL, Settings, get_settings
from .policies import InvalidParameter, build_policy, policy_class, validate_geometry
from .store import TERMINAL_STATUSES, Store, StoreUnavailable

log = logging.getLogger("vase.jobs")

QUEUE_CHOICES = ("auto", "gpu", "cpu")
ACTIVE_STATUSES = ("queued", "running")
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


class JobInvalid(ValueError):
    """A job body broke a rule. ``field`` is its path in the body (``methods[1].params.n_large``)."""

    def __init__(self, field: str, rule: str, value: Any = None):
        self.field = field
        self.rule = rule
        self.value = value
        shown = "" if value is None else f", got {value!r}"
        super().__init__(f"{field}: {rule}{shown}")


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------
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
    from .tasks import get_task

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
    from .tasks import get_task
    from .tasks.jsonl import JSONL_PREFIX

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
    from .generation import SamplingConfig

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


# ------------------------------------------------------------------------------------------------
# Dispatch
# ------------------------------------------------------------------------------------------------
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
    job_id = store.create_job(plan.spec_document(), model=str(plan.spec.model), task=plan.spec.task,
                              total_samples=plan.total_samples, owner=owner)
    if dispatcher is not None:
        try:
            dispatcher.dispatch(job_id, range(plan.n_chunks), plan.queue)
        except Exception as exc:  # noqa: BLE001 - a broker error must not lose the stored job
            log.warning("job %s stored but not dispatched (%s); recovery will dispatch it", job_id, exc)
    return store.get_job(job_id) or {"id": job_id, "status": "queued"}


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


def _chunk_problems(job: Mapping[str, Any], spec: BenchSpec, chunk: int):
    from .tasks import get_task

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
    spec = BenchSpec.from_dict(job["spec"])
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
    from .bench import Bench
    from .models import load_model

    job = store.get_job(job_id)
    if job is None:
        return ChunkOutcome.GONE
    if job["status"] in TERMINAL_STATUSES:
        return ChunkOutcome.SKIPPED
    spec = BenchSpec.from_dict(job["spec"])
    problems = _chunk_problems(job, spec, chunk)
    if chunk_is_complete(store, job, problems):
        finalize_if_complete(store, job_id)
        return ChunkOutcome.DONE
    if not store.set_job_status(job_id, "running"):
        return ChunkOutcome.SKIPPED  # finished (cancelled, failed) meanwhile
    model, tokenizer = load_model(spec.model)
    bench = Bench(spec, store, scope=job_id, model=model, tokenizer=tokenizer)
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


# ------------------------------------------------------------------------------------------------
# Recovery
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# The embedded runner: no broker, one background thread in the API process
# ------------------------------------------------------------------------------------------------
class EmbeddedRunner:
    """Runs jobs in the API process when no broker is configured (the single-command default).

    A background thread takes (job, chunk) items from an in-memory queue and runs them one at a
    time with :func:`execute_chunk`. Jobs live in the database, not in the queue: on start, and
    every ``recovery_interval_s``, the runner picks up queued jobs and running jobs whose
    heartbeat went stale (e.g. the previous server was killed), so nothing is lost with the process.
    """

    kind = "embedded"

    def __init__(self, store: Store, settings: Settings | None = None):
        self.store = store
        self.settings = settings or get_settings()
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._pending: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: tuple[str, int] | None = None

    # -- Dispatcher -------------------------------------------------------------------------------
    def dispatch(self, job_id: str, chunks: Iterable[int], queue: str = "") -> None:
        with self._lock:
            for chunk in chunks:
                item = (job_id, int(chunk))
                if item not in self._pending:
                    self._pending.add(item)
                    self._queue.put(item)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="vase-embedded-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current sample; unfinished chunks stay in the database for next time."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    # -- the thread -----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Pick up the active jobs nobody runs: queued ones with nothing pending here, and running ones
        whose heartbeat went stale (their server died; one with a fresh heartbeat may belong to
        another server on the same database). Chunks already complete return at once."""
        try:
            stale = {j["id"] for j in self.store.stale_jobs(self.settings.stale_after_s)}
            for job in list(_active_jobs(self.store)):
                if finalize_if_complete(self.store, job["id"]):
                    continue
                with self._lock:
                    here = any(item[0] == job["id"] for item in self._pending)
                if here or (job["status"] == "running" and job["id"] not in stale):
                    continue
                try:
                    n_chunks = service_info(job)["n_chunks"]
                except ValueError:
                    continue
                log.info("embedded runner: picking up job %s (%s)", job["id"], job["status"])
                self.dispatch(job["id"], range(n_chunks))
        except StoreUnavailable as exc:
            log.warning("embedded runner: recovery skipped, database unavailable: %s", exc)

    def _requeue(self, job_id: str) -> None:
        """Shutting down mid-job: put it back in the queue, so the next start resumes it at once."""
        with contextlib.suppress(StoreUnavailable):
            job = self.store.get_job(job_id)
            if job is not None and job["status"] == "running" and not job["cancel_requested"]:
                self.store.set_job_status(job_id, "queued")
                log.info("embedded runner: job %s put back in the queue (shutdown)", job_id)

    def _loop(self) -> None:
        self._recover()
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=min(1.0, self.settings.recovery_interval_s))
            except queue.Empty:
                item = None
            if self._stop.is_set():
                break
            if item is None:
                if time.monotonic() - last_sweep >= self.settings.recovery_interval_s:
                    self._recover()
                    last_sweep = time.monotonic()
                continue
            job_id, chunk = item
            self.current = item
            try:
                outcome = execute_chunk(self.store, job_id, chunk, settings=self.settings,
                                        interrupted=self._stop.is_set, sleep=self._stop.wait)
                if outcome == ChunkOutcome.DEFERRED:
                    log.warning("embedded runner: job %s chunk %d deferred", job_id, chunk)
                elif outcome == ChunkOutcome.INTERRUPTED:
                    self._requeue(job_id)
            except Exception:
                log.exception("embedded runner: job %s chunk %d", job_id, chunk)
            finally:
                self.current = None
                with self._lock:
                    self._pending.discard(item)


__all__ = [
    "ACTIVE_STATUSES",
    "BODY_DEFAULTS",
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
