"""The dashboard's Plotly figures. Nothing here reads data: pages get their data from
:mod:`dashboard.data` and hand it to these functions.

- :mod:`.results`: the Compare page's charts and the Sample page's KL chart;
- :mod:`.traces`: the Cache explorer's charts;
- :mod:`.base`: colours and the shared layout.
"""

from .base import colour
from .results import accuracy_vs_budget, accuracy_vs_memory, kl_per_token, metric_vs_budget
from .traces import (
    cache_heatmap,
    eviction_age,
    eviction_timeline,
    lifetime_scatter,
    magnitude_bars,
    magnitude_by_layer,
    magnitude_distribution,
    overlap_chart,
    survival_curves,
)

__all__ = [
    "accuracy_vs_budget",
    "accuracy_vs_memory",
    "cache_heatmap",
    "colour",
    "eviction_age",
    "eviction_timeline",
    "kl_per_token",
    "lifetime_scatter",
    "magnitude_bars",
    "magnitude_by_layer",
    "magnitude_distribution",
    "metric_vs_budget",
    "overlap_chart",
    "survival_curves",
]
