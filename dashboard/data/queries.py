"""Queries behind the pages' tables and pickers: jobs, the comparison table, runs and their samples,
and the paper's published figures. Each returns a DataFrame (cached per database URL for a few
seconds: jobs refresh every couple of seconds, results every ten)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from vase.methods import method_label

from .base import NotFound, database_url, percent, query, query_cache, source_label, store

JOB_COLUMNS = [
    "id",
    "status",
    "task",
    "model",
    "methods",
    "budgets",
    "progress",
    "done_samples",
    "total_samples",
    "failed_samples",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "owner",
    "error",
]


@query_cache(ttl=2, max_entries=64)
def _jobs(url: str, status: tuple[str, ...] | None, limit: int) -> tuple[pd.DataFrame, int]:
    s = store(url)
    rows, total = query(s.list_jobs, status=list(status) if status else None, limit=limit)
    out = []
    for job in rows:
        spec = job.get("spec") or {}
        methods = spec.get("methods") or []
        out.append(
            {
                **{k: job.get(k) for k in JOB_COLUMNS if k in job},
                "methods": ", ".join(
                    method_label(m.get("name", "?"), m.get("params") or {}) for m in methods if isinstance(m, dict)
                ),
                "budgets": ", ".join(str(b) for b in spec.get("budgets") or []),
            }
        )
    frame = pd.DataFrame(out, columns=JOB_COLUMNS)
    return frame, int(total)


def jobs(status: list[str] | None = None, limit: int = 200) -> tuple[pd.DataFrame, int]:
    """(jobs newest first, number matching). Columns: ``JOB_COLUMNS``; progress is 0..1."""
    return _jobs(database_url(), tuple(sorted(status)) if status else None, int(limit))


def job_statuses() -> list[str]:
    from vase.store.models import JOB_STATUSES

    return list(JOB_STATUSES)


def job(job_id: str) -> dict[str, Any]:
    s = store()
    found = query(s.get_job, job_id)
    if found is None:
        raise NotFound(f"Job {job_id} does not exist (it may have been deleted).")
    return found


RESULT_COLUMNS = [
    "task",
    "model",
    "method",
    "budget",
    "accuracy",
    "accuracy_se",
    "accuracy_flex",
    "accuracy_flex_se",
    "loop_rate",
    "kl_mean",
    "top1_agreement",
    "tokens_per_s",
    "kv_mib",
    "n_problems",
    "n_samples",
    "truncated_rate",
    "mean_new_tokens",
    "evictions",
    "sparsity",
    "pass_at_k",
    "pass_at_k_flex",
    "residual",
    "source",
    "method_name",
    "params",
    "trace_level",
    "fidelity",
    "run_id",
    "job_id",
]


#: The two gradings (lm-evaluation-harness's strict-match and flexible-extract): each one's accuracy
#: and standard-error columns in ``results()``.
GRADINGS = {"strict": ("accuracy", "accuracy_se"), "flexible": ("accuracy_flex", "accuracy_flex_se")}


def _pass_at_k_text(pak: dict[str, float] | None) -> str:
    return ", ".join(f"@{k}: {100 * v:.1f}" for k, v in sorted((pak or {}).items(), key=lambda kv: int(kv[0])))


@query_cache(ttl=10, max_entries=64)
def _results(url: str, job_id: str | None) -> pd.DataFrame:
    s = store(url)
    rows = query(s.results, job_id=job_id)
    out = []
    for r in rows:
        out.append(
            {
                "task": r["task"],
                "model": r["model"],
                "method": method_label(r["method"], r.get("params") or {}),
                "budget": r["budget"],
                "accuracy": percent(r["accuracy"]),
                "accuracy_se": percent(r["accuracy_se"]),
                # runs stored before flexible grading existed have none until they are re-graded
                "accuracy_flex": percent(r.get("accuracy_flex")),
                "accuracy_flex_se": percent(r.get("accuracy_flex_se")),
                "loop_rate": percent(r["loop_rate"]),
                "kl_mean": r["kl_mean"],
                "top1_agreement": percent(r["top1_agreement"]),
                "tokens_per_s": r["tokens_per_s"],
                "kv_mib": None if r["kv_bytes_peak"] is None else r["kv_bytes_peak"] / 2**20,
                "n_problems": r["n_problems"],
                "n_samples": r["n_samples"],
                "truncated_rate": percent(r["truncated_rate"]),
                "mean_new_tokens": r["mean_new_tokens"],
                "evictions": r["evictions"],
                "sparsity": r["sparsity"],
                "pass_at_k": _pass_at_k_text(r.get("pass_at_k")),
                "pass_at_k_flex": _pass_at_k_text(r.get("pass_at_k_flex")),
                "residual": r["residual"],
                "source": source_label(r.get("job_id")),
                "method_name": r["method"],
                "params": json.dumps(r.get("params") or {}, sort_keys=True),
                "trace_level": r["trace_level"],
                "fidelity": bool(r["fidelity"]),
                "run_id": r["run_id"],
                "job_id": r["job_id"],
            }
        )
    frame = pd.DataFrame(out, columns=RESULT_COLUMNS)
    frame["budget"] = frame["budget"].astype("Int64")
    for col in ("n_problems", "n_samples", "run_id", "residual"):
        frame[col] = frame[col].astype("Int64")
    return frame


def results(job_id: str | None = None) -> pd.DataFrame:
    """One row per stored run (method x budget x task x model), columns ``RESULT_COLUMNS``.

    Rates (strict and flexible accuracy with their standard errors (``GRADINGS``), loop rate, top-1 agreement, truncation) are in percent;
    ``kv_mib`` is the peak KV-cache memory in MiB; ``budget`` is empty (<NA>) for the full cache.
    ``method`` is the label (parameters that differ from the defaults after a colon)."""
    return _results(database_url(), job_id)


def filter_results(
    frame: pd.DataFrame,
    *,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    methods: list[str] | None = None,
    budgets: list[Any] | None = None,
    sources: list[str] | None = None,
) -> pd.DataFrame:
    """Rows of ``frame`` whose task/model/method/source are among the given ones (None: any).
    ``budgets`` may hold ints and the string "full" (the no-budget rows)."""
    mask = pd.Series(True, index=frame.index)
    for col, allowed in (("task", tasks), ("model", models), ("method", methods), ("source", sources)):
        if allowed is not None:
            mask &= frame[col].isin(allowed)
    if budgets is not None:
        ints = [int(b) for b in budgets if b != "full"]
        bm = frame["budget"].isin(ints).fillna(False).astype(bool)
        if "full" in budgets:
            bm |= frame["budget"].isna()
        mask &= bm
    return frame[mask].reset_index(drop=True)


def paper_overlay(model: str | None, task: str | None) -> pd.DataFrame:
    """The paper's accuracy (percent) for ``model``/``task``: columns method, budget, accuracy.
    Empty when the paper publishes nothing for them."""
    from vase.reference import paper_accuracy_by_budget

    rows = [
        {"method": m, "budget": b, "accuracy": v}
        for b, methods in paper_accuracy_by_budget(model, task).items()
        for m, v in methods.items()
    ]
    return pd.DataFrame(rows, columns=["method", "budget", "accuracy"])


def paper_choices() -> dict[str, list[str]]:
    """Paper models and the project task names the paper has figures for (for a manual overlay)."""
    from vase.reference import TASK_TO_PAPER, paper_tables

    tables = paper_tables()
    models = sorted(set(tables["accuracy"]) | {k.split("/", 1)[1] for k in tables.get("accuracy_by_budget", {})})
    return {"models": models, "tasks": sorted(TASK_TO_PAPER)}


def paper_match(model: str | None, task: str | None) -> tuple[str | None, str | None]:
    """(paper model, paper task) the project's model/task correspond to (None where none)."""
    from vase.reference import paper_model, paper_task

    return paper_model(model), paper_task(task)


def paper_source() -> str:
    from vase.reference import paper_source as source

    return source()


@query_cache(ttl=10, max_entries=64)
def _runs(url: str, task: str | None, model: str | None, job_id: str | None) -> pd.DataFrame:
    s = store(url)
    rows = query(s.list_runs, task=task, model=model, job_id=job_id)
    out = [
        {
            "run_id": r["id"],
            "task": r["task"],
            "model": r["model"],
            "method": method_label(r["method"], r.get("params") or {}),
            "method_name": r["method"],
            "budget": r["budget"],
            "residual": r["residual"],
            "trace_level": r["trace_level"],
            "fidelity": bool(r["fidelity"]),
            "n_samples": r.get("n_samples", 0),
            "job_id": r["job_id"],
            "scope": r["scope"],
            "source": source_label(r["job_id"]),
        }
        for r in rows
    ]
    frame = pd.DataFrame(
        out,
        columns=[
            "run_id",
            "task",
            "model",
            "method",
            "method_name",
            "budget",
            "residual",
            "trace_level",
            "fidelity",
            "n_samples",
            "job_id",
            "scope",
            "source",
        ],
    )
    frame["budget"] = frame["budget"].astype("Int64")
    return frame


def runs(task: str | None = None, model: str | None = None, job_id: str | None = None) -> pd.DataFrame:
    """Stored runs (one per method x budget of a grid), oldest first, with their sample counts."""
    return _runs(database_url(), task, model, job_id)


def run_label(row: Any) -> str:
    budget = row["budget"]
    b = "full cache" if budget is None or pd.isna(budget) else f"budget {int(budget)}"
    return f"{row['method']} · {b} · {row['source']} · run {int(row['run_id'])}"


SAMPLE_COLUMNS = [
    "sample_id",
    "run_id",
    "problem_id",
    "sample_index",
    "correct",
    "correct_flex",
    "grade_status",
    "extracted",
    "extracted_flex",
    "answer",
    "new_tokens",
    "truncated",
    "loop_detected",
    "loop_start",
    "kl_mean",
    "top1_agreement",
    "first_divergence",
    "tokens_per_s",
    "evictions",
    "trace_level",
]


@query_cache(ttl=10, max_entries=128)
def _samples(
    url: str, run_ids: tuple[int, ...], problem_id: str | None, correct: bool | None, limit: int
) -> pd.DataFrame:
    s = store(url)
    out = []
    for run_id in run_ids:
        for smp in query(
            s.list_samples, run_id=run_id, problem_id=problem_id, correct=correct, limit=limit, include_text=False
        ):
            metrics = smp.get("metrics") or {}
            trace = smp.get("trace") or {}
            out.append(
                {
                    "sample_id": smp["id"],
                    "run_id": smp["run_id"],
                    "problem_id": smp["problem_id"],
                    "sample_index": smp["sample_index"],
                    "correct": smp["correct"],
                    "correct_flex": smp.get("correct_flex"),
                    "grade_status": smp["grade_status"],
                    "extracted": smp["extracted"],
                    "extracted_flex": smp.get("extracted_flex"),
                    "answer": None if metrics.get("answer") is None else str(metrics["answer"]),
                    "new_tokens": smp["new_tokens"],
                    "truncated": smp["truncated"],
                    "loop_detected": smp["loop_detected"],
                    "loop_start": smp["loop_start"],
                    "kl_mean": smp["kl_mean"],
                    "top1_agreement": percent(smp["top1_agreement"]),
                    "first_divergence": smp["first_divergence"],
                    "tokens_per_s": smp["tokens_per_s"],
                    "evictions": smp["evictions"],
                    "trace_level": trace.get("level") or "off",
                }
            )
    frame = pd.DataFrame(out, columns=SAMPLE_COLUMNS)
    for col in ("loop_start", "first_divergence", "new_tokens", "evictions"):
        frame[col] = frame[col].astype("Int64")
    return frame


def samples(
    run_ids: list[int] | tuple[int, ...],
    *,
    problem_id: str | None = None,
    correct: bool | None = None,
    limit: int = 500,
) -> pd.DataFrame:
    """Samples of the given runs (no texts), columns ``SAMPLE_COLUMNS``; top-1 agreement in percent."""
    return _samples(database_url(), tuple(int(r) for r in run_ids), problem_id, correct, int(limit))


def trace_samples(task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Runs that recorded traces (any level), for the explorer's pickers."""
    frame = runs(task=task, model=model)
    return frame[frame["trace_level"] != "off"].reset_index(drop=True)
