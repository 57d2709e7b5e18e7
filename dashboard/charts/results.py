"""Charts of results: accuracy, loops and fidelity against the budget and the KV memory (Compare
page), and the per-token KL of one sample (Sample page)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.ui import budget_text

from .base import LOOP_COLOUR, colour, layout


def _percent_axis(fig: go.Figure, *series: tuple[pd.DataFrame | None, str, str | None]) -> None:
    """A percent y axis from 0 that shows at least 0-10 and at most 0-100 (plus headroom), for
    the (frame, value column, error column or None) series plotted."""
    top = 0.0
    for f, column, se in series:
        if f is None or f.empty or column not in f:
            continue
        v = f[column].astype(float) + (f[se].fillna(0).astype(float) if se and se in f else 0)
        if v.notna().any():
            top = max(top, float(v.max()))
    upper = max(10.0, min(100.0, top * 1.15 + 1))
    fig.update_yaxes(range=[-0.04 * upper, upper])  # a little below 0, so points at 0 are not cut


def accuracy_vs_budget(
    frame: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    task: str = "",
    accuracy: str = "accuracy",
    se: str = "accuracy_se",
    grading: str = "strict",
) -> go.Figure:
    """Accuracy (the ``accuracy`` column, ± the ``se`` column) against the budget, one line per
    method; the full cache as a dashed line."""
    fig = go.Figure()
    evicting = frame[frame["budget"].notna() & frame[accuracy].notna()]
    full = frame[frame["budget"].isna() & frame[accuracy].notna()]
    for method, g in evicting.groupby("method", sort=True):
        g = g.sort_values("budget")
        fig.add_trace(
            go.Scatter(
                x=g["budget"].astype(float),
                y=g[accuracy],
                name=method,
                mode="lines+markers",
                line=dict(color=colour(method), width=2),
                marker=dict(size=8),
                error_y=dict(type="data", array=g[se].fillna(0), visible=True, thickness=1),
                customdata=np.stack([g["n_samples"].astype(float), g["loop_rate"].astype(float)], axis=-1),
                hovertemplate=f"<b>{method}</b><br>budget %{{x}}<br>accuracy %{{y:.1f}}% ± %{{error_y.array:.1f}}"
                "<br>%{customdata[0]:.0f} samples, loop rate %{customdata[1]:.0f}%<extra></extra>",
            )
        )
    for _, row in full.iterrows():
        fig.add_hline(
            y=row[accuracy],
            line=dict(color=colour("full"), dash="dash"),
            annotation_text=f"full cache {row[accuracy]:.1f}% ± {0 if pd.isna(row[se]) else row[se]:.1f}",
            annotation_position="top left",
        )
    if paper is not None and not paper.empty:
        for method, g in paper[paper["method"] != "full"].groupby("method"):
            g = g.sort_values("budget")
            fig.add_trace(
                go.Scatter(
                    x=g["budget"],
                    y=g["accuracy"],
                    name=f"paper · {method}",
                    mode="lines+markers",
                    line=dict(color=colour(method), dash="dot", width=1.5),
                    marker=dict(symbol="diamond-open", size=9),
                    hovertemplate=f"<b>paper · {method}</b><br>budget %{{x}}<br>%{{y:.2f}}%<extra></extra>",
                )
            )
        pf = paper[paper["method"] == "full"]
        if not pf.empty:
            fig.add_hline(
                y=float(pf["accuracy"].iloc[0]),
                line=dict(color=colour("full"), dash="dot", width=1),
                annotation_text=f"paper full cache {pf['accuracy'].iloc[0]:.1f}%",
                annotation_position="bottom right",
            )
    fig.update_xaxes(title="KV budget (tokens per layer and head)", type="log", dtick=math.log10(2))
    fig.update_yaxes(title=f"accuracy ({grading}, pass@1, %)")
    _percent_axis(fig, (frame, accuracy, se), (paper, "accuracy", None))
    return layout(fig, f"Accuracy ({grading}) vs budget{' · ' + task if task else ''}")


def accuracy_vs_memory(
    frame: pd.DataFrame, task: str = "", accuracy: str = "accuracy", se: str = "accuracy_se", grading: str = "strict"
) -> go.Figure:
    """Accuracy (± standard error) against the peak KV memory: one point per method and budget,
    each labelled "method · budget" (points that coincide share one label)."""
    fig = go.Figure()
    shown = frame[frame["kv_mib"].notna() & frame[accuracy].notna()]
    for method, g in shown.groupby("method", sort=True):
        g = g.sort_values("kv_mib")
        budgets = [budget_text(b) for b in g["budget"]]
        fig.add_trace(
            go.Scatter(
                x=g["kv_mib"],
                y=g[accuracy],
                name=method,
                mode="lines+markers" if len(g) > 1 else "markers",
                line=dict(color=colour(method), width=1.5),
                marker=dict(size=12 if method == "full" else 9, symbol="star" if method == "full" else "circle"),
                error_y=dict(type="data", array=g[se].fillna(0), visible=True, thickness=1.2, width=4),
                customdata=budgets,
                hovertemplate=f"<b>{method}</b><br>budget %{{customdata}}<br>KV peak %{{x:.2f}} MiB"
                "<br>accuracy %{y:.1f}% ± %{error_y.array:.1f}<extra></extra>",
            )
        )
    labels: dict[tuple[float, float], list[str]] = {}
    for _, row in shown.sort_values(["method", "budget"]).iterrows():
        at = (round(float(row["kv_mib"]), 2), round(float(row[accuracy]), 1))
        labels.setdefault(at, []).append(
            row["method"] if pd.isna(row["budget"]) else f"{row['method']} · {budget_text(row['budget'])}"
        )
    if labels:
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in labels],
                y=[y for _, y in labels],
                text=["  " + ", ".join(names) for names in labels.values()],
                mode="text",
                textposition="middle right",
                textfont=dict(size=11),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        label_chars: dict[float, int] = {}
        for (x, _), names in labels.items():
            label_chars[x] = max(label_chars.get(x, 0), len(", ".join(names)))
        fig.update_xaxes(range=_room_for_labels(label_chars))
    fig.update_xaxes(title="peak KV-cache memory (MiB)")
    fig.update_yaxes(title=f"accuracy ({grading}, pass@1, %)")
    _percent_axis(fig, (frame, accuracy, se))
    return layout(fig, f"Accuracy ({grading}) vs KV memory{' · ' + task if task else ''}", height=440)


_LABEL_CHAR_PX, _PLOT_PX = 7, 700  # a label character at font size 11; a narrow plot's width


def _room_for_labels(label_chars: dict[float, int]) -> list[float]:
    """An x range from 0 (memory is compared against none at all, not against the smallest
    point) wide enough that each point's label, written to its right, fits: point x -> the
    characters of its label."""
    width = 0.01
    for x, chars in label_chars.items():
        free = max(0.3, 1.0 - (chars + 4) * _LABEL_CHAR_PX / _PLOT_PX)  # share of the width left of the label
        width = max(width, x / free)
    return [-0.02 * width, width]


def metric_vs_budget(frame: pd.DataFrame, column: str, title: str, axis: str, percent: bool = False) -> go.Figure:
    fig = go.Figure()
    for method, g in frame[frame["budget"].notna()].groupby("method", sort=True):
        g = g.sort_values("budget")
        fig.add_trace(
            go.Scatter(
                x=g["budget"].astype(float),
                y=g[column],
                name=method,
                mode="lines+markers",
                line=dict(color=colour(method)),
            )
        )
    for _, row in frame[frame["budget"].isna()].iterrows():
        if row[column] is not None and not pd.isna(row[column]):
            fig.add_hline(y=row[column], line=dict(color=colour("full"), dash="dash"))
    fig.update_xaxes(title="KV budget", type="log", dtick=math.log10(2))
    fig.update_yaxes(title=axis, rangemode="tozero")
    if percent:
        _percent_axis(fig, (frame, column, None))
    return layout(fig, title, height=320)


def kl_per_token(kl: list[float], ref_tokens: list[str], divergence: int | None) -> go.Figure:
    x = np.arange(len(kl))
    text = [ref_tokens[i].replace("\n", "⏎") if i < len(ref_tokens) else "" for i in x]
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=kl,
            mode="lines",
            line=dict(color="#6a3d9a", width=1.2),
            fill="tozeroy",
            name="KL",
            customdata=text,
            hovertemplate="token %{x} «%{customdata}»<br>KL %{y:.4f}<extra></extra>",
        )
    )
    if divergence is not None:
        fig.add_vline(
            x=divergence,
            line=dict(color=LOOP_COLOUR, dash="dash"),
            annotation_text="outputs diverge",
            annotation_position="top right",
        )
    fig.update_xaxes(title="token of the full-cache output")
    fig.update_yaxes(title="KL(full ‖ method)")
    return layout(fig, "Per-token KL against the full cache (teacher-forced)", height=300)
