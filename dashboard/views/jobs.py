"""Jobs: what is queued and running (refreshing by itself), and a form that submits a job to the API."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, ui
from vase.spec import JobSpec
from vase.store.models import ACTIVE_STATUSES
from vase.traces import TRACE_LEVELS

st.title("Jobs")

STATUS_ICON = {
    "queued": "… queued",
    "running": "▸ running",
    "succeeded": "✓ succeeded",
    "failed": "✗ failed",
    "cancelled": "■ cancelled",
}


def _jobs_table() -> pd.DataFrame | None:
    c1, c2, c3 = st.columns([4, 1.3, 1.2])
    statuses = c1.multiselect(
        "Status",
        data.job_statuses(),
        default=[],
        key="jobs_status",
        placeholder="any status",
        format_func=lambda s: STATUS_ICON.get(s, s),
    )
    auto = c2.toggle("Auto-refresh", value=True, key="jobs_autorefresh")
    every = c3.selectbox(
        "Every", [2, 5, 10, 30], index=1, key="jobs_every", format_func=lambda s: f"{s} s", disabled=not auto
    )
    holder: dict[str, Any] = {}

    @st.fragment(run_every=every if auto else None)
    def table() -> None:
        with ui.guard("the jobs"):
            frame, total = data.jobs(statuses or None)
            holder["frame"] = frame
            if frame.empty:
                ui.empty(
                    "No jobs" + (" with this status" if statuses else " yet") + ". Submit one below; "
                    "`vase bench` runs from the command line appear on **Compare** without a job."
                )
                return
            shown = frame.assign(
                status=[STATUS_ICON.get(s, s) for s in frame["status"]],
                id=[i[:8] for i in frame["id"]],
                samples=[f"{d} / {t}" for d, t in zip(frame["done_samples"], frame["total_samples"], strict=True)],
            )
            st.dataframe(
                shown,
                hide_index=True,
                width="stretch",
                key="jobs_table",
                column_order=[
                    "id",
                    "status",
                    "progress",
                    "samples",
                    "failed_samples",
                    "task",
                    "methods",
                    "budgets",
                    "model",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "owner",
                    "error",
                ],
                column_config={
                    "id": st.column_config.TextColumn("job"),
                    "progress": st.column_config.ProgressColumn(
                        "progress", min_value=0.0, max_value=1.0, format="percent"
                    ),
                    "failed_samples": st.column_config.NumberColumn("failed"),
                    "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
                    "started_at": st.column_config.DatetimeColumn("started", format="HH:mm:ss"),
                    "finished_at": st.column_config.DatetimeColumn("finished", format="HH:mm:ss"),
                },
            )
            st.caption(
                f"{len(frame)} of {total} jobs"
                + (", refreshing every " + f"{every} s" if auto else "")
                + f" · database {data.database_label()}"
            )

    table()
    return holder.get("frame")


def _job_detail(frame: pd.DataFrame) -> None:
    ids = list(frame["id"])
    labels = {
        r["id"]: f"{r['id'][:8]} · {STATUS_ICON.get(r['status'], r['status'])} · {r['task']} · {r['methods']}"
        for _, r in frame.iterrows()
    }
    with st.expander("Job details", icon=":material/info:"):
        job_id = st.selectbox("Job", ids, format_func=labels.get, key="jobs_detail")
        if job_id is None:
            return
        job = data.job(job_id)
        st.progress(
            float(job.get("progress") or 0.0),
            text=f"{job['done_samples']} of {job['total_samples']} samples · {job['status']}",
        )
        if job.get("error"):
            st.error(f"Error: {job['error']}")
        if job.get("status") in ACTIVE_STATUSES:
            if job.get("cancel_requested"):
                st.caption("Cancellation requested: its workers stop after the current sample.")
            elif st.button("Cancel this job", icon=":material/cancel:", key="jobs_cancel"):
                status = data.cancel_job(job_id)
                st.toast(f"Job {job_id[:8]}: {status}")
                st.rerun()
        results = data.results(job_id)
        if results.empty:
            ui.empty("No sample of this job is stored yet.")
        else:
            st.dataframe(
                results.assign(budget=[ui.budget_text(b) for b in results["budget"]]),
                hide_index=True,
                width="stretch",
                column_order=[*ui.RESULT_TABLE[: ui.RESULT_TABLE.index("top1_agreement") + 1], "n_samples"],
                column_config=ui.RESULT_COLUMN_CONFIG,
            )
            if st.button("Compare this job", icon=":material/leaderboard:", key="jobs_compare"):
                st.session_state["compare_source"] = f"job {job_id[:8]}"
                st.switch_page("views/compare.py")
        st.json(job.get("spec") or {}, expanded=False)


# ------------------------------------------------------------------------------------------------
# The submit form
# ------------------------------------------------------------------------------------------------
def _error(errors: dict[str, str], name: str) -> None:
    if name in errors:
        st.error(errors[name], icon=":material/error:")


def _field(column: Any, errors: dict[str, str], name: str, widget: str, *args: Any, **kwargs: Any) -> Any:
    """The form widget ``widget`` (e.g. ``"text_input"``) in ``column``, with the API's error about
    the body field ``name`` under it."""
    value = getattr(column, widget)(*args, **kwargs)
    with column:
        _error(errors, name)
    return value


def _param_widget(method: str, name: str, default: Any, errors: dict[str, str]) -> tuple[Any, bool]:
    """A widget for one method parameter; returns (value, changed from the default)."""
    key = f"job_param_{method}_{name}"
    if isinstance(default, bool):
        value = st.checkbox(name, value=default, key=key)
    elif isinstance(default, int):
        value = int(st.number_input(name, value=default, step=1, key=key))
    elif isinstance(default, float):
        value = float(st.number_input(name, value=default, step=0.1, format="%.4g", key=key))
    else:
        raw = st.text_input(
            name,
            value="" if default is None else str(default),
            key=key,
            placeholder="default" if default is None else None,
            help="Empty: the method's default. Numbers and true/false are read as JSON.",
        )
        value = data.parse_param(raw)
    _error(errors, f"param:{method}:{name}")
    return value, value != default


def _submit_form() -> None:
    st.subheader("Submit a job", divider="gray")
    ok, message = data.api_status()
    if not ok:
        st.warning(f"**Cannot submit jobs right now.** {message}", icon=":material/cloud_off:")
        return
    st.caption(message)
    methods = data.api_methods()
    tasks = data.api_tasks()
    by_name = {m["name"]: m for m in methods}
    state = st.session_state.get("job_form_state") or {}
    errors: dict[str, str] = state.get("errors", {})
    if state.get("ok"):
        st.success(
            f"Job **{state['job_id']}** submitted: it appears in the list above as its workers pick it up.",
            icon=":material/task_alt:",
        )
    elif state.get("message"):
        st.error(state["message"], icon=":material/error:")
    elif errors:
        st.error("The API rejected the job: see the messages next to the fields.", icon=":material/error:")

    names = list(by_name)
    chosen = st.multiselect(
        "Methods",
        names,
        default=[m.name for m in JobSpec.default("methods") if m.name in names],
        key="job_methods",
        format_func=lambda n: f"{n} ({by_name[n].get('kind') or '?'})",
        help=JobSpec.describe("methods"),
    )
    _error(errors, "methods")
    task_names = [t["name"] for t in tasks]
    with st.form("job_form", border=True):
        c1, c2, c3 = st.columns([2, 3, 1])
        task = _field(
            c1, errors, "task", "selectbox", "Task", task_names, key="job_task",
            index=task_names.index(JobSpec.suggested("task")) if JobSpec.suggested("task") in task_names else 0,
            format_func=lambda n: (
                n + ("" if next((t for t in tasks if t["name"] == n), {}).get("offline") in (None, True) else " (hub)")
            ),
        )
        model = _field(
            c2, errors, "model", "text_input", "Model", value="", key="job_model",
            placeholder="the service's default (embedded SmolLM2-135M)",
            help=JobSpec.describe("model"),
        )
        limit = _field(c3, errors, "limit", "number_input", "Problems", min_value=1, value=JobSpec.default("limit"),
                       step=1, key="job_limit", help=JobSpec.describe("limit"))

        c1, c2, c3, c4 = st.columns(4)
        budgets_text = _field(
            c1, errors, "budgets", "text_input", "Budgets", key="job_budgets",
            value=", ".join(map(str, JobSpec.default("budgets"))), help=JobSpec.describe("budgets"),
        )
        residual = _field(
            c2, errors, "residual", "number_input", "Residual", min_value=1, value=JobSpec.default("residual"),
            step=1, key="job_residual", help=JobSpec.describe("residual"),
        )
        max_new = _field(
            c3, errors, "max_new_tokens", "number_input", "Max new tokens", min_value=1,
            value=JobSpec.default("max_new_tokens"), step=32, key="job_max_new_tokens",
            help=JobSpec.describe("max_new_tokens"),
        )
        samples = _field(
            c4, errors, "samples", "number_input", "Samples per problem", min_value=1,
            value=JobSpec.default("samples"), step=1, key="job_samples", help=JobSpec.describe("samples"),
        )

        c1, c2, c3, c4 = st.columns(4)
        trace = _field(
            c1, errors, "trace", "selectbox", "Eviction trace", list(TRACE_LEVELS),
            index=TRACE_LEVELS.index(JobSpec.default("trace")), key="job_trace", help=JobSpec.describe("trace"),
        )
        fidelity = _field(
            c2, errors, "fidelity", "checkbox", "Fidelity (KL, top-1 vs full cache)",
            value=JobSpec.default("fidelity"), key="job_fidelity", help=JobSpec.describe("fidelity"),
        )
        reference_exact = _field(
            c2, errors, "reference_exact", "checkbox", "Reference-exact (the authors' cache order and dtype)",
            value=JobSpec.default("reference_exact"), key="job_reference_exact",
            help=JobSpec.describe("reference_exact"),
        )
        seeds = _field(c3, errors, "seeds", "number_input", "Seed", min_value=0, value=JobSpec.default("seeds"),
                       step=1, key="job_seeds", help=JobSpec.describe("seeds"))
        decoding = _field(
            c4, errors, "do_sample", "selectbox", "Decoding", ["model default", "greedy", "sample"], key="job_decoding"
        )

        with st.expander("Sampling parameters (when sampling)"):
            s1, s2, s3 = st.columns(3)
            sampling = {
                name: _field(column, errors, name, "text_input", label, value="", placeholder="model default",
                             key=f"job_{name}")
                for column, name, label in ((s1, "temperature", "Temperature"), (s2, "top_p", "Top-p"),
                                            (s3, "top_k", "Top-k"))
            }

        params: dict[str, dict[str, Any]] = {}
        with_params = [m for m in chosen if by_name.get(m, {}).get("params")]
        if with_params:
            st.markdown("**Method parameters** (defaults from `GET /v1/methods`)")
            cols = st.columns(min(3, len(with_params)))
            for i, m in enumerate(with_params):
                with cols[i % len(cols)].container(border=True):
                    st.markdown(f"`{m}`")
                    params[m] = {}
                    for name, default in by_name[m]["params"].items():
                        value, changed = _param_widget(m, name, default, errors)
                        if changed and value is not None:
                            params[m][name] = value
        submitted = st.form_submit_button("Submit job", type="primary", icon=":material/send:", key="job_submit")

    if submitted:
        new_errors: dict[str, str] = {}
        try:
            budgets = data.parse_budgets(budgets_text)
        except ValueError as error:
            new_errors["budgets"] = f"Budgets are integers separated by commas: {error}."
            budgets = []
        generation: dict[str, Any] = {}
        if decoding != "model default":
            generation["do_sample"] = decoding == "sample"
        for name, cast in (("temperature", float), ("top_p", float), ("top_k", int)):
            raw = sampling[name]
            if raw.strip():
                try:
                    generation[name] = cast(raw)
                except ValueError:
                    new_errors[name] = f"must be {'an integer' if cast is int else 'a number'}"
        if not chosen:
            new_errors["methods"] = "Choose at least one method."
        payload = {
            "task": task,
            "model": model.strip() or None,
            "limit": int(limit),
            "budgets": budgets,
            "residual": int(residual),
            "samples": int(samples),
            "seeds": int(seeds),
            "max_new_tokens": int(max_new),
            "fidelity": bool(fidelity),
            "reference_exact": bool(reference_exact),
            "trace": trace,
            "methods": [{"name": m, "params": params.get(m, {})} for m in chosen],
        }
        if generation:
            payload["generation"] = generation
        if new_errors:
            st.session_state["job_form_state"] = {"errors": new_errors}
        else:
            try:
                result = data.submit_job(payload)
            except data.ApiUnavailable as error:
                st.session_state["job_form_state"] = {"message": str(error)}
            else:
                st.session_state["job_form_state"] = {
                    "ok": result.ok,
                    "job_id": result.job_id,
                    "errors": result.field_errors,
                    "message": result.message,
                }
                if result.ok:
                    st.session_state["jobs_last_payload"] = json.dumps(payload)
        st.rerun()


with ui.guard("the jobs"):
    frame = _jobs_table()
    if frame is not None and not frame.empty:
        _job_detail(frame)
with ui.guard("the job form"):
    _submit_form()
