"""Re-grading stored outputs: :func:`vase.grading.grade` again over the samples of a job, of some
runs or of the whole store, writing both verdicts (strict and flexible) back.

Grading is a pure function of (problem, output), so a re-grade needs only the problems: each
run's task is loaded again with the ``limit`` and ``task_seed`` its manifest recorded (generated
tasks are deterministic; hub tasks need their data, as when they ran). Samples whose problem
cannot be found are counted and left as they are. Used by ``vase regrade``, e.g. to fill the
flexible columns of samples stored before migration ``0002_flexible_grade``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .grading import grade
from .prompting import prompt_opens_thinking
from .tasks import Problem, get_task

#: Samples read from the store at a time.
PAGE = 200
_VERDICT_COLUMNS = ("correct", "extracted", "grade_status", "grade_reason", "correct_flex", "extracted_flex",
                    "flex_rule")


@dataclass
class RegradeReport:
    """What a re-grade did: runs and samples graded again, how many verdicts changed, and the
    samples or runs it could not grade (``skipped``: one line each, naming the run and why)."""

    runs: int = 0
    samples: int = 0
    strict_changed: int = 0
    flex_changed: int = 0
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "samples": self.samples, "strict_changed": self.strict_changed,
                "flex_changed": self.flex_changed, "skipped": list(self.skipped)}


def problems_of_run(run: dict[str, Any]) -> dict[str, Problem]:
    """The run's problems by id, loaded as the run loaded them (task, limit, task seed)."""
    manifest = run.get("manifest") or {}
    task = get_task(run["task"])
    problems = task.load(limit=manifest.get("limit"), seed=int(manifest.get("task_seed") or 0))
    return {p.id: p for p in problems}


def regrade(store: Any, *, job_id: str | None = None, run_ids: Iterable[int] | None = None,
            on_sample: Callable[[], None] | None = None) -> RegradeReport:
    """Grade the stored outputs of the job's runs, of ``run_ids``, or (neither given) of every
    run again, and store both verdicts. Returns what changed."""
    report = RegradeReport()
    loaded: dict[tuple[Any, ...], dict[str, Problem]] = {}
    for run in store.list_runs(job_id=job_id, run_ids=None if run_ids is None else list(run_ids)):
        manifest = run.get("manifest") or {}
        key = (run["task"], manifest.get("limit"), manifest.get("task_seed"))
        try:
            if key not in loaded:
                loaded[key] = problems_of_run(run)
        except Exception as exc:  # noqa: BLE001 - one unloadable task skips its runs, not the re-grade
            report.skipped.append(f"run {run['id']}: task {run['task']!r} could not be loaded: {exc}")
            continue
        report.runs += 1
        _regrade_run(store, run["id"], loaded[key], report, on_sample)
    return report


def _regrade_run(store: Any, run_id: int, problems: dict[str, Problem], report: RegradeReport,
                 on_sample: Callable[[], None] | None) -> None:
    missing = 0
    offset = 0
    while True:
        page = store.list_samples(run_id=run_id, limit=PAGE, offset=offset)
        if not page:
            break
        offset += len(page)
        for sample in page:
            problem = problems.get(sample["problem_id"])
            if problem is None:
                missing += 1
                continue
            verdict = grade(problem, sample["output"], opened_in_prompt=prompt_opens_thinking(sample["prompt"] or ""))
            new = {"correct": verdict.correct, "extracted": verdict.extracted, "grade_status": verdict.status,
                   "grade_reason": verdict.reason, "correct_flex": verdict.correct_flex,
                   "extracted_flex": verdict.extracted_flex, "flex_rule": verdict.flex_rule}
            report.strict_changed += any(sample.get(k) != new[k] for k in _VERDICT_COLUMNS[:4])
            report.flex_changed += any(sample.get(k) != new[k] for k in _VERDICT_COLUMNS[4:])
            store.update_sample_grade(sample["id"], **new)
            report.samples += 1
            if on_sample is not None:
                on_sample()
    if missing:
        report.skipped.append(f"run {run_id}: {missing} samples whose problem is not in the task as loaded")
