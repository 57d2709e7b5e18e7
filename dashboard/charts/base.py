"""What every chart shares: a stable colour per method, the kept/evicted/loop colours, the layout."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

# Stable colours per method family (the same method has the same colour on every chart).
METHOD_COLOURS = {
    "full": "#3b3b3b",
    "vase": "#d62728",
    "vase-dkv": "#ff7f0e",
    "snapkv": "#1f77b4",
    "attn-sample": "#17becf",
    "rkv": "#2ca02c",
    "cur-fixed": "#bcbd22",
    "h2o": "#9467bd",
    "tova": "#8c564b",
    "streamlingllm": "#7f7f7f",
    "streamingllm": "#7f7f7f",
    "random": "#e377c2",
    "value-norm": "#aec7e8",
    "evict-large": "#ff9896",
    "attn-random": "#c5b0d5",
    "quest": "#98df8a",
    "seerattention-r": "#6b6ecf",
}
_FALLBACK = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]
KEPT_COLOUR = "#2166ac"
EVICTED_COLOUR = "#e08214"
LOOP_COLOUR = "#c51b7d"


def colour(method: str) -> str:
    base = method.split(":", 1)[0]
    if base in METHOD_COLOURS:
        return METHOD_COLOURS[base]
    return _FALLBACK[sum(map(ord, base)) % len(_FALLBACK)]


def layout(fig: go.Figure, title: str | None = None, height: int = 380, **kw: Any) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=15), y=0.98, yanchor="top", yref="container") if title else None,
        height=height,
        margin=dict(l=10, r=10, t=80 if title else 30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0, font=dict(size=11)),
        template="plotly_white",
        **kw,
    )
    return fig
