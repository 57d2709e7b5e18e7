"""Cache explorer: what one (layer, KV head) of the cache held at every decode step, which tokens
each eviction removed, how the large-value tokens fared, and two methods side by side."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui

st.title("Cache explorer")
st.caption(
    "For one sample, layer and KV head: which original token positions the KV cache held at each decode "
    "step (from the eviction trace), when each was evicted, and the value magnitudes of the kept and evicted "
    "tokens. Hover any chart to read the tokens under the cursor."
)


def _pick_sample() -> int | None:
    preset = st.session_state.pop("explorer_sample_id", None)
    if preset is None and "explorer_sample" not in st.session_state:
        q = st.query_params.get("sample")
        preset = int(q) if q is not None and str(q).isdigit() else None
    traced = data.trace_samples()
    if traced.empty:
        ui.empty(
            "No run recorded an eviction trace. Bench with `--trace full` (e.g. `vase bench --methods "
            "full,vase,snapkv --budgets 64 --trace full`) to see what the cache kept."
        )
        return None
    if preset is not None:
        try:
            smp = data.sample(int(preset))
            if ui.select_run(traced, smp["run_id"], "explorer"):
                st.session_state["explorer_sample"] = int(preset)
        except data.NotFound:
            st.warning(f"Sample {preset} does not exist.")
    c1, c2, c3, c4 = st.columns([2, 2, 4, 4])
    run_id = ui.pick_run(
        traced, [c1, c2, c3], "explorer", "Run", lambda r: f"{data.run_label(r)} · {r['trace_level']} trace"
    )
    if run_id is None:
        return None
    frame = data.samples([run_id])
    if frame.empty:
        ui.empty("This run has no stored samples yet.")
        return None
    names = {int(r["sample_id"]): data.sample_label(r) for _, r in frame.iterrows()}
    if st.session_state.get("explorer_sample") not in names:
        st.session_state["explorer_sample"] = next(iter(names))
    return c4.selectbox("Sample", list(names), format_func=names.get, key="explorer_sample")


MAG_BINS = {4: "4 per decade", 8: "8 per decade", 16: "16 per decade", 32: "32 per decade (as recorded)"}


def _magnitudes(info: data.TraceInfo, layer: int, per_decade: int = 8) -> None:
    if info.magnitudes.empty or info.magnitudes["n"].fillna(0).sum() == 0:
        ui.empty("The trace holds no value-magnitude statistics (the method evicted nothing, or reports none).")
        return
    hist = info.histogram(layer, per_decade)
    a, b = st.columns(2)
    with a:
        if len(hist):
            log_share = st.session_state.get("explorer_mag_log", True)
            st.plotly_chart(
                charts.magnitude_distribution(hist, layer, info.magnitudes, log_share=log_share),
                key="explorer_mag_dist",
            )
            st.toggle(
                "Log share axis",
                value=True,
                key="explorer_mag_log",
                help="A log y axis keeps the rare large-value tokens of the right tail visible next to the bulk.",
            )
        else:
            st.plotly_chart(charts.magnitude_bars(info.magnitudes, layer), key="explorer_mag_bars")
    with b:
        st.plotly_chart(charts.magnitude_by_layer(info.magnitudes, layer), key="explorer_mag_layers")
    if len(hist):
        st.caption(
            "Left: the share of the kept (blue) and of the evicted (orange) tokens per bin of value magnitude — "
            "the range (max − min over head_dim) of a token's value vector, pooled over the layer's KV heads and "
            "every eviction; dotted lines mark each group's largest value. The paper's point: a few rare tokens "
            "carry values far larger than the bulk, and evicting them sends the model into repetition loops. "
            "VaSE reserves them, so the far-right tail should be blue, not orange."
        )
    else:
        st.caption(
            "Value magnitude = range (max − min over head_dim) of a token's value vector, aggregated over the "
            "layer's KV heads and every eviction. The paper's point: evicting the rare large-value tokens sends "
            "the model into loops — VaSE reserves them."
        )
        st.info(
            "This trace was recorded before traces kept value-magnitude histograms: summary statistics only. "
            "Re-run the bench with `--trace summary` or `--trace full` to see the distribution of kept vs "
            "evicted tokens."
        )


def _inspector(sample_id: int, ex: data.Explorer, layer: int, head: int) -> None:
    st.subheader("Tokens at a position", divider="gray")
    n_pos = ex.prompt_length + ex.n_steps
    c1, c2 = st.columns([1, 3])
    default_pos = int(ex.timeline["position"].iloc[len(ex.timeline) // 2]) if len(ex.timeline) else 0
    pos = c1.number_input(
        "Position",
        min_value=0,
        max_value=max(0, n_pos - 1),
        value=min(default_pos, n_pos - 1),
        step=1,
        key="explorer_position",
    )
    step = c2.slider(
        "After decode step", min_value=0, max_value=max(1, ex.n_steps), value=ex.n_steps, key="explorer_step"
    )
    detail = data.position_detail(sample_id, layer, head, int(pos), int(step))
    when = "never evicted" if detail.evicted_at is None else f"evicted at decode step {detail.evicted_at}"
    st.markdown(
        f"Position **{detail.position}** ({detail.origin} token «{detail.text.replace(chr(10), '⏎')}»): "
        f"{when} in layer {layer}, KV head {head}. Its neighbourhood after step {detail.step}:"
    )
    st.markdown(ui.token_strip(detail.context, detail.position), unsafe_allow_html=True)
    heads = detail.heads.assign(evicted_at=detail.heads["evicted_at"].astype("string").fillna("never"))
    st.caption(
        f"Every KV head of layer {layer} keeps its own set: "
        + ", ".join(f"head {r.kv_head}: {r.evicted_at}" for r in heads.itertuples())
    )


def _compare(sample_id: int, ex: data.Explorer, layer: int, head: int, resolution: tuple[int, int]) -> None:
    st.subheader("Compare with another method on the same prompt", divider="gray")
    others = data.same_prompt_samples(sample_id)
    others = others[others["trace_level"] == "full"]
    if others.empty:
        ui.empty("No other method ran this prompt with a full trace (bench several methods with `--trace full`).")
        return
    options = {int(r["sample_id"]): r["label"] for _, r in others.iterrows()}
    if st.session_state.get("explorer_other") not in options:
        st.session_state.pop("explorer_other", None)
    other = st.selectbox("Other sample", list(options), format_func=options.get, key="explorer_other")
    run = data.sample(sample_id).get("run") or {}
    label_a = f"#{sample_id} · {run.get('method')} @ {run.get('budget') or 'full'}"
    info_b = data.trace_info(other)
    if layer >= info_b.num_layers or head >= info_b.num_kv_heads:
        st.warning("The other sample's trace has a different layer/head geometry.")
        return
    ex_b = data.explorer(other, layer, head, max_positions=resolution[0], max_steps=resolution[1])
    a, b = st.columns(2)
    with a:
        st.plotly_chart(charts.cache_heatmap(ex, f"A · {label_a}", height=430, show_scale=False), key="explorer_cmp_a")
        st.caption(f"A: {ex.n_evicted:,} positions evicted, {ex.held_at_end:,} held at the end.")
    with b:
        st.plotly_chart(
            charts.cache_heatmap(ex_b, f"B · {options[other]}", height=430, show_scale=False), key="explorer_cmp_b"
        )
        st.caption(f"B: {ex_b.n_evicted:,} positions evicted, {ex_b.held_at_end:,} held at the end.")
    c, d = st.columns(2)
    with c:
        overlap = data.held_overlap(sample_id, other, layer, head)
        st.plotly_chart(charts.overlap_chart(overlap, "A", "B"), key="explorer_overlap")
    with d:
        st.plotly_chart(charts.survival_curves(ex.km, ex_b.km, "A", "B"), key="explorer_cmp_km")


def _page() -> None:
    sample_id = _pick_sample()
    if sample_id is None:
        return
    st.query_params["sample"] = str(sample_id)
    info = data.trace_info(sample_id)
    if info.level == "off":
        ui.empty("This sample has no eviction trace.")
        return
    smp = data.sample(sample_id)
    m = st.columns(6)
    m[0].metric("prompt tokens", f"{info.prompt_length:,}")
    m[1].metric("decode steps", f"{info.n_steps:,}")
    m[2].metric("eviction events", f"{info.n_events:,}", help="One per layer per eviction round.")
    m[3].metric("positions evicted", f"{info.n_evicted:,}", help="Summed over layers and KV heads.")
    m[4].metric(f"trace ({info.level})", ui.size(info.nbytes))
    ui.loop_metric(m[5], smp)

    # layer and head: from the link on first load (?layer=&head=), kept inside the trace's geometry
    for name, count in (("layer", info.num_layers), ("head", info.num_kv_heads)):
        key = f"explorer_{name}"
        wanted = st.session_state.get(key)
        if wanted is None and str(st.query_params.get(name, "")).isdigit():
            wanted = int(st.query_params[name])
        st.session_state[key] = min(max(0, int(wanted or 0)), max(0, count - 1))
    c1, c2, c3 = st.columns([4, 2, 2])
    layer = c1.slider("Layer", 0, max(1, info.num_layers - 1), key="explorer_layer", disabled=info.num_layers <= 1)
    head = c2.selectbox("KV head", list(range(max(1, info.num_kv_heads))), key="explorer_head")
    st.query_params["layer"], st.query_params["head"] = str(layer), str(head)
    with c3.popover("Display", icon=":material/tune:"):
        rows = st.slider("Position bins", 50, 400, data.HEATMAP_POSITIONS, step=10, key="explorer_rows")
        cols = st.slider("Step bins", 50, 400, data.HEATMAP_STEPS, step=10, key="explorer_cols")
        mag_bins = st.select_slider(
            "Value-magnitude bins", list(MAG_BINS), value=8, format_func=MAG_BINS.get, key="explorer_mag_bins"
        )

    if not info.has_full:
        st.info(
            "This sample's trace is `summary` level: it has per-layer counts and value statistics but not the "
            "evicted positions. Bench with `--trace full` for the heatmap and the timeline."
        )
        _magnitudes(info, int(layer), int(mag_bins))
        return
    if info.n_events == 0:
        st.info(
            "Nothing was evicted in this sample (the full cache, or a budget larger than prompt + output): every "
            "position stayed in the cache."
        )

    ex = data.explorer(sample_id, int(layer), int(head), max_positions=int(rows), max_steps=int(cols))
    if ex.tokens_note:
        st.caption(ex.tokens_note)
    bins_note = ""
    if len(ex.position_edges) - 1 < info.prompt_length + info.n_steps or len(ex.step_edges) - 1 < info.n_steps + 1:
        bins_note = (
            f" Down-sampled to {len(ex.position_edges) - 1} × {len(ex.step_edges) - 1} bins: a cell is the "
            "fraction of its (position, step) pairs the cache held."
        )
    st.plotly_chart(charts.cache_heatmap(ex, f"Kept / evicted · layer {layer}, KV head {head}"), key="explorer_heatmap")
    st.caption("Blue: held, orange: evicted, grey: not written yet (the diagonal is the generation front)." + bins_note)

    st.subheader("Value magnitude: kept vs evicted", divider="gray")
    _magnitudes(info, int(layer), int(mag_bins))

    st.subheader("Survival", divider="gray")
    a, b = st.columns(2)
    with a:
        st.plotly_chart(charts.lifetime_scatter(ex), key="explorer_lifetime")
    with b:
        st.plotly_chart(charts.survival_curves(ex.km), key="explorer_km")

    st.subheader("Eviction timeline", divider="gray")
    if ex.timeline.empty:
        ui.empty("No eviction in this layer and head.")
    else:
        event = st.plotly_chart(
            charts.eviction_timeline(ex),
            key="explorer_timeline",
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
        )
        points = (event.selection.points if event is not None and hasattr(event, "selection") else []) or []
        if points:
            texts = data.token_texts(sample_id)
            picked = sorted({int(p["y"]) for p in points if "y" in p})[:400]
            st.markdown(
                f"**{len(picked)} selected evicted positions:** "
                + " ".join(f"`{p}`«{texts.at(p).replace(chr(10), '⏎')}»" for p in picked[:200])
            )
        else:
            st.caption("Select points (box or lasso) to list the evicted tokens as text.")
        if len(ex.timeline) < ex.n_evicted:
            st.caption(f"Showing {len(ex.timeline):,} of {ex.n_evicted:,} evicted positions (evenly down-sampled).")
        st.plotly_chart(charts.eviction_age(ex), key="explorer_age")

    _inspector(sample_id, ex, int(layer), int(head))
    if st.toggle("Compare with another method on the same prompt", key="explorer_compare"):
        _compare(sample_id, ex, int(layer), int(head), (int(rows), int(cols)))


with ui.guard("the cache explorer"):
    _page()
