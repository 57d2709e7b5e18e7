"""Presentation helpers shared by the dashboard's pages: error boxes, empty states, the sidebar,
downloads, formatting and highlighted text. Nothing here reads data: pages get their data from
:mod:`dashboard.data`; the Plotly figures are in :mod:`dashboard.charts`."""

from __future__ import annotations

import contextlib
import html
import logging
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data

log = logging.getLogger("vase.dashboard")


# ------------------------------------------------------------------------------------------------
# Errors and empty states
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def guard(what: str = "this page") -> Iterator[None]:
    """Show a failure as an explained message on the page, never as a traceback."""
    try:
        yield
    except data.StoreDown as error:
        st.error(f"**Database unavailable.** {error}", icon=":material/database_off:")
    except data.ApiUnavailable as error:
        st.warning(f"**API unavailable.** {error}", icon=":material/cloud_off:")
    except data.NotFound as error:
        st.warning(str(error), icon=":material/search_off:")
    except data.DashboardError as error:
        st.error(str(error), icon=":material/error:")
    except Exception as error:  # an unexpected failure: explain, log the traceback server-side
        log.exception("dashboard: %s failed", what)
        st.error(
            f"Something went wrong while showing {what}: {type(error).__name__}: {str(error)[:300]}. "
            "The details are in the dashboard's log.",
            icon=":material/error:",
        )


def empty(message: str) -> None:
    st.info(message, icon=":material/info:")


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"**Database** `{data.database_label()}`  \n**API** `{data.api_url()}`")
        if st.button("Refresh data", icon=":material/refresh:", key="refresh_data", width="stretch"):
            data.clear_caches()
            st.rerun()


def downloads(frame: pd.DataFrame, name: str, key: str) -> None:
    """CSV and JSON download buttons for ``frame``."""
    columns = st.columns([1, 1, 6])
    for column, (label, export, mime) in zip(
        columns, (("CSV", data.export_csv, "text/csv"), ("JSON", data.export_json, "application/json"))
    ):
        suffix = label.lower()
        column.download_button(
            label, export(frame), file_name=f"{name}.{suffix}", mime=mime, icon=":material/download:",
            key=f"{key}_{suffix}",
        )


def select_run(runs: pd.DataFrame, run_id: int, prefix: str) -> bool:
    """Preselect run ``run_id`` (its task, model and itself) in :func:`pick_run`'s pickers of
    ``prefix``; False when ``runs`` does not hold it."""
    row = runs[runs["run_id"] == int(run_id)]
    if row.empty:
        return False
    st.session_state[f"{prefix}_task"] = row.iloc[0]["task"]
    st.session_state[f"{prefix}_model"] = row.iloc[0]["model"]
    st.session_state[f"{prefix}_run"] = int(run_id)
    return True


def pick_run(runs: pd.DataFrame, columns: list[Any], prefix: str, label: str, run_label: Any) -> int | None:
    """Pickers in three ``columns``: a task, a model, then one of their runs (labelled by
    ``run_label(row)``; by default the first that evicts). Session keys ``<prefix>_task``,
    ``<prefix>_model``, ``<prefix>_run``."""
    c1, c2, c3 = columns
    task = c1.selectbox("Task", sorted(runs["task"].unique()), key=f"{prefix}_task")
    model = c2.selectbox("Model", sorted(runs[runs["task"] == task]["model"].unique()), key=f"{prefix}_model")
    shown = runs[(runs["task"] == task) & (runs["model"] == model)]
    labels = {int(r["run_id"]): run_label(r) for _, r in shown.iterrows()}
    if st.session_state.get(f"{prefix}_run") not in labels:
        evicting = [int(r["run_id"]) for _, r in shown.iterrows() if r["method_name"] != "full"]
        st.session_state[f"{prefix}_run"] = (evicting or list(labels))[0]
    return c3.selectbox(label, list(labels), format_func=labels.get, key=f"{prefix}_run")


def loop_metric(column: Any, sample: dict[str, Any]) -> None:
    """Whether the sample ends in a repetition loop, and from which token."""
    column.metric(
        "loop",
        "yes" if sample.get("loop_detected") else "no",
        f"from token {sample['loop_start']}" if sample.get("loop_start") is not None else None,
        delta_color="off",
        delta_arrow="off",
    )


def fmt(v: Any, spec: str = ".1f", suffix: str = "") -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{format(v, spec)}{suffix}"


def size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def budget_text(b: Any) -> str:
    return "full" if b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b)) else str(int(b))


# ------------------------------------------------------------------------------------------------
# Text with highlights
# ------------------------------------------------------------------------------------------------
_BOX = (
    "font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.86rem; white-space: pre-wrap; "
    "word-break: break-word; background: #fafafa; border: 1px solid #e6e6e6; border-radius: 6px; "
    "padding: 0.6rem 0.8rem; max-height: {h}px; overflow-y: auto; line-height: 1.45"
)


def text_box(segments: list[tuple[str, str | None]], height: int = 420) -> str:
    """HTML for text made of (text, style) segments; style None is plain, else a CSS background."""
    parts = []
    for text, style in segments:
        if not text:
            continue
        esc = html.escape(text)
        parts.append(f'<mark style="background:{style};padding:0">{esc}</mark>' if style else esc)
    return f'<div style="{_BOX.format(h=height)}">{"".join(parts)}</div>'


def highlighted(
    text: str, start: int | None, colour_: str = "#f9d0e5", stop: int | None = None
) -> list[tuple[str, str | None]]:
    if start is None or start >= len(text):
        return [(text, None)]
    start = max(0, start)
    stop = len(text) if stop is None else stop
    return [(text[:start], None), (text[start:stop], colour_), (text[stop:], None)]


def token_strip(context: pd.DataFrame, focus: int) -> str:
    """HTML of tokens coloured by held / evicted / not written, the focus position outlined."""
    style = {"held": "#d1e5f0", "evicted": "#fdd9b5", "not written": "#eeeeee"}
    parts = []
    for _, row in context.iterrows():
        tok = html.escape(str(row["text"]).replace("\n", "⏎")) or "∅"
        border = "outline: 2px solid #222;" if int(row["position"]) == focus else ""
        title = f"position {row['position']}: {row['state']}"
        if row["evicted_at"] is not pd.NA and not pd.isna(row["evicted_at"]):
            title += f" (evicted at step {int(row['evicted_at'])})"
        parts.append(
            f'<span title="{html.escape(title)}" style="background:{style[row["state"]]};{border}'
            f'border-radius:3px;padding:1px 1px;margin:0 1px">{tok}</span>'
        )
    legend = " ".join(
        f'<span style="background:{c};border-radius:3px;padding:0 6px">{k}</span>' for k, c in style.items()
    )
    return (
        f'<div style="{_BOX.format(h=220)}">{"".join(parts)}</div>'
        f'<div style="font-size:0.8rem;margin-top:0.3rem">{legend}</div>'
    )


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------
#: The comparison table's columns as pages show them (``data.RESULT_COLUMNS`` without the
#: bookkeeping ones), and how each reads wherever it is shown.
RESULT_TABLE = [
    c for c in data.RESULT_COLUMNS if c not in ("model", "method_name", "params", "trace_level", "fidelity", "job_id")
]
RESULT_COLUMN_CONFIG = {
    "task": st.column_config.TextColumn("task"),
    "method": st.column_config.TextColumn("method", help="Parameters that differ from the defaults follow the colon."),
    "budget": st.column_config.TextColumn("budget", help="KV pairs kept per layer and KV head."),
    "accuracy": st.column_config.NumberColumn(
        "strict %", format="%.1f", help="Mean pass@1 over problems, graded strictly (the task's required answer format)."
    ),
    "accuracy_se": st.column_config.NumberColumn(
        "± SE", format="%.1f", help="Standard error of the strict accuracy over problems."
    ),
    "accuracy_flex": st.column_config.NumberColumn(
        "flexible %",
        format="%.1f",
        help="Mean pass@1 over problems, graded flexibly (the final answer span when the required format is "
        "missing). Empty for runs stored before flexible grading: `vase regrade` fills it.",
    ),
    "accuracy_flex_se": st.column_config.NumberColumn(
        "± SE", format="%.1f", help="Standard error of the flexible accuracy over problems."
    ),
    "loop_rate": st.column_config.NumberColumn(
        "loops %", format="%.0f", help="Samples whose tail is a repetition loop."
    ),
    "kl_mean": st.column_config.NumberColumn(
        "KL", format="%.4f", help="Mean per-token KL(full ‖ method), teacher-forced."
    ),
    "top1_agreement": st.column_config.NumberColumn(
        "top-1 %", format="%.1f", help="Tokens whose argmax matches the full cache's."
    ),
    "tokens_per_s": st.column_config.NumberColumn("tok/s", format="%.1f"),
    "kv_mib": st.column_config.NumberColumn("KV MiB", format="%.2f", help="Peak KV-cache memory."),
    "n_problems": st.column_config.NumberColumn("problems"),
    "n_samples": st.column_config.NumberColumn("samples"),
    "truncated_rate": st.column_config.NumberColumn("truncated %", format="%.0f"),
    "mean_new_tokens": st.column_config.NumberColumn("mean tokens", format="%.0f"),
    "evictions": st.column_config.NumberColumn("evictions", format="%.1f"),
    "sparsity": st.column_config.NumberColumn("kept / length", format="%.3f"),
    "pass_at_k": st.column_config.TextColumn("pass@k % (strict)"),
    "pass_at_k_flex": st.column_config.TextColumn("pass@k % (flexible)"),
    "residual": st.column_config.NumberColumn("residual"),
    "source": st.column_config.TextColumn("source"),
    "run_id": st.column_config.NumberColumn("run"),
}
#: A sample list's columns as the Sample page shows them (the verdicts as symbols).
SAMPLE_VERDICTS = {"correct": "verdict", "correct_flex": "flexible"}
SAMPLE_TABLE = [
    SAMPLE_VERDICTS.get(c, c)
    for c in data.SAMPLE_COLUMNS
    if c not in ("run_id", "grade_status", "tokens_per_s", "evictions")
]
