"""Compare: which methods keep accuracy at which budget (and at what memory, speed and fidelity)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui

st.title("Compare methods")
st.caption(
    "Accuracy (pass@1 ± standard error over problems, graded strictly or flexibly), repetition loops, "
    "fidelity to the full cache, speed and KV memory for every method × budget × task in the results database."
)
GRADING_HELP = (
    "**strict**: the task's required answer format (a `\\boxed{}` answer); **flexible**: the final answer "
    "span when that format is missing (math: the last `\\boxed{}`, else \"the answer is …\", a trailing "
    "\"= …\", the last number; multiple choice: the last standalone letter; code: as strict), like "
    "lm-evaluation-harness's flexible-extract. The rules: `vase/grading/flexible.py`."
)


def _page() -> None:
    frame = data.results()
    if frame.empty:
        ui.empty(
            "No results yet. Run a benchmark, e.g. `vase bench --task arith-chain --limit 4 "
            "--methods full,vase,snapkv --budgets 64,128 --fidelity --trace full`, or submit a job on the "
            "**Jobs** page; its runs appear here as their samples are stored."
        )
        return

    # -- filters -------------------------------------------------------------------------------
    models = sorted(frame["model"].unique())
    default_source = st.session_state.pop("compare_source", None)
    c1, c2 = st.columns([1, 3])
    model = c1.selectbox("Model", models, key="compare_model")
    at_model = frame[frame["model"] == model]
    tasks = sorted(at_model["task"].unique())
    chosen_tasks = c2.pills("Tasks", tasks, selection_mode="multi", default=tasks, key="compare_tasks")
    methods = sorted(at_model["method"].unique())
    chosen_methods = st.pills("Methods", methods, selection_mode="multi", default=methods, key="compare_methods")
    c3, c4 = st.columns([2, 2])
    budgets = ["full", *sorted({int(b) for b in at_model["budget"].dropna()})]
    chosen_budgets = c3.pills(
        "Budgets",
        budgets,
        selection_mode="multi",
        default=budgets,
        key="compare_budgets",
        format_func=lambda b: "full cache" if b == "full" else str(b),
    )
    sources = sorted(at_model["source"].unique())
    if default_source in sources:
        st.session_state["compare_sources"] = [default_source]
    chosen_sources = c4.pills(
        "Source",
        sources,
        selection_mode="multi",
        default=sources,
        key="compare_sources",
        help="CLI runs (`vase bench`) or API jobs.",
    )
    shown = data.filter_results(
        frame,
        models=[model],
        tasks=chosen_tasks,
        methods=chosen_methods,
        budgets=chosen_budgets,
        sources=chosen_sources,
    )
    if shown.empty:
        ui.empty("No run matches these filters: widen them.")
        return

    # -- what to plot ----------------------------------------------------------------------------
    has_flex = bool(shown["accuracy_flex"].notna().any())
    if "compare_grading" not in st.session_state:
        st.session_state["compare_grading"] = "flexible" if has_flex else "strict"
    g1, g2 = st.columns([1, 3])
    grading = g1.segmented_control(
        "Grading", list(data.GRADINGS), key="compare_grading", help=GRADING_HELP
    ) or "strict"
    accuracy, se = data.GRADINGS[grading]
    plot_tasks = sorted(shown["task"].unique())
    task = g2.selectbox("Task to plot", plot_tasks, key="compare_plot_task") if len(plot_tasks) > 1 else plot_tasks[0]
    at_task = shown[shown["task"] == task]
    if not at_task[accuracy].notna().any():
        ui.empty(
            f"No {grading} accuracy is stored for these runs"
            + (
                ": they were stored before flexible grading; `vase regrade --all` (or `--run ID`) grades them again."
                if grading == "flexible"
                else "."
            )
        )
    elif at_task["kv_mib"].notna().any():
        st.plotly_chart(
            charts.accuracy_vs_memory(at_task, task, accuracy, se, grading), key="compare_acc_memory"
        )
        st.caption(
            "Each point is one method at one budget (★ the full cache); bars are ± one standard error over "
            "problems. Up and to the left is better: as accurate as the full cache in less memory."
        )
    else:
        ui.empty("No KV-memory measurements for these runs.")

    # -- the table -----------------------------------------------------------------------------
    st.subheader("Method × budget × task", divider="gray")
    table = shown.copy()
    table["budget"] = [ui.budget_text(b) for b in table["budget"]]
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="compare_table",
        on_select="rerun",
        selection_mode="single-row",
        column_order=ui.RESULT_TABLE,
        column_config=ui.RESULT_COLUMN_CONFIG,
    )
    ui.downloads(shown.drop(columns=["method_name"]), "vase-results", key="compare_dl")
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if rows:
        picked = shown.iloc[rows[0]]
        st.caption(f"Selected: **{picked['method']}** at budget {ui.budget_text(picked['budget'])} on {picked['task']}")
        if st.button("Open its samples", icon=":material/article:", key="compare_open_samples"):
            st.session_state["sample_run_id"] = int(picked["run_id"])
            st.switch_page("views/sample.py")
    else:
        st.caption("Select a row to open its samples.")

    # -- the plots -----------------------------------------------------------------------------
    st.subheader("Accuracy, loops and fidelity vs budget", divider="gray")
    overlay = st.toggle(
        "Overlay the paper's published figures",
        key="compare_overlay",
        help="Accuracy of the VaSE paper (arXiv 2606.03928) for the same model and task; the project "
        "keeps its own copy of those numbers.",
    )
    paper = None
    if overlay:
        paper = data.paper_overlay(model, task)
        p_model, p_task = data.paper_match(model, task)
        if paper.empty:
            choices = data.paper_choices()
            st.info(
                f"The paper publishes no figures for **{model}** on **{task}** "
                f"({'model ' + p_model if p_model else 'not one of its models'}; "
                f"{'task ' + p_task if p_task else 'not one of its tasks'}). It reports "
                f"{', '.join(choices['models'])} on {', '.join(choices['tasks'])}. Pick one of its tables to "
                "show anyway:",
                icon=":material/menu_book:",
            )
            o1, o2 = st.columns(2)
            pm = o1.selectbox("Paper model", choices["models"], key="compare_paper_model")
            pt = o2.selectbox("Paper task", choices["tasks"], key="compare_paper_task")
            paper = data.paper_overlay(pm, pt)
            st.caption(f"Showing the paper's {pm} / {pt} figures (dotted, ◇) beside {model} / {task}.")
        else:
            st.caption(f"Dotted lines (◇): the paper's {p_model} / {p_task} figures. {data.paper_source()}")
    if at_task["budget"].notna().any() or (paper is not None and not paper.empty):
        st.plotly_chart(
            charts.accuracy_vs_budget(at_task, paper, task, accuracy, se, grading), key="compare_acc_budget"
        )
    else:
        ui.empty("Only the full cache ran on this task: there is no budget axis to plot.")
    if at_task["budget"].notna().any():
        l2, r2 = st.columns(2)
        with l2:
            st.plotly_chart(
                charts.metric_vs_budget(
                    at_task, "loop_rate", "Repetition loops vs budget", "samples in a loop (%)", percent=True
                ),
                key="compare_loops",
            )
        with r2:
            if at_task["kl_mean"].notna().any():
                st.plotly_chart(
                    charts.metric_vs_budget(at_task, "kl_mean", "Fidelity: KL to the full cache", "mean KL"),
                    key="compare_kl",
                )
            else:
                ui.empty("Fidelity (KL, top-1 agreement) was not measured: bench with `--fidelity`.")


with ui.guard("the comparison"):
    _page()
