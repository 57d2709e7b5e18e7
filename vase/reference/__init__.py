"""The paper's published figures (VaSE, arXiv 2606.03928), kept with the project.

``paper_tables.json`` (package data) holds the numbers as the paper prints them: accuracy is
pass@1 in **percent**, at budget 4096 / residual 64 unless a budget is given. The paper names
methods and tasks its own way; the loaders here speak the project's names:

    >>> paper_accuracy("Qwen/Qwen3-4B", "aime25")["vase"]      # paper: Qwen3-4B / AIME25 / vase-attnv
    59.17

Methods the project does not implement (SeerAttention-R) keep their paper name, so an overlay can
still show them as a reference line. Nothing here imports torch or the store.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

#: paper method name -> project method name (methods not in the project keep the paper's name).
PAPER_TO_METHOD = {
    "vase-attnv": "vase",
    "vase-dkv": "vase-dkv",
    "snapkv": "snapkv",
    "rkv": "rkv",
    "cur-fixed": "cur-fixed",
    "full": "full",
    "seerattention-r": "seerattention-r",
}
#: The paper's ablation rows (its ablation tables name the authors' ``eviction_mode``s; the MATH
#: ablation in ``paper_tables.json`` names two of its own) -> the project's method labels, as
#: :func:`vase.methods.method_label` writes them, so an overlay lines them up with the runs.
ABLATION_TO_METHOD = {
    "range_sink_sample_attn": "vase",
    "var_sink_sample_attn": "vase:metric=var",
    "l2_sink_sample_attn": "vase:metric=l2",
    "range_sample_attn": "vase:n_sink=0",
    "range_attn": "range-attn",
    "attn_sample": "attn-sample",
    "attn_random": "attn-random",
    "evict_large_range": "evict-large",
    "evict-large-value": "evict-large",
    "evict-random": "random",  # the paper does not say whether its random eviction spares the sinks
}
PAPER_TO_METHOD.update({k: v for k, v in ABLATION_TO_METHOD.items() if k not in PAPER_TO_METHOD})
METHOD_TO_PAPER = {ours: paper for paper, ours in PAPER_TO_METHOD.items() if paper not in ABLATION_TO_METHOD}

#: project task name -> (name in the paper's main table, key prefix in ``accuracy_by_budget``).
TASK_TO_PAPER = {
    "aime25": ("AIME25", "aime25"),
    "aime26": ("AIME26", "aime26"),
    "gpqa-diamond": ("GPQA-Diamond", "gpqa"),
    "math500": ("MATH", "math"),
    "hmmt25": ("HMMT25", "hmmt25"),
    "livecodebench-v6-medium": ("LiveCodeBench", "livecodebench"),
}

#: The budget (and residual) of the paper's main accuracy table.
PAPER_DEFAULT_BUDGET = 4096
PAPER_DEFAULT_RESIDUAL = 64


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, Any]:
    """The whole published-figures document (parsed once)."""
    text = resources.files(__package__).joinpath("paper_tables.json").read_text(encoding="utf-8")
    return json.loads(text)


def paper_model(model: str | None) -> str | None:
    """The paper's name for ``model`` (``Qwen/Qwen3-4B``, ``qwen3-4b``, ``Qwen3-4B-AWQ`` ->
    ``Qwen3-4B``), or None when the paper has no figures for it."""
    if not model:
        return None
    tail = model.rstrip("/").split("/")[-1].lower()
    known = set(paper_tables()["accuracy"])
    known |= {key.split("/", 1)[1] for key in paper_tables().get("accuracy_by_budget", {})}
    for name in sorted(known, key=len, reverse=True):  # Qwen3-14B before Qwen3-4B... and exact first
        if tail == name.lower() or re.match(re.escape(name.lower()) + r"(\b|[-_.])", tail):
            return name
    return None


def paper_task(task: str | None) -> str | None:
    """The paper's table name for a project task (``aime25`` -> ``AIME25``), or None."""
    if not task:
        return None
    entry = TASK_TO_PAPER.get(task.lower())
    return entry[0] if entry else None


def _ours(table: dict[str, float]) -> dict[str, float]:
    return {PAPER_TO_METHOD.get(name, name): float(value) for name, value in table.items()}


def paper_accuracy(model: str | None, task: str | None) -> dict[str, float]:
    """Published pass@1 (percent) per project method name for ``model`` on ``task``, at the
    paper's default budget (4096). Empty when the paper has no such table."""
    m, t = paper_model(model), paper_task(task)
    if m is None or t is None:
        return {}
    return _ours(paper_tables()["accuracy"].get(m, {}).get(t, {}))


def paper_accuracy_by_budget(model: str | None, task: str | None) -> dict[int, dict[str, float]]:
    """Published pass@1 (percent) per budget, then per project method name. Includes the main
    table as budget 4096 when the budget sweep has no 4096 column. Empty when nothing is published."""
    m = paper_model(model)
    if m is None or not task or task.lower() not in TASK_TO_PAPER:
        return {}
    prefix = TASK_TO_PAPER[task.lower()][1]
    sweep = paper_tables().get("accuracy_by_budget", {}).get(f"{prefix}/{m}", {})
    out = {int(budget): _ours(methods) for budget, methods in sweep.items()}
    main = paper_accuracy(model, task)
    if main:
        out.setdefault(PAPER_DEFAULT_BUDGET, {})
        for method, value in main.items():
            out[PAPER_DEFAULT_BUDGET].setdefault(method, value)
    return dict(sorted(out.items()))


def paper_throughput(model: str | None) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """Published decode throughput and peak memory: ``{"output_len=16384": {budget: {method:
    {"tokens_per_s", "peak_memory_gib"}}}}`` for ``model`` (project method names)."""
    m = paper_model(model)
    if m is None:
        return {}
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for key, budgets in paper_tables().get("throughput", {}).items():
        name, _, setting = key.partition("/")
        if name != m:
            continue
        out[setting] = {
            int(b): {PAPER_TO_METHOD.get(k, k): dict(v) for k, v in methods.items()} for b, methods in budgets.items()
        }
    return out


def paper_ablation() -> dict[str, float]:
    """The paper's MATH ablation (pass@1 percent, Qwen3) per project method label."""
    return _ours(paper_tables().get("ablation_math_qwen3", {}))


def paper_source() -> str:
    return str(paper_tables().get("source", ""))


__all__ = [
    "ABLATION_TO_METHOD",
    "METHOD_TO_PAPER",
    "PAPER_DEFAULT_BUDGET",
    "PAPER_DEFAULT_RESIDUAL",
    "PAPER_TO_METHOD",
    "TASK_TO_PAPER",
    "paper_ablation",
    "paper_accuracy",
    "paper_accuracy_by_budget",
    "paper_model",
    "paper_source",
    "paper_tables",
    "paper_task",
    "paper_throughput",
]
