"""Sample: one output, read closely: the prompt, the thinking (collapsed), the answer and its
verdict, the repetition loop highlighted, and its agreement with the full-cache output."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

st.title("Sample")
LOOP_BG = "#f9c6de"
DIVERGE_BG = "#fff3b0"


def _pick_sample() -> int | None:
    """Pickers: task and model, run, then a sample of the run (or ?sample=ID in the URL)."""
    wanted = st.query_params.get("sample")
    if wanted is not None and "sample_pick" not in st.session_state:
        try:
            smp = data.sample(int(wanted))
            st.session_state["sample_run_id"] = int(smp["run_id"])
            st.session_state["sample_pick"] = int(smp["id"])
        except (ValueError, data.NotFound):
            st.warning(f"The sample in the link ({wanted}) does not exist.")
    all_runs = data.runs()
    if all_runs.empty:
        ui.empty("No samples yet: run `vase bench` or submit a job on the **Jobs** page.")
        return None
    preset_run = st.session_state.pop("sample_run_id", None)
    if preset_run is not None:
        ui.select_run(all_runs, preset_run, "sample")
    run_id = ui.pick_run(all_runs, st.columns([2, 2, 4]), "sample", "Run (method · budget)", ui_run_label)
    if run_id is None:
        return None

    f1, f2, f3 = st.columns([1, 1, 4])
    only_wrong = f1.checkbox("Only wrong", key="sample_only_wrong")
    only_loops = f2.checkbox("Only loops", key="sample_only_loops")
    frame = data.samples([run_id], correct=False if only_wrong else None)
    if only_loops:
        frame = frame[frame["loop_detected"].fillna(False).astype(bool)]
    if frame.empty:
        ui.empty(
            "No sample of this run matches the filters."
            if (only_wrong or only_loops)
            else "This run has no stored samples yet."
        )
        return None
    ids = [int(i) for i in frame["sample_id"]]
    names = {int(r["sample_id"]): data.sample_label(r) for _, r in frame.iterrows()}
    if st.session_state.get("sample_pick") not in names:
        st.session_state["sample_pick"] = ids[0]

    def _from_table() -> None:
        sel = st.session_state.get("sample_table")
        rows = getattr(getattr(sel, "selection", None), "rows", None) or (sel or {}).get("selection", {}).get(
            "rows", []
        )
        if rows:
            st.session_state["sample_pick"] = ids[rows[0]]

    with st.expander(f"Samples of this run ({len(frame)})", expanded=len(frame) > 1):
        st.dataframe(
            frame.assign(
                **{shown: [data.verdict_symbol(c) for c in frame[column]] for column, shown in ui.SAMPLE_VERDICTS.items()}
            ),
            hide_index=True,
            width="stretch",
            key="sample_table",
            on_select=_from_table,
            selection_mode="single-row",
            column_order=ui.SAMPLE_TABLE,
            column_config={
                "sample_id": "id",
                "verdict": st.column_config.TextColumn("strict", help="The strict verdict: ✓ correct, ✗ wrong."),
                "flexible": st.column_config.TextColumn("flexible", help="The flexible verdict: ✓ correct, ✗ wrong."),
                "extracted": "answered (strict)",
                "extracted_flex": "answered (flexible)",
                "sample_index": "index",
                "loop_detected": "loop",
                "kl_mean": st.column_config.NumberColumn("KL", format="%.4f"),
                "top1_agreement": st.column_config.NumberColumn("top-1 %", format="%.1f"),
            },
        )
    return st.selectbox("Sample", ids, format_func=names.get, key="sample_pick")


def ui_run_label(row: pd.Series) -> str:
    return data.run_label(row) + f" · {int(row['n_samples'])} samples"


def _verdict(smp: dict) -> None:
    answer = (smp.get("metrics") or {}).get("answer")
    got = smp.get("extracted")
    if smp.get("correct") is True:
        st.success(f"**Correct** (strict) — answered {got!s}, expected {answer!s}.", icon=":material/check_circle:")
    elif smp.get("correct") is False:
        why = smp.get("grade_reason") or ""
        st.error(
            f"**Wrong** (strict) — answered {got if got is not None else 'nothing'}, expected {answer!s}"
            + (f" ({why})." if why else "."),
            icon=":material/cancel:",
        )
    else:
        st.warning(
            f"**Not graded** ({smp.get('grade_status') or 'unknown'}): {smp.get('grade_reason') or ''}",
            icon=":material/help:",
        )
    flex = smp.get("correct_flex")
    if flex is None:
        st.caption("No flexible verdict is stored for this sample (stored before flexible grading: `vase regrade`).")
    else:
        got_flex = smp.get("extracted_flex")
        st.markdown(
            f"**Flexible grading:** {'correct' if flex else 'wrong'} — answered "
            f"{got_flex if got_flex is not None else 'nothing'}"
            + (f" (rule: {smp['flex_rule']})" if smp.get("flex_rule") else "")
            + f", expected {answer!s}."
        )


def _segments(text: str, offset: int, view: data.SampleView) -> list[tuple[str, str | None]]:
    """``text`` (which starts at ``offset`` in the output) with the loop highlighted."""
    if view.loop_char is None:
        return [(text, None)]
    start = view.loop_char - offset
    if start >= len(text):
        return [(text, None)]
    return ui.highlighted(text, max(0, start), LOOP_BG)


def _show(sample_id: int) -> None:
    view = data.sample_view(sample_id)
    smp, run = view.sample, view.run
    for note in view.notes:
        st.caption(note)
    budget = "full cache" if run.get("budget") is None else f"budget {run['budget']}"
    st.subheader(
        f"#{smp['id']} · {view.method} · {budget} · {smp['problem_id']} [{smp['sample_index']}]", divider="gray"
    )
    _verdict(smp)
    m = st.columns(7)
    m[0].metric(
        "new tokens",
        ui.fmt(smp.get("new_tokens"), "d"),
        "truncated" if smp.get("truncated") else None,
        delta_color="off",
        delta_arrow="off",
    )
    ui.loop_metric(m[1], smp)
    m[2].metric("KL to full", ui.fmt(smp.get("kl_mean"), ".4f"))
    m[3].metric(
        "top-1 agreement",
        ui.fmt(None if smp.get("top1_agreement") is None else 100 * smp["top1_agreement"], ".1f", " %"),
    )
    m[4].metric(
        "first divergence",
        ui.fmt(smp.get("first_divergence"), "d"),
        help="First generated token that differs from the full-cache output.",
    )
    m[5].metric("tokens/s", ui.fmt(smp.get("tokens_per_s"), ".1f"))
    m[6].metric(
        "KV peak (MiB)", ui.fmt(None if smp.get("kv_bytes_peak") is None else smp["kv_bytes_peak"] / 2**20, ".2f")
    )

    if smp.get("loop_detected"):
        st.warning(
            f"**Repetition loop** from generated token {smp.get('loop_start')}: the output repeats "
            f"«{(smp.get('loop_span') or '').strip()[:200]}» until it stops. Highlighted below.",
            icon=":material/repeat:",
        )

    with st.expander(f"Prompt ({(smp.get('metrics') or {}).get('prompt_tokens', '?')} tokens)", expanded=False):
        st.markdown(ui.text_box([(smp.get("prompt") or "", None)], height=300), unsafe_allow_html=True)

    output = smp.get("output") or ""
    thinking = smp.get("thinking")
    start = output.find(thinking) if thinking else -1
    with st.container(key="sample_output"):  # the output as the page shows it (browser checks find it by key)
        if thinking and start >= 0:
            end = start + len(thinking)
            loop_in_thinking = view.loop_char is not None and view.loop_char < end
            label = f"Thinking ({len(thinking):,} characters)" + (" · contains the loop" if loop_in_thinking else "")
            if output[:start].strip():
                st.markdown(ui.text_box(_segments(output[:start], 0, view), height=160), unsafe_allow_html=True)
            with st.expander(label, expanded=False, icon=":material/psychology:"):
                st.markdown(ui.text_box(_segments(thinking, start, view), height=520), unsafe_allow_html=True)
            st.markdown("**Answer**")
            st.markdown(ui.text_box(_segments(output[end:], end, view), height=360), unsafe_allow_html=True)
        else:
            st.markdown("**Output**" + ("" if thinking is None else " (no separate thinking block)"))
            st.markdown(ui.text_box(_segments(output, 0, view), height=420), unsafe_allow_html=True)
    if view.loop_char is not None:
        st.caption(
            f'<mark style="background:{LOOP_BG}">highlighted</mark>: the detected repetition loop.',
            unsafe_allow_html=True,
        )

    # -- agreement with the full cache -------------------------------------------------------------
    st.subheader("Agreement with the full cache", divider="gray")
    if run.get("method") == "full":
        ui.empty("This is the full-cache output: the reference other methods are compared with.")
    elif view.reference is None:
        ui.empty(
            "No full-cache output of this prompt is stored in the same grid, so there is nothing to compare "
            "with. Bench with `--fidelity` (it runs the full cache first)."
        )
    else:
        fd = view.divergence
        if view.identical:
            st.success("The output is identical to the full-cache output.", icon=":material/check:")
        elif fd is not None:
            st.caption(
                f"The outputs agree on the first {fd} generated tokens, then diverge "
                f'(<mark style="background:{DIVERGE_BG}">highlighted from there</mark>).',
                unsafe_allow_html=True,
            )
        else:
            st.caption(
                "The outputs differ; their texts agree on the first "
                f"{view.divergence_char:,} characters "
                f'(<mark style="background:{DIVERGE_BG}">highlighted from there</mark>).',
                unsafe_allow_html=True,
            )
        left, right = st.columns(2)
        with left:
            st.markdown(f"**This output** ({view.method})")
            st.markdown(
                ui.text_box(ui.highlighted(output, view.divergence_char, DIVERGE_BG), height=300),
                unsafe_allow_html=True,
            )
        with right:
            ref_out = view.reference["output"]
            st.markdown(f"**Full-cache output** (sample #{view.reference['id']})")
            st.markdown(
                ui.text_box(ui.highlighted(ref_out, view.reference_char, DIVERGE_BG), height=300),
                unsafe_allow_html=True,
            )
        if view.kl_per_token:
            st.plotly_chart(charts.kl_per_token(view.kl_per_token, view.reference_tokens, fd), key="sample_kl")
            st.caption(
                "Teacher-forced along the full-cache output: at each of its tokens, the KL divergence between "
                "the full cache's next-token distribution and this method's. Spikes are where the evicted "
                "cache loses information."
            )
        else:
            ui.empty("Fidelity (per-token KL) was not measured for this run: bench with `--fidelity`.")

    trace = smp.get("trace") or {}
    if trace.get("level") == "full":
        if st.button("Open in the cache explorer", icon=":material/grid_on:", key="sample_open_explorer"):
            st.session_state["explorer_sample_id"] = int(smp["id"])
            st.switch_page("views/explorer.py")
    else:
        st.caption("This sample has no full eviction trace (bench with `--trace full` to explore its cache).")


with ui.guard("the sample"):
    picked = _pick_sample()
    if picked is not None:
        st.query_params["sample"] = str(picked)
        _show(int(picked))
