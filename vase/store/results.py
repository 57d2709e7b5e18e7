"""The comparison table: one row per run, aggregated from its samples in SQL; the estimates
(mean pass@1 with its standard error, pass@k) come from :mod:`vase.metrics`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, func, select

from ..metrics import mean_pass_at_1_of_counts, pass_at_k_curve
from .models import Sample
from .samples import SampleQueries

RESULT_KEYS = (
    "run_id", "job_id", "scope", "task", "method", "params", "budget", "residual", "model", "generation",
    "fidelity", "trace_level", "config_hash", "n_problems", "n_samples", "n_graded", "accuracy", "accuracy_se",
    "pass_at_k", "accuracy_flex", "accuracy_flex_se", "pass_at_k_flex", "loop_rate", "truncated_rate", "mean_new_tokens", "kl_mean", "top1_agreement", "tokens_per_s",
    "kv_bytes_peak", "evictions", "sparsity",
)


def _estimates(counts: list[tuple[int, int]]) -> tuple[float | None, float | None, dict[int, float]]:
    """(mean pass@1, its standard error, the pass@k curve) of per-problem (graded, correct)
    counts; (None, None, {}) when nothing is graded yet."""
    if not counts:
        return None, None, {}
    accuracy, se = mean_pass_at_1_of_counts(counts)
    return accuracy, se, pass_at_k_curve(counts)


class ResultQueries(SampleQueries):
    def results(self, job_id: str | None = None, run_ids: Iterable[int] | None = None, *,
                scope: str | None = None) -> list[dict[str, Any]]:
        """The comparison table: one row per run (see ``RESULT_KEYS``), ordered by task, model,
        method, budget. With no filter: every run.

        accuracy = mean over problems of the fraction of graded samples that are correct (mean
        pass@1); accuracy_se = sample std (ddof 1) of those per-problem fractions / sqrt(problems),
        0 for one problem. pass_at_k maps k (1, 2, 4, ... and the fewest graded samples any
        problem has) to the mean unbiased pass@k. accuracy_flex, accuracy_flex_se and
        pass_at_k_flex are the same estimates over the flexible verdicts (``correct_flex``).
        Rates and means skip NULLs; kv_bytes_peak is the max.
        """
        runs = self.list_runs(job_id=job_id, scope=scope, run_ids=run_ids)
        if not runs:
            return []
        ids = [r["id"] for r in runs]

        def rate(col):  # noqa: ANN001, ANN202
            return func.avg(case((col.is_(None), None), (col == True, 1.0), else_=0.0))  # noqa: E712

        agg = select(
            Sample.run_id,
            func.count(Sample.id).label("n_samples"),
            func.count(Sample.correct).label("n_graded"),
            func.count(func.distinct(Sample.problem_id)).label("n_problems"),
            rate(Sample.loop_detected).label("loop_rate"),
            rate(Sample.truncated).label("truncated_rate"),
            func.avg(Sample.new_tokens).label("mean_new_tokens"),
            func.avg(Sample.kl_mean).label("kl_mean"),
            func.avg(Sample.top1_agreement).label("top1_agreement"),
            func.avg(Sample.tokens_per_s).label("tokens_per_s"),
            func.max(Sample.kv_bytes_peak).label("kv_bytes_peak"),
            func.avg(Sample.evictions).label("evictions"),
            func.avg(Sample.sparsity).label("sparsity"),
        ).where(Sample.run_id.in_(ids)).group_by(Sample.run_id)
        per_problem = select(
            Sample.run_id,
            Sample.problem_id,
            func.count(Sample.correct).label("n"),
            func.sum(case((Sample.correct == True, 1), else_=0)).label("c"),  # noqa: E712
            func.count(Sample.correct_flex).label("n_flex"),
            func.sum(case((Sample.correct_flex == True, 1), else_=0)).label("c_flex"),  # noqa: E712
        ).where(Sample.run_id.in_(ids)).group_by(Sample.run_id, Sample.problem_id)
        with self._tx() as conn:
            aggs = {r.run_id: r for r in conn.execute(agg).all()}
            problems: dict[int, list[tuple[int, int]]] = {}
            problems_flex: dict[int, list[tuple[int, int]]] = {}
            for r in conn.execute(per_problem).all():
                if r.n:
                    problems.setdefault(r.run_id, []).append((int(r.n), int(r.c)))
                if r.n_flex:
                    problems_flex.setdefault(r.run_id, []).append((int(r.n_flex), int(r.c_flex)))

        out = []
        for run in runs:
            a = aggs.get(run["id"])
            accuracy, se, pass_at_k = _estimates(problems.get(run["id"], []))
            accuracy_flex, se_flex, pass_at_k_flex = _estimates(problems_flex.get(run["id"], []))

            def num(name: str, cast=float):  # noqa: ANN001
                v = getattr(a, name) if a is not None else None
                return None if v is None else cast(v)

            out.append({
                "run_id": run["id"],
                "job_id": run["job_id"],
                "scope": run["scope"],
                "task": run["task"],
                "method": run["method"],
                "params": run["params"],
                "budget": run["budget"],
                "residual": run["residual"],
                "model": run["model"],
                "generation": run["generation"],
                "fidelity": run["fidelity"],
                "trace_level": run["trace_level"],
                "config_hash": run["config_hash"],
                "n_problems": num("n_problems", int) or 0,
                "n_samples": num("n_samples", int) or 0,
                "n_graded": num("n_graded", int) or 0,
                "accuracy": accuracy,
                "accuracy_se": se,
                "pass_at_k": pass_at_k,
                "accuracy_flex": accuracy_flex,
                "accuracy_flex_se": se_flex,
                "pass_at_k_flex": pass_at_k_flex,
                "loop_rate": num("loop_rate"),
                "truncated_rate": num("truncated_rate"),
                "mean_new_tokens": num("mean_new_tokens"),
                "kl_mean": num("kl_mean"),
                "top1_agreement": num("top1_agreement"),
                "tokens_per_s": num("tokens_per_s"),
                "kv_bytes_peak": num("kv_bytes_peak", int),
                "evictions": num("evictions"),
                "sparsity": num("sparsity"),
            })
        out.sort(key=lambda r: (r["task"], r["model"], r["method"],
                                -1 if r["budget"] is None else r["budget"], r["run_id"]))
        return out
