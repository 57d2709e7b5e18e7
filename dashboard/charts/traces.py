"""Charts of eviction traces (Cache explorer page): the kept/evicted heatmap, value magnitudes of
kept vs evicted tokens, survival, the eviction timeline, and two caches compared."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.data import Explorer

from .base import EVICTED_COLOUR, KEPT_COLOUR, LOOP_COLOUR, layout

_HEAT_SCALE = [[0.0, EVICTED_COLOUR], [0.5, "#f7f7f7"], [1.0, KEPT_COLOUR]]


def cache_heatmap(ex: Explorer, title: str, height: int = 560, show_scale: bool = True) -> go.Figure:
    """Original position (rows, bottom = first prompt token) x decode step (columns): the fraction
    of each cell's (position, step) pairs the cache held; blank where the token did not exist yet."""
    steps = (ex.step_edges[:-1] + ex.step_edges[1:] - 1) / 2.0
    z = np.where(np.isnan(ex.heat), None, np.round(ex.heat, 3)).tolist()
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=steps,
            y=ex.row_labels,
            zmin=0,
            zmax=1,
            colorscale=_HEAT_SCALE,
            hoverongaps=False,
            colorbar=dict(tickvals=[0, 0.5, 1], ticktext=["evicted", "half", "kept"], len=0.5, thickness=12, y=0.5)
            if show_scale
            else None,
            showscale=show_scale,
            hovertemplate="positions %{y}<br>decode step ≈ %{x:.0f}<br>kept %{z:.0%}<extra></extra>",
        )
    )
    n = len(ex.row_labels)
    every = max(1, n // 8)
    ticks = list(range(0, n, every))
    fig.update_yaxes(
        type="category",
        tickmode="array",
        tickvals=[ex.row_labels[i] for i in ticks],
        ticktext=[str(int(ex.position_edges[i])) for i in ticks],
        title="original token position",
    )
    fig.update_xaxes(title="decode step", range=[float(ex.step_edges[0]), float(ex.step_edges[-1])])
    # the prompt / generation boundary and the loop
    prompt_row = int(np.searchsorted(ex.position_edges, ex.prompt_length, side="right")) - 1
    if 0 < prompt_row < n:
        fig.add_shape(
            type="line",
            xref="paper",
            x0=0,
            x1=1,
            y0=prompt_row - 0.5,
            y1=prompt_row - 0.5,
            line=dict(color="#555", width=1, dash="dot"),
        )
        fig.add_annotation(
            xref="paper",
            x=1,
            y=prompt_row - 0.5,
            text="end of prompt",
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=dict(size=10, color="#555"),
        )
    if ex.loop_step is not None:
        fig.add_vline(
            x=ex.loop_step,
            line=dict(color=LOOP_COLOUR, width=2, dash="dash"),
            annotation_text="loop starts",
            annotation_font_color=LOOP_COLOUR,
        )
    fig.update_layout(plot_bgcolor="#ececec")
    return layout(fig, title, height=height)


def _log_axis(
    fig: go.Figure, values: list[float], title: str, axis: str = "y", fmt: Any = "{:g}".format, slack: float = 1.5
) -> None:
    """A log y (or x) axis labelled at 1-2-5 steps (full numbers, not mantissas)."""
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    vals = [float(v) for v in values if v is not None and not pd.isna(v) and float(v) > 0]
    if not vals:
        update(title=title, type="log")
        return
    lo, hi = min(vals), max(vals)
    ticks = [
        m * 10.0**e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)
    ]
    inside = [t for t in ticks if lo / slack <= t <= hi * slack] or [lo, hi]
    if len(inside) > 10:  # a wide range: decades only
        inside = [t for t in inside if f"{t:.0e}".startswith("1")] or inside
    update(title=title, type="log", tickvals=inside, ticktext=[fmt(t) for t in inside])


def magnitude_bars(mags: pd.DataFrame, layer: int) -> go.Figure:
    m = mags[mags["layer"] == layer]
    fig = go.Figure()
    stats = ["p50", "mean", "p99", "max"]
    for group, col in (("kept", KEPT_COLOUR), ("evicted", EVICTED_COLOUR)):
        row = m[m["group"] == group]
        if row.empty:
            continue
        r = row.iloc[0]
        fig.add_trace(
            go.Bar(
                x=stats,
                y=[r[s] for s in stats],
                name=f"{group} (n={int(r['n'] or 0):,})",
                marker_color=col,
                hovertemplate=f"{group}<br>%{{x}} %{{y:.3g}}<extra></extra>",
            )
        )
    _log_axis(fig, [v for t in fig.data for v in t.y], "value range (max − min over head_dim)")
    return layout(fig, f"Value magnitude of kept vs evicted tokens · layer {layer}", height=340, barmode="group")


def _share_text(v: float) -> str:
    return f"{v * 100:.2g}%" if v < 0.01 else f"{v * 100:.0f}%"


def magnitude_distribution(
    hist: pd.DataFrame, layer: int, mags: pd.DataFrame | None = None, log_share: bool = True
) -> go.Figure:
    """Overlaid histograms of the value magnitudes of the kept and of the evicted tokens of one layer:
    the share of each group's tokens per (log-spaced) bin of value range; ``hist`` is
    ``TraceInfo.histogram(layer)``. ``log_share``: a log y axis, so the rare large-value tokens of
    the right tail stay visible next to the bulk. Dotted lines: each group's largest value."""
    fig = go.Figure()
    shares = hist["share"][hist["count"] > 0] if len(hist) else pd.Series(dtype=float)
    floor = 0.0
    if log_share and len(shares):
        floor = 10.0 ** math.floor(math.log10(float(shares.min())) - 0.3)
    x_values: list[float] = []
    for group, col, fill in (
        ("kept", KEPT_COLOUR, "rgba(33,102,172,0.30)"),
        ("evicted", EVICTED_COLOUR, "rgba(224,130,20,0.35)"),
    ):
        g = hist[hist["group"] == group].sort_values("bin_lo") if len(hist) else hist
        if g.empty or int(g["count"].sum()) == 0:
            continue
        lo, hi = g["bin_lo"].to_numpy(float), g["bin_hi"].to_numpy(float)
        share = g["share"].to_numpy(float)
        shown = np.where(share > 0, share, floor) if log_share else share
        n = int(g["count"].sum())
        name = f"{group} (n={n:,})"
        if mags is not None and len(mags):
            row = mags[(mags["layer"] == layer) & (mags["group"] == group)]
            top = row["max"].iloc[0] if len(row) else None
            if top is not None and not pd.isna(top):
                name = f"{group} (n={n:,}, max {float(top):.3g})"
                fig.add_vline(x=float(top), line=dict(color=col, width=1.5, dash="dot"))
        # a closed step outline: up at the first bin's lower edge, along each bin, down at the last
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([[lo[0]], lo, [hi[-1], hi[-1]]]),
                y=np.concatenate([[floor], shown, [shown[-1], floor]]),
                mode="lines",
                line=dict(color=col, width=1.5, shape="hv"),
                fill="toself",
                fillcolor=fill,
                name=name,
                legendgroup=group,
                hoverinfo="skip",
            )
        )
        has = g["count"].to_numpy() > 0
        fig.add_trace(
            go.Scatter(
                x=np.sqrt(lo * hi)[has],
                y=shown[has],
                mode="markers",
                marker=dict(color=col, size=6, opacity=0),
                showlegend=False,
                legendgroup=group,
                customdata=np.column_stack([lo[has], hi[has], g["count"].to_numpy()[has], share[has] * 100]),
                hovertemplate=f"{group}: %{{customdata[2]:,}} tokens (%{{customdata[3]:.2g}} %)"
                "<br>value range %{customdata[0]:.3g} – %{customdata[1]:.3g}<extra></extra>",
            )
        )
        x_values += [float(lo[0]), float(hi[-1])]
    _log_axis(fig, x_values, "value range (max − min over head_dim), log scale", axis="x", slack=1.0)
    if x_values:  # the bins' span and a little air (log axis ranges are in decades)
        left, right = math.log10(min(x_values)), math.log10(max(x_values))
        pad = 0.04 * max(right - left, 0.1)
        fig.update_xaxes(range=[left - pad, right + pad])
    if log_share:
        _log_axis(
            fig,
            [floor * 1.5, float(shares.max()) if len(shares) else 1.0],
            "share of the group's tokens",
            fmt=_share_text,
        )
    else:
        fig.update_yaxes(title="share of the group's tokens", tickformat=".0%", rangemode="tozero")
    return layout(fig, f"Value-magnitude distribution: kept vs evicted · layer {layer}", height=340)


def magnitude_by_layer(mags: pd.DataFrame, layer: int) -> go.Figure:
    fig = go.Figure()
    for group, col in (("kept", KEPT_COLOUR), ("evicted", EVICTED_COLOUR)):
        g = mags[mags["group"] == group].sort_values("layer")
        fig.add_trace(
            go.Scatter(x=g["layer"], y=g["p99"], name=f"{group} p99", mode="lines+markers", line=dict(color=col))
        )
        fig.add_trace(
            go.Scatter(x=g["layer"], y=g["max"], name=f"{group} max", mode="lines", line=dict(color=col, dash="dot"))
        )
    fig.add_vline(x=layer, line=dict(color="#888", width=1))
    fig.update_xaxes(title="layer")
    _log_axis(fig, [v for t in fig.data for v in (t.y if t.y is not None else [])], "value range")
    return layout(fig, "Large-value tokens per layer: kept vs evicted", height=340)


def lifetime_scatter(ex: Explorer) -> go.Figure:
    life = ex.life
    fig = go.Figure()
    ev = life[life["evicted_at"] >= 0]
    alive = life[life["evicted_at"] < 0]
    fig.add_trace(
        go.Scattergl(
            x=ev["position"],
            y=ev["evicted_at"],
            mode="markers",
            name="evicted at step",
            marker=dict(size=3, color=EVICTED_COLOUR),
            customdata=ev[["text", "lifetime"]].values if len(ev) else None,
            hovertemplate="position %{x} «%{customdata[0]}»<br>evicted at step %{y}"
            "<br>lived %{customdata[1]} steps<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scattergl(
            x=alive["position"],
            y=np.full(len(alive), ex.n_steps),
            mode="markers",
            name="held to the end",
            marker=dict(size=4, color=KEPT_COLOUR, symbol="line-ns-open"),
            customdata=alive[["text"]].values if len(alive) else None,
            hovertemplate="position %{x} «%{customdata[0]}»<br>never evicted<extra></extra>",
        )
    )
    diag_x = np.array([ex.prompt_length, ex.prompt_length + ex.n_steps])
    fig.add_trace(
        go.Scatter(
            x=diag_x,
            y=diag_x - ex.prompt_length,
            mode="lines",
            name="written",
            line=dict(color="#999", dash="dot", width=1),
            hoverinfo="skip",
        )
    )
    if ex.loop_step is not None:
        fig.add_hline(y=ex.loop_step, line=dict(color=LOOP_COLOUR, dash="dash"))
    fig.update_xaxes(title="original token position")
    fig.update_yaxes(title="decode step")
    return layout(fig, "Survival of each position: when it was evicted", height=360)


def survival_curves(
    km: pd.DataFrame, other: pd.DataFrame | None = None, label_a: str = "", label_b: str = ""
) -> go.Figure:
    fig = go.Figure()
    for frame, lab, dash in ((km, label_a, "solid"), (other, label_b, "dash")):
        if frame is None:
            continue
        for origin, col in (("prompt", "#4d4d4d"), ("generated", "#7b3294")):
            g = frame[frame["origin"] == origin]
            if g.empty:
                continue
            name = f"{origin} tokens" + (f" · {lab}" if lab else "")
            fig.add_trace(
                go.Scatter(
                    x=g["age"], y=g["survival"], name=name, mode="lines", line=dict(color=col, dash=dash, shape="hv")
                )
            )
    fig.update_xaxes(title="age (decode steps since the token was written)")
    fig.update_yaxes(title="still in the cache", range=[0, 1.02], tickformat=".0%")
    return layout(fig, "Survival over time (Kaplan–Meier)", height=360)


def eviction_timeline(ex: Explorer) -> go.Figure:
    tl = ex.timeline
    fig = go.Figure()
    for origin, col in (("prompt", "#4d4d4d"), ("generated", EVICTED_COLOUR)):
        g = tl[tl["origin"] == origin]
        if g.empty:
            continue
        fig.add_trace(
            go.Scattergl(
                x=g["step"],
                y=g["position"],
                mode="markers",
                name=f"evicted {origin} token",
                marker=dict(size=4, color=col, opacity=0.7),
                customdata=g[["text", "age"]].values,
                hovertemplate="step %{x}: evicted position %{y} «%{customdata[0]}»"
                "<br>age %{customdata[1]} steps<extra></extra>",
            )
        )
    if ex.loop_step is not None:
        fig.add_vline(
            x=ex.loop_step,
            line=dict(color=LOOP_COLOUR, dash="dash"),
            annotation_text="loop starts",
            annotation_font_color=LOOP_COLOUR,
        )
    fig.update_xaxes(title="decode step of the eviction")
    fig.update_yaxes(title="evicted original position")
    return layout(
        fig,
        "Eviction timeline: which positions each eviction removed (select points to read them)",
        height=400,
        dragmode="select",
    )


def eviction_age(ex: Explorer) -> go.Figure:
    ev = ex.events
    fig = go.Figure(
        go.Scatter(
            x=ev["step"],
            y=ev["median_age"],
            mode="lines+markers",
            marker=dict(size=4),
            line=dict(color="#7b3294"),
            name="median age",
            hovertemplate="step %{x}: median age of the evicted %{y:.0f} steps<extra></extra>",
        )
    )
    fig.update_xaxes(title="decode step of the eviction")
    fig.update_yaxes(title="median age of evicted tokens", rangemode="tozero")
    return layout(fig, "How old are the tokens each eviction removes?", height=300)


def overlap_chart(ov: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=ov["step"], y=ov["both"], stackgroup="one", name="held by both", line=dict(color="#5e3c99"))
    )
    fig.add_trace(
        go.Scatter(x=ov["step"], y=ov["only_a"], stackgroup="one", name=f"only {label_a}", line=dict(color="#e66101"))
    )
    fig.add_trace(
        go.Scatter(x=ov["step"], y=ov["only_b"], stackgroup="one", name=f"only {label_b}", line=dict(color="#b2abd2"))
    )
    fig.add_trace(
        go.Scatter(x=ov["step"], y=ov["jaccard"], name="Jaccard", yaxis="y2", line=dict(color="#111", dash="dot"))
    )
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", range=[0, 1], title="Jaccard", tickformat=".0%"))
    fig.update_xaxes(title="decode step")
    fig.update_yaxes(title="positions held")
    return layout(fig, "Which positions the two caches share", height=340)
