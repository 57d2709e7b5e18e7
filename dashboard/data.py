"""The dashboard's query layer: the only module its pages read data (and submit jobs) through.

Reads go to the results store (``vase.store.open_store`` on the configured database: the embedded
SQLite file by default, PostgreSQL in the compose stack) and to eviction traces
(``vase.traces``); job submission goes to the HTTP API (``settings.api_url``, bearer
``settings.api_token``). Pages never see SQL, a Store or an HTTP client: they get DataFrames,
dicts and small dataclasses, and every failure is a :class:`DashboardError` whose message is
written for the page.

Everything that can be cached is, keyed by the database URL (so one process serves several
databases correctly): the Store and decoded traces with ``st.cache_resource``, query results with
``st.cache_data`` and a short TTL (jobs refresh every couple of seconds, results every ten).

Big traces stay cheap: a ``full`` trace is decoded one (layer, KV head) stream at a time, and what
goes to the page is down-sampled (a heatmap of at most a few hundred x a few hundred bins, at most
a few thousand scatter points), never the raw eviction stream.

The functions work without a running Streamlit app (caches fall back to memory), so tests and
scripts can call them directly.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from vase.methods import method_label, parse_value

log = logging.getLogger("vase.dashboard")

#: Defaults for down-sampling what the explorer sends to the browser.
HEATMAP_POSITIONS = 200
HEATMAP_STEPS = 240
MAX_SCATTER_POINTS = 6000
MAX_CURVE_POINTS = 400
#: The value-magnitude histograms of a trace summary (vase.traces.magnitude_histogram): log bins,
#: 32 per decade from 1e-6 to 1e6, as recorded.
MAG_BINS_PER_DECADE = 32
API_TIMEOUT_S = 10.0


# ------------------------------------------------------------------------------------------------
# Errors the pages explain
# ------------------------------------------------------------------------------------------------
class DashboardError(Exception):
    """Something the page should explain in words (the message is meant for the user)."""


class StoreDown(DashboardError):
    """The results database cannot be reached."""


class NotFound(DashboardError):
    """A job, run, sample or trace that does not exist (any more)."""


class ApiUnavailable(DashboardError):
    """The HTTP API cannot be reached (or refused us)."""


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
def _settings():
    from vase.config import get_settings

    return get_settings()


def database_url() -> str:
    """The configured database (``VASE_DATABASE_URL``, else the embedded SQLite file)."""
    return _settings().resolved_database_url


def database_label() -> str:
    """The database URL with any password hidden, for display."""
    from vase.config import redact_url

    return redact_url(database_url())


def api_url() -> str:
    return _settings().api_url.rstrip("/")


# ------------------------------------------------------------------------------------------------
# The store
# ------------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def _open(url: str):
    from vase.store import open_store

    return open_store(url)


def _down(error: Exception) -> StoreDown:
    return StoreDown(
        f"The results database ({database_label()}) is not reachable: {str(error).splitlines()[0][:300]}. "
        "Check VASE_DATABASE_URL, or start the database (the compose stack, or `scripts/test.sh` locally)."
    )


def _store(url: str | None = None):
    from vase.store import StoreError

    try:
        return _open(url or database_url())
    except StoreError as error:
        raise _down(error) from error
    except Exception as error:  # bad URL, missing driver, failed migration
        raise StoreDown(f"Cannot open the results database ({database_label()}): {error}") from error


def _q(fn, *args, **kwargs):
    """Call a store method, turning an unreachable database into :class:`StoreDown`."""
    from vase.store import StoreError

    try:
        return fn(*args, **kwargs)
    except StoreError as error:
        raise _down(error) from error


def clear_caches() -> None:
    """Forget cached query results (after a job was submitted, or on the user's request)."""
    for fn in (_jobs, _results, _runs, _samples, _sample, _trace_meta):
        fn.clear()


def ping() -> bool:
    """True if the database answers (raises :class:`StoreDown` otherwise)."""
    s = _store()
    return _q(s.ping)


# ------------------------------------------------------------------------------------------------
# Jobs
# ------------------------------------------------------------------------------------------------
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


@st.cache_data(ttl=2, show_spinner=False, max_entries=64)
def _jobs(url: str, status: tuple[str, ...] | None, limit: int) -> tuple[pd.DataFrame, int]:
    s = _store(url)
    rows, total = _q(s.list_jobs, status=list(status) if status else None, limit=limit)
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
    s = _store()
    found = _q(s.get_job, job_id)
    if found is None:
        raise NotFound(f"Job {job_id} does not exist (it may have been deleted).")
    return found


# ------------------------------------------------------------------------------------------------
# Results (the comparison table)
# ------------------------------------------------------------------------------------------------
RESULT_COLUMNS = [
    "task",
    "model",
    "method",
    "budget",
    "accuracy",
    "accuracy_se",
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
    "residual",
    "source",
    "method_name",
    "params",
    "trace_level",
    "fidelity",
    "run_id",
    "job_id",
]


def _pct(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


@st.cache_data(ttl=10, show_spinner=False, max_entries=64)
def _results(url: str, job_id: str | None) -> pd.DataFrame:
    s = _store(url)
    rows = _q(s.results, job_id=job_id)
    out = []
    for r in rows:
        pak = r.get("pass_at_k") or {}
        out.append(
            {
                "task": r["task"],
                "model": r["model"],
                "method": method_label(r["method"], r.get("params") or {}),
                "budget": r["budget"],
                "accuracy": _pct(r["accuracy"]),
                "accuracy_se": _pct(r["accuracy_se"]),
                "loop_rate": _pct(r["loop_rate"]),
                "kl_mean": r["kl_mean"],
                "top1_agreement": _pct(r["top1_agreement"]),
                "tokens_per_s": r["tokens_per_s"],
                "kv_mib": None if r["kv_bytes_peak"] is None else r["kv_bytes_peak"] / 2**20,
                "n_problems": r["n_problems"],
                "n_samples": r["n_samples"],
                "truncated_rate": _pct(r["truncated_rate"]),
                "mean_new_tokens": r["mean_new_tokens"],
                "evictions": r["evictions"],
                "sparsity": r["sparsity"],
                "pass_at_k": ", ".join(
                    f"@{k}: {100 * v:.1f}" for k, v in sorted(pak.items(), key=lambda kv: int(kv[0]))
                ),
                "residual": r["residual"],
                "source": "CLI" if r.get("job_id") is None else f"job {str(r['job_id'])[:8]}",
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

    Rates (accuracy, its standard error, loop rate, top-1 agreement, truncation) are in percent;
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


def export_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def export_json(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records", indent=2).encode("utf-8")


# ------------------------------------------------------------------------------------------------
# The paper's published figures
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Runs and samples
# ------------------------------------------------------------------------------------------------
@st.cache_data(ttl=10, show_spinner=False, max_entries=64)
def _runs(url: str, task: str | None, model: str | None, job_id: str | None) -> pd.DataFrame:
    s = _store(url)
    rows = _q(s.list_runs, task=task, model=model, job_id=job_id)
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
            "source": "CLI" if r["job_id"] is None else f"job {str(r['job_id'])[:8]}",
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
    "grade_status",
    "extracted",
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


@st.cache_data(ttl=10, show_spinner=False, max_entries=128)
def _samples(
    url: str, run_ids: tuple[int, ...], problem_id: str | None, correct: bool | None, limit: int
) -> pd.DataFrame:
    s = _store(url)
    out = []
    for run_id in run_ids:
        for smp in _q(
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
                    "grade_status": smp["grade_status"],
                    "extracted": smp["extracted"],
                    "answer": None if metrics.get("answer") is None else str(metrics["answer"]),
                    "new_tokens": smp["new_tokens"],
                    "truncated": smp["truncated"],
                    "loop_detected": smp["loop_detected"],
                    "loop_start": smp["loop_start"],
                    "kl_mean": smp["kl_mean"],
                    "top1_agreement": _pct(smp["top1_agreement"]),
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


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _sample(url: str, sample_id: int) -> dict[str, Any] | None:
    s = _store(url)
    smp = _q(s.get_sample, int(sample_id))
    if smp is None:
        return None
    smp["run"] = _q(s.get_run, int(smp["run_id"]))
    return smp


def sample(sample_id: int) -> dict[str, Any]:
    """The stored sample (all columns, texts, ``metrics``, ``trace`` info) with its ``run``."""
    smp = _sample(database_url(), int(sample_id))
    if smp is None:
        raise NotFound(f"Sample {sample_id} does not exist (it may have been deleted).")
    return smp


def verdict_symbol(correct: Any) -> str:
    """✓ correct, ✗ wrong, · not graded."""
    if correct is None or (isinstance(correct, float) and math.isnan(correct)) or correct is pd.NA:
        return "·"
    return "✓" if bool(correct) else "✗"


def sample_label(row: Any, run: Any | None = None) -> str:
    verdict = verdict_symbol(row["correct"])
    loop = " · loop" if bool(row["loop_detected"]) else ""
    head = f"{run['method']} @ {'full' if pd.isna(run['budget']) else int(run['budget'])} · " if run is not None else ""
    return f"#{int(row['sample_id'])} · {head}{row['problem_id']} [{int(row['sample_index'])}] {verdict}{loop}"


def reference_sample_id(sample_id: int) -> int | None:
    """The full-cache sample of the same grid (same scope, task, model), problem and sample index:
    what fidelity compared against. None if there is none."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    if run.get("method") == "full":
        return None
    s = _store()
    for ref in _q(s.list_runs, scope=run.get("scope"), task=run.get("task"), model=run.get("model"), method="full"):
        if ref.get("generation") not in (None, {}, run.get("generation")):
            continue
        for cand in _q(s.list_samples, run_id=ref["id"], problem_id=smp["problem_id"], include_text=False):
            if int(cand["sample_index"]) == int(smp["sample_index"]):
                return int(cand["id"])
    return None


def same_prompt_samples(sample_id: int) -> pd.DataFrame:
    """Other samples of the same task, model, problem and sample index (other methods and budgets:
    the same prompt), with a ``label`` column; those with a ``full`` trace first."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    all_runs = runs(task=run.get("task"), model=run.get("model"))
    others = all_runs[all_runs["run_id"] != int(smp["run_id"])]
    if others.empty:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, "label"])
    frame = samples(tuple(others["run_id"]), problem_id=smp["problem_id"])
    frame = frame[frame["sample_index"] == smp["sample_index"]]
    by_run = others.set_index("run_id")
    frame = frame.assign(
        label=[sample_label(r, by_run.loc[r["run_id"]]) for _, r in frame.iterrows()],
        has_trace=frame["trace_level"] == "full",
    )
    return frame.sort_values(["has_trace", "sample_id"], ascending=[False, True]).drop(columns="has_trace")


# ------------------------------------------------------------------------------------------------
# Token text
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenTexts:
    """Text of every original position of a sample: the prompt's tokens, then the generated ones."""

    prompt: list[str]
    generated: list[str]
    available: bool
    note: str = ""

    @property
    def all(self) -> list[str]:
        return self.prompt + self.generated

    def text(self, start: int, stop: int) -> str:
        """Concatenated text of positions [start, stop)."""
        p = len(self.prompt)
        parts = self.prompt[max(0, start) : min(stop, p)] + self.generated[max(0, start - p) : max(0, stop - p)]
        return "".join(parts)

    def at(self, position: int) -> str:
        p = len(self.prompt)
        if 0 <= position < p:
            return self.prompt[position]
        if 0 <= position - p < len(self.generated):
            return self.generated[position - p]
        return ""


def _tokenizer_file(model_id: str) -> Path | None:
    from vase.config import get_settings

    if model_id.startswith("embedded:"):
        path = get_settings().models_dir / model_id.split(":", 1)[1] / "tokenizer.json"
        if not path.exists():
            try:  # the first use on this machine converts the embedded model (about 20 s)
                from vase.models import ensure_embedded_cache

                ensure_embedded_cache()
            except Exception as error:  # pragma: no cover
                log.warning("embedded tokenizer unavailable: %s", error)
        return path if path.exists() else None
    local = Path(model_id).expanduser()
    if (local / "tokenizer.json").exists():
        return local / "tokenizer.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "tokenizer.json")
        return Path(found) if isinstance(found, str) else None
    except Exception:
        return None


@st.cache_resource(show_spinner=False, max_entries=8)
def _tokenizer(model_id: str):
    """A fast ``tokenizers.Tokenizer`` for the model (no torch, no network), or None."""
    path = _tokenizer_file(model_id)
    if path is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


@st.cache_resource(show_spinner=False, max_entries=16)
def _token_texts(url: str, sample_id: int) -> TokenTexts:
    smp = _sample(url, sample_id)
    if smp is None:
        raise NotFound(f"Sample {sample_id} does not exist.")
    metrics = smp.get("metrics") or {}
    ids = [int(t) for t in metrics.get("tokens") or []]
    n_prompt = metrics.get("prompt_tokens")
    model = (smp.get("run") or {}).get("model") or ""
    tok = _tokenizer(model) if model else None
    if tok is None:
        return TokenTexts(
            [""] * int(n_prompt or 0),
            [""] * len(ids),
            False,
            f"No tokenizer for {model or 'this model'} on this machine: positions are shown without text.",
        )
    generated = tok.decode_batch([[i] for i in ids], skip_special_tokens=False) if ids else []
    prompt_ids = tok.encode(smp.get("prompt") or "", add_special_tokens=False).ids
    prompt = tok.decode_batch([[i] for i in prompt_ids], skip_special_tokens=False) if prompt_ids else []
    note = ""
    if n_prompt is not None and len(prompt) != int(n_prompt):
        note = (
            f"The prompt re-tokenizes to {len(prompt)} tokens, the run saw {n_prompt}: prompt token text may be "
            "off by a few positions."
        )
        prompt = (prompt + [""] * int(n_prompt))[: int(n_prompt)]
    return TokenTexts(prompt, generated, True, note)


def token_texts(sample_id: int) -> TokenTexts:
    """The text of each position of the sample (prompt tokens, then generated tokens), decoded
    with the model's tokenizer (read from its local ``tokenizer.json``; cached per sample)."""
    return _token_texts(database_url(), int(sample_id))


def _shown(text: str, limit: int = 60) -> str:
    text = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------
# The Sample page
# ------------------------------------------------------------------------------------------------
@dataclass
class SampleView:
    sample: dict[str, Any]
    run: dict[str, Any]
    method: str
    tokens: list[str]  # generated tokens' text ([] without a tokenizer)
    loop_start: int | None  # generated-token index where the loop begins
    loop_char: int | None  # character offset of the loop in ``output`` (approximate, from token text)
    reference: dict[str, Any] | None  # the full-cache sample (output, tokens, id) when there is one
    divergence_char: int | None  # where the output leaves the full-cache output (characters)
    kl_per_token: list[float] = field(default_factory=list)
    reference_tokens: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sample_view(sample_id: int) -> SampleView:
    """Everything the Sample page shows: texts, the verdict, the loop and the fidelity data."""
    smp = sample(sample_id)
    run = smp.get("run") or {}
    metrics = smp.get("metrics") or {}
    texts = token_texts(sample_id)
    notes = [texts.note] if texts.note else []
    gen = texts.generated if texts.available else []
    loop_start = smp.get("loop_start")
    loop_char = None
    output = smp.get("output") or ""
    if loop_start is not None and gen:
        loop_char = _char_offset(output, gen, int(loop_start))
    ref = None
    divergence_char = None
    ref_tokens: list[str] = []
    ref_id = reference_sample_id(sample_id)
    if ref_id is not None:
        r = sample(ref_id)
        ref = {"id": ref_id, "output": r.get("output") or "", "tokens": (r.get("metrics") or {}).get("tokens") or []}
        ref_texts = token_texts(ref_id)
        ref_tokens = ref_texts.generated if ref_texts.available else []
        fd = smp.get("first_divergence")
        if fd is not None and gen:
            divergence_char = _char_offset(output, gen, int(fd))
    return SampleView(
        sample=smp,
        run=run,
        method=method_label(run.get("method", "?"), run.get("params") or {}),
        tokens=gen,
        loop_start=None if loop_start is None else int(loop_start),
        loop_char=loop_char,
        reference=ref,
        divergence_char=divergence_char,
        kl_per_token=[float(x) for x in metrics.get("kl_per_token") or []],
        reference_tokens=ref_tokens,
        notes=notes,
    )


def _char_offset(output: str, token_texts_: list[str], index: int) -> int:
    """Character offset in ``output`` where generated token ``index`` begins (token texts are
    decoded one by one, so the prefix is matched against the output when they disagree)."""
    prefix = "".join(token_texts_[:index])
    if output.startswith(prefix):
        return len(prefix)
    # special tokens or merged bytes make the concatenation differ: fall back to the proportion
    total = max(1, len("".join(token_texts_)))
    return min(len(output), round(len(output) * len(prefix) / total))


# ------------------------------------------------------------------------------------------------
# Traces: the cache explorer
# ------------------------------------------------------------------------------------------------
@st.cache_data(ttl=60, show_spinner=False, max_entries=64)
def _trace_meta(url: str, sample_id: int) -> dict[str, Any] | None:
    s = _store(url)
    return _q(s.get_trace, int(sample_id), with_data=False)


@st.cache_resource(show_spinner=False, max_entries=8)
def _reader(url: str, sample_id: int):
    from vase.traces import TraceReader

    s = _store(url)
    trace = _q(s.get_trace, int(sample_id), with_data=True)
    if trace is None or trace.get("level") != "full" or not trace.get("data"):
        return None
    return TraceReader(trace["data"])


@dataclass(frozen=True)
class TraceInfo:
    level: str  # off | summary | full
    encoding: str | None
    num_layers: int
    num_kv_heads: int
    prompt_length: int
    n_steps: int
    n_events: int
    n_evicted: int
    nbytes: int
    magnitudes: pd.DataFrame  # per layer: kept/evicted n, mean, p50, p99, max
    # per layer: the kept/evicted value-magnitude histograms (HISTOGRAM_COLUMNS), from the first to
    # the last non-empty bin; empty for traces recorded before trace summaries kept histograms
    histograms: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HISTOGRAM_COLUMNS))

    @property
    def has_full(self) -> bool:
        return self.level == "full"

    def histogram(self, layer: int, per_decade: int = MAG_BINS_PER_DECADE) -> pd.DataFrame:
        """The kept and evicted histograms of one layer (HISTOGRAM_COLUMNS; empty when the trace has
        none), re-binned to ``per_decade`` bins per decade (a divisor of 32, the recorded resolution)."""
        h = self.histograms
        if not len(h):
            return h
        h = h[h["layer"] == int(layer)].reset_index(drop=True)
        if h.empty or per_decade >= MAG_BINS_PER_DECADE:
            return h
        return _coarsen(h, int(per_decade))


MAGNITUDE_COLUMNS = ["layer", "group", "n", "mean", "p50", "p99", "max"]
#: A bin holds the magnitudes in (bin_lo, bin_hi]; share = count / the group's tokens in the layer.
#: Bins run over the range the trace saw, empty ones inside it included.
HISTOGRAM_COLUMNS = ["layer", "group", "bin_lo", "bin_hi", "count", "share"]


def _coarsen(h: pd.DataFrame, per_decade: int) -> pd.DataFrame:
    """Merge the recorded log bins (1e-6 .. 1e6, 32 per decade, plus the two open-ended ones) into
    ``per_decade`` bins per decade on the same grid; the open-ended bins stay as they are."""
    if per_decade < 1 or MAG_BINS_PER_DECADE % per_decade:
        raise ValueError(f"per_decade must divide {MAG_BINS_PER_DECADE}, got {per_decade}")
    factor = MAG_BINS_PER_DECADE // per_decade
    n_regular = 12 * MAG_BINS_PER_DECADE
    k = np.rint((np.log10(h["bin_hi"].to_numpy(float)) + 6.0) * MAG_BINS_PER_DECADE).astype(np.int64)
    regular = (k >= 1) & (k <= n_regular)
    g = (k - 1) // factor
    lo = np.where(regular, 10.0 ** (g * factor / MAG_BINS_PER_DECADE - 6.0), h["bin_lo"].to_numpy(float))
    hi = np.where(
        regular,
        10.0 ** (np.minimum((g + 1) * factor, n_regular) / MAG_BINS_PER_DECADE - 6.0),
        h["bin_hi"].to_numpy(float),
    )
    out = (
        h.assign(bin_lo=lo, bin_hi=hi)
        .groupby(["layer", "group", "bin_lo", "bin_hi"], sort=False, as_index=False)[["count", "share"]]
        .sum()
        .sort_values(["group", "bin_lo"], kind="stable")
        .reset_index(drop=True)
    )
    return out[HISTOGRAM_COLUMNS]


def _histograms(layers: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-layer kept/evicted histograms of a trace summary as one long frame."""
    from vase.traces import magnitude_histogram

    parts = []
    for layer in layers:
        for group, key in (("kept", "kept_magnitude"), ("evicted", "evicted_magnitude")):
            try:
                lo, hi, counts = magnitude_histogram(layer.get(key))
            except (ValueError, TypeError, AttributeError) as e:
                log.warning("trace layer %s: unreadable %s histogram (%s)", layer.get("layer"), group, e)
                continue
            total = int(counts.sum())
            if total <= 0:
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "layer": layer.get("layer"),
                        "group": group,
                        "bin_lo": lo,
                        "bin_hi": hi,
                        "count": counts,
                        "share": counts / total,
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=HISTOGRAM_COLUMNS)
    return pd.concat(parts, ignore_index=True)[HISTOGRAM_COLUMNS]


def trace_info(sample_id: int) -> TraceInfo:
    """What the sample's trace holds; ``level`` "off" when it has none."""
    meta_row = _trace_meta(database_url(), int(sample_id))
    if meta_row is None:
        return TraceInfo("off", None, 0, 0, 0, 0, 0, 0, 0, pd.DataFrame(columns=MAGNITUDE_COLUMNS))
    meta = meta_row.get("meta") or {}
    mags = []
    for layer in meta.get("layers") or []:
        for group, key in (("kept", "kept_magnitude"), ("evicted", "evicted_magnitude")):
            stats = layer.get(key) or {}
            mags.append(
                {"layer": layer.get("layer"), "group": group, **{k: stats.get(k) for k in MAGNITUDE_COLUMNS[2:]}}
            )
    n_steps = meta.get("n_steps")
    reader = _reader(database_url(), int(sample_id)) if meta_row.get("level") == "full" else None
    if reader is not None:
        n_steps = reader.n_steps
    return TraceInfo(
        level=meta_row.get("level") or "off",
        encoding=meta_row.get("encoding"),
        num_layers=int(meta.get("num_layers") or (reader.num_layers if reader else 0)),
        num_kv_heads=int(meta.get("num_kv_heads") or (reader.num_kv_heads if reader else 0)),
        prompt_length=int(meta.get("prompt_length") or (reader.prompt_length if reader else 0)),
        n_steps=int(n_steps or 0),
        n_events=int(meta_row.get("n_events") or 0),
        n_evicted=int(meta_row.get("n_evicted") or 0),
        nbytes=int(meta_row.get("nbytes") or 0),
        magnitudes=pd.DataFrame(mags, columns=MAGNITUDE_COLUMNS),
        histograms=_histograms(meta.get("layers") or []),
    )


@dataclass
class Explorer:
    """The down-sampled picture of one (layer, KV head) of one sample's trace."""

    sample_id: int
    layer: int
    head: int
    prompt_length: int
    n_steps: int
    residual: int
    # heatmap: fraction kept per (position bin, step bin); NaN = not written yet
    heat: np.ndarray
    position_edges: np.ndarray
    step_edges: np.ndarray
    row_labels: list[str]  # one per position bin: "a–b │ text"
    # survival of each position (down-sampled): position, evicted-at step (-1 never), token text
    life: pd.DataFrame
    # Kaplan-Meier survival by age (steps since the token was written), prompt vs generated tokens
    km: pd.DataFrame
    # eviction timeline (down-sampled): step, position, age, token text
    timeline: pd.DataFrame
    # per event: step, evicted count, median age of the evicted
    events: pd.DataFrame
    held_at_end: int
    n_evicted: int
    loop_step: int | None
    tokens_note: str = ""


def explorer(
    sample_id: int,
    layer: int,
    head: int,
    *,
    max_positions: int = HEATMAP_POSITIONS,
    max_steps: int = HEATMAP_STEPS,
    max_points: int = MAX_SCATTER_POINTS,
) -> Explorer:
    """The cache explorer's data for (layer, KV head) of a sample with a ``full`` trace."""
    return _explorer(
        database_url(), int(sample_id), int(layer), int(head), int(max_positions), int(max_steps), int(max_points)
    )


@st.cache_resource(show_spinner=False, max_entries=32)
def _explorer(
    url: str, sample_id: int, layer: int, head: int, max_positions: int, max_steps: int, max_points: int
) -> Explorer:
    reader = _reader(url, sample_id)
    if reader is None:
        raise NotFound(f"Sample {sample_id} has no full eviction trace (run the bench with `--trace full`).")
    if not (0 <= layer < reader.num_layers and 0 <= head < reader.num_kv_heads):
        raise DashboardError(
            f"Layer {layer} / KV head {head} is outside this trace "
            f"({reader.num_layers} layers x {reader.num_kv_heads} KV heads)."
        )
    P, S = reader.prompt_length, reader.n_steps
    n_pos = P + S
    death = reader.eviction_steps(layer, head)[:n_pos]
    if death.size < n_pos:
        death = np.concatenate([death, np.full(n_pos - death.size, -1, np.int64)])
    sm = reader.survival_matrix(layer, head, max_positions=max_positions, max_steps=max_steps)
    texts = _token_texts(url, sample_id)
    edges = sm.position_edges
    labels = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        span = f"{a}" if b - a == 1 else f"{a}–{b - 1}"
        snippet = _shown(texts.text(int(a), int(b)), 48) if texts.available else ""
        labels.append(f"{span} │ {snippet}" if snippet else span)

    positions = np.arange(n_pos, dtype=np.int64)
    birth = np.where(positions < P, 0, positions - P + 1)
    pick = _stride(n_pos, max_points)
    life = pd.DataFrame(
        {
            "position": positions[pick],
            "evicted_at": death[pick],
            "lifetime": np.where(death[pick] >= 0, death[pick] - birth[pick], S - birth[pick]),
            "origin": np.where(positions[pick] < P, "prompt", "generated"),
            "text": [_shown(texts.at(int(p)), 24) for p in positions[pick]] if texts.available else "",
        }
    )

    evicted = death >= 0
    dur = np.where(evicted, death - birth, S - birth).clip(min=0)
    km_parts = []
    for origin, sel in (("prompt", positions < P), ("generated", positions >= P)):
        ages, surv = _kaplan_meier(dur[sel], evicted[sel])
        if ages.size:
            km_parts.append(pd.DataFrame({"age": ages, "survival": surv, "origin": origin}))
    km = pd.concat(km_parts, ignore_index=True) if km_parts else pd.DataFrame(columns=["age", "survival", "origin"])

    tl = reader.timeline(layer, head)
    counts = np.diff(tl.offsets)
    ev_steps = np.repeat(tl.steps, counts)
    ev_pos = tl.positions
    ev_age = ev_steps - np.where(ev_pos < P, 0, ev_pos - P + 1)
    pick_ev = _stride(ev_pos.size, max_points)
    timeline = pd.DataFrame(
        {
            "step": ev_steps[pick_ev],
            "position": ev_pos[pick_ev],
            "age": ev_age[pick_ev],
            "origin": np.where(ev_pos[pick_ev] < P, "prompt", "generated"),
            "text": [_shown(texts.at(int(p)), 24) for p in ev_pos[pick_ev]] if texts.available else "",
        }
    )
    bounds = zip(tl.offsets[:-1], tl.offsets[1:], strict=True)
    med_age = np.array([np.median(ev_age[a:b]) if b > a else np.nan for a, b in bounds])
    events = pd.DataFrame({"step": tl.steps, "evicted": counts, "median_age": med_age})

    smp = _sample(url, sample_id) or {}
    loop_start = smp.get("loop_start")
    return Explorer(
        sample_id=sample_id,
        layer=layer,
        head=head,
        prompt_length=P,
        n_steps=S,
        residual=reader.residual,
        heat=sm.values,
        position_edges=sm.position_edges,
        step_edges=sm.step_edges,
        row_labels=labels,
        life=life,
        km=km,
        timeline=timeline,
        events=events,
        held_at_end=int(n_pos - evicted.sum()),
        n_evicted=int(evicted.sum()),
        loop_step=None if loop_start is None else int(loop_start) + 1,
        tokens_note=texts.note if texts.available else (texts.note or "No token text available."),
    )


def _stride(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices spread evenly over range(n) (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _kaplan_meier(
    durations: np.ndarray, observed: np.ndarray, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit estimate of P(a token survives more than ``age`` steps), down-sampled."""
    d = np.asarray(durations, dtype=np.int64)
    if d.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    T = int(d.max()) + 1
    leaving = np.bincount(d, minlength=T)
    at_risk = d.size - np.concatenate([[0], np.cumsum(leaving)[:-1]])
    deaths = np.bincount(d[np.asarray(observed, bool)], minlength=T)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(at_risk > 0, deaths / np.maximum(at_risk, 1), 0.0)
    surv = np.cumprod(1.0 - hazard)
    pick = _stride(T, max_points)
    return pick, surv[pick]


@dataclass(frozen=True)
class PositionDetail:
    position: int
    step: int
    text: str
    origin: str
    evicted_at: int | None
    context: pd.DataFrame  # position, text, state (held | evicted | not written) at ``step``
    heads: pd.DataFrame  # per KV head of the layer: evicted_at (None if never)


def position_detail(
    sample_id: int, layer: int, head: int, position: int, step: int, radius: int = 24
) -> PositionDetail:
    """The tokens around ``position`` and whether (layer, head) held each of them after ``step``,
    and when every KV head of the layer evicted ``position``."""
    url = database_url()
    reader = _reader(url, int(sample_id))
    if reader is None:
        raise NotFound(f"Sample {sample_id} has no full eviction trace.")
    P, S = reader.prompt_length, reader.n_steps
    n_pos = P + S
    position = int(min(max(0, position), max(0, n_pos - 1)))
    step = int(min(max(0, step), S))
    texts = _token_texts(url, int(sample_id))
    death = reader.eviction_steps(layer, head)
    lo, hi = max(0, position - radius), min(n_pos, position + radius + 1)
    rows = []
    for p in range(lo, hi):
        written = p < P + step
        d = int(death[p]) if p < death.size else -1
        state = "not written" if not written else ("evicted" if 0 <= d <= step else "held")
        rows.append({"position": p, "text": texts.at(p), "state": state, "evicted_at": None if d < 0 else d})
    heads = []
    for h in range(reader.num_kv_heads):
        d = reader.eviction_steps(layer, h)
        v = int(d[position]) if position < d.size else -1
        heads.append({"kv_head": h, "evicted_at": None if v < 0 else v})
    d0 = int(death[position]) if position < death.size else -1
    context = pd.DataFrame(rows, columns=["position", "text", "state", "evicted_at"])
    context["evicted_at"] = context["evicted_at"].astype("Int64")
    heads_frame = pd.DataFrame(heads, columns=["kv_head", "evicted_at"])
    heads_frame["evicted_at"] = heads_frame["evicted_at"].astype("Int64")
    return PositionDetail(
        position=position,
        step=step,
        text=texts.at(position),
        origin="prompt" if position < P else "generated",
        evicted_at=None if d0 < 0 else d0,
        context=context,
        heads=heads_frame,
    )


def held_overlap(sample_a: int, sample_b: int, layer: int, head: int, points: int = 60) -> pd.DataFrame:
    """How alike two samples' caches are over time for (layer, head): per decode step, the
    positions both held, only A, only B, and the Jaccard index. Steps run over the shorter sample."""
    url = database_url()
    ra, rb = _reader(url, int(sample_a)), _reader(url, int(sample_b))
    if ra is None or rb is None:
        raise NotFound("Both samples need a full eviction trace to be compared.")
    if ra.prompt_length != rb.prompt_length:
        raise DashboardError(
            f"The two samples do not share a prompt ({ra.prompt_length} vs "
            f"{rb.prompt_length} prompt tokens): their caches are not comparable."
        )
    if not (layer < min(ra.num_layers, rb.num_layers) and head < min(ra.num_kv_heads, rb.num_kv_heads)):
        raise DashboardError("The two traces have different layer/head geometry.")
    P, S = ra.prompt_length, min(ra.n_steps, rb.n_steps)
    da, db = ra.eviction_steps(layer, head), rb.eviction_steps(layer, head)
    n = P + S
    da = np.concatenate([da, np.full(max(0, n - da.size), -1)])[:n]
    db = np.concatenate([db, np.full(max(0, n - db.size), -1)])[:n]
    rows = []
    for t in np.unique(np.linspace(0, S, min(points, S + 1)).round().astype(int)):
        end = P + int(t)
        ha = (da[:end] < 0) | (da[:end] > t)
        hb = (db[:end] < 0) | (db[:end] > t)
        both, only_a, only_b = int((ha & hb).sum()), int((ha & ~hb).sum()), int((~ha & hb).sum())
        union = both + only_a + only_b
        rows.append(
            {
                "step": int(t),
                "both": both,
                "only_a": only_a,
                "only_b": only_b,
                "jaccard": both / union if union else 1.0,
            }
        )
    return pd.DataFrame(rows, columns=["step", "both", "only_a", "only_b", "jaccard"])


def trace_samples(task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Runs that recorded traces (any level), for the explorer's pickers."""
    frame = runs(task=task, model=model)
    return frame[frame["trace_level"] != "off"].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# The API (job submission)
# ------------------------------------------------------------------------------------------------
@dataclass
class SubmitResult:
    ok: bool
    job_id: str | None = None
    status_code: int | None = None
    field_errors: dict[str, str] = field(default_factory=dict)  # form field -> message
    message: str = ""  # errors that name no field (or a summary)


#: Fields of the job form, named as in the API's job body (``api.schemas.JobCreate``; the sampling
#: fields live under ``generation`` there): errors for them are shown next to the field.
FORM_FIELDS = (
    "task",
    "model",
    "limit",
    "task_seed",
    "methods",
    "budgets",
    "residual",
    "samples",
    "seeds",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "fidelity",
    "trace",
    "attention_backend",
    "queue",
    "chunk_size",
)

#: Other names an error may use for a form field (InvalidParameter names, BenchSpec names, CLI flags).
FIELD_ALIASES = {
    "budget": "budgets",
    "method": "methods",
    "max-new-tokens": "max_new_tokens",
    "task-seed": "task_seed",
    "top-p": "top_p",
    "top-k": "top_k",
    "do-sample": "do_sample",
    "seed": "seeds",
    "model_id": "model",
    "param": "methods",
    "sample": "samples",
    "attention": "attention_backend",
}


def _headers() -> dict[str, str]:
    token = _settings().api_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client():
    import httpx

    return httpx.Client(base_url=api_url(), timeout=API_TIMEOUT_S, headers=_headers())


def _api_error(error: Exception) -> ApiUnavailable:
    import httpx

    if isinstance(error, httpx.ConnectError):
        why = "connection refused"
    elif isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    else:
        why = str(error) or type(error).__name__
    return ApiUnavailable(
        f"The vase API at {api_url()} is not reachable ({why}). Start it (`vase serve`, or the compose stack) "
        "or set VASE_API_URL. Results and jobs already in the database are still shown."
    )


def _get(path: str) -> Any:
    import httpx

    try:
        with _client() as client:
            response = client.get(path)
    except httpx.HTTPError as error:
        raise _api_error(error) from error
    if response.status_code in (401, 403):
        raise ApiUnavailable(
            f"The API at {api_url()} refused the request ({response.status_code}): set VASE_API_TOKEN to a valid token."
        )
    if response.status_code >= 400:
        raise ApiUnavailable(f"The API answered {response.status_code} to GET {path}: {_detail_text(response)}")
    try:
        return response.json()
    except ValueError as error:
        raise ApiUnavailable(f"The API answered GET {path} with something that is not JSON.") from error


def _listing(payload: Any, *keys: str) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in (*keys, "items", "data", "results"):
            if isinstance(payload.get(key), list):
                return payload[key]
    return []


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _api_methods(base: str) -> list[dict[str, Any]]:
    out = []
    for m in _listing(_get("/v1/methods"), "methods"):
        if isinstance(m, str):
            m = {"name": m}
        if isinstance(m, dict) and m.get("name"):
            params = m.get("params") or m.get("parameters") or {}
            if isinstance(params, list):  # [{"name", "default", ...}]
                params = {p.get("name"): p.get("default") for p in params if isinstance(p, dict) and p.get("name")}
            elif isinstance(params, dict):  # {"n_large": {"default": None, "type": ...}} or {"n_large": None}
                params = {
                    k: (v.get("default") if isinstance(v, dict) and "default" in v else v) for k, v in params.items()
                }
            out.append(
                {
                    "name": m["name"],
                    "kind": m.get("kind", ""),
                    "params": dict(params),
                    "description": m.get("description", ""),
                }
            )
    return out


def api_methods() -> list[dict[str, Any]]:
    """``GET /v1/methods``: [{name, kind, params (defaults), description}] (raises ApiUnavailable)."""
    return _api_methods(api_url())


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _api_tasks(base: str) -> list[dict[str, Any]]:
    out = []
    for t in _listing(_get("/v1/tasks"), "tasks"):
        if isinstance(t, str):
            t = {"name": t}
        if isinstance(t, dict) and t.get("name"):
            out.append(
                {
                    "name": t["name"],
                    "offline": t.get("offline"),
                    "size": t.get("size"),
                    "description": t.get("description", ""),
                }
            )
    return out


def api_tasks() -> list[dict[str, Any]]:
    """``GET /v1/tasks``: [{name, offline, size, description}] (raises ApiUnavailable)."""
    return _api_tasks(api_url())


def api_status() -> tuple[bool, str]:
    """(reachable, message) for the API; never raises."""
    try:
        methods = api_methods()
    except DashboardError as error:
        return False, str(error)
    return True, f"API at {api_url()}: {len(methods)} methods available."


def _field_of(path: Any) -> tuple[str, str | None]:
    """(form field, "method index:param" or None) for an error location: a FastAPI ``loc`` list
    (``["body", "methods", 1, "params", "n_large"]``) or a body path (``methods[1].params.n_large``,
    ``generation.temperature``, ``budgets[0]``)."""
    if isinstance(path, str):
        parts: list[Any] = [p for p in re.split(r"[.\[\]]+", path) if p]
    else:
        parts = list(path or [])
    parts = [p for p in parts if p not in ("body", "query", "path")]
    if not parts:
        return "", None
    if str(parts[0]) == "generation" and len(parts) > 1:
        parts = parts[1:]
    head = str(parts[0])
    head = FIELD_ALIASES.get(head, head)
    if head == "methods" and len(parts) >= 4 and str(parts[2]) == "params":
        return head, f"{parts[1]}:{parts[3]}"
    return head, None


def _detail_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "")[:300]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_field_of(d.get("loc"))[0] + ": " + str(d.get("msg")) for d in detail if isinstance(d, dict))
    return json.dumps(body)[:300]


def _parse_errors(status: int, body: Any, payload: dict[str, Any]) -> SubmitResult:
    """Map an error body to form fields. Understands the API's ``{"error", "message", "errors":
    [{"field", "rule", ...}]}``, FastAPI's ``{"detail": [{"loc", "msg"}]}`` and ``{"detail": "..."}``."""
    result = SubmitResult(ok=False, status_code=status)
    items: list[tuple[Any, str]] = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        for e in body["errors"]:
            if isinstance(e, dict):
                items.append(
                    (
                        e.get("field") or e.get("loc"),
                        str(e.get("rule") or e.get("msg") or e.get("message") or "invalid"),
                    )
                )
        if not items and body.get("message"):
            result.message = str(body["message"])
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, dict):  # {"detail": {"field": ..., "message": ...}}
        items.append(
            (
                detail.get("field") or detail.get("loc") or detail.get("param"),
                str(detail.get("message") or detail.get("msg") or detail.get("rule") or json.dumps(detail)),
            )
        )
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                items.append(
                    (item.get("loc") or item.get("field"), str(item.get("msg") or item.get("message") or "invalid"))
                )
    elif isinstance(detail, str):
        # InvalidParameter texts read "field: rule": point at the field when it is one of the form's
        m = re.match(r"^\s*([A-Za-z_\-\[\]0-9.]+)\s*:\s*(.+)$", detail, re.S)
        if m and _field_of(m.group(1))[0] in FORM_FIELDS:
            items.append((m.group(1), m.group(2).strip()))
        else:
            result.message = detail
    methods = payload.get("methods") or []
    for where, msg in items:
        msg = re.sub(r"^Value error, ", "", msg)
        name, param = _field_of(where)
        if param is not None:
            index, key = param.split(":", 1)
            mname = methods[int(index)]["name"] if index.isdigit() and int(index) < len(methods) else index
            result.field_errors.setdefault(f"param:{mname}:{key}", msg)
            result.field_errors.setdefault("methods", f"{mname}: {key}: {msg}")
        elif name in FORM_FIELDS:
            result.field_errors.setdefault(name, msg)
        else:
            where_text = where if isinstance(where, str) else ".".join(str(p) for p in (where or []))
            result.message = (result.message + "; " if result.message else "") + (
                f"{where_text}: {msg}" if where_text else msg
            )
    if not result.field_errors and not result.message:
        result.message = f"The API rejected the job ({status})."
    return result


def submit_job(payload: dict[str, Any]) -> SubmitResult:
    """``POST /v1/jobs`` with a job body (``api.schemas.JobCreate``: task, model, limit, methods
    [{name, params}], budgets, residual, samples, seeds, generation {do_sample, temperature, top_p,
    top_k}, max_new_tokens, fidelity, trace, ...). 201 -> ok with the job id; 422 (or 400, 409) ->
    messages mapped to form fields (:attr:`SubmitResult.field_errors`); unreachable ->
    :class:`ApiUnavailable`."""
    import httpx

    body = {k: v for k, v in payload.items() if v is not None}
    try:
        with _client() as client:
            response = client.post("/v1/jobs", json=body)
    except httpx.HTTPError as error:
        raise _api_error(error) from error
    if response.status_code in (200, 201, 202):
        try:
            data = response.json()
        except ValueError:
            data = {}
        job_id = (
            (data.get("id") or data.get("job_id") or (data.get("job") or {}).get("id"))
            if isinstance(data, dict)
            else None
        )
        clear_caches()
        return SubmitResult(ok=True, job_id=job_id, status_code=response.status_code)
    if response.status_code in (401, 403):
        return SubmitResult(
            ok=False,
            status_code=response.status_code,
            message="The API refused the job: a valid API token is required (set VASE_API_TOKEN).",
        )
    try:
        body_json = response.json()
    except ValueError:
        body_json = {"detail": (response.text or "")[:500]}
    if response.status_code in (400, 409, 422):
        return _parse_errors(response.status_code, body_json, body)
    return SubmitResult(
        ok=False,
        status_code=response.status_code,
        message=f"The API failed to create the job ({response.status_code}): {_detail_text(response)}",
    )


def cancel_job(job_id: str) -> str:
    """``POST /v1/jobs/{id}/cancel``; returns the job's status after the request (raises
    :class:`ApiUnavailable` when the API cannot be reached, :class:`DashboardError` when it refuses)."""
    import httpx

    try:
        with _client() as client:
            response = client.post(f"/v1/jobs/{job_id}/cancel")
    except httpx.HTTPError as error:
        raise _api_error(error) from error
    if response.status_code >= 400:
        raise DashboardError(
            f"The API did not cancel job {job_id[:8]} ({response.status_code}): {_detail_text(response)}"
        )
    clear_caches()
    try:
        return str(response.json().get("status") or "cancel requested")
    except (ValueError, AttributeError):
        return "cancel requested"


def parse_budgets(text: str) -> list[int]:
    """``"64, 128 256"`` -> [64, 128, 256] (raises ValueError naming the bad item)."""
    out = []
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise ValueError(f"{item!r} is not an integer") from None
    return out


def parse_param(raw: str) -> Any:
    """A method parameter typed in a text box: JSON when it parses (``16``, ``true``), else the text."""
    raw = raw.strip()
    return None if raw == "" else parse_value(raw)


def fmt_mib(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f} MiB"
