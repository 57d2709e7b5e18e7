"""The dashboard's data layer: the only package its pages read data (and submit jobs) through.

- :mod:`.base`: the errors the pages explain (every failure is a :class:`DashboardError` whose
  message is written for the page), the configured database and API, the cached Store;
- :mod:`.queries`: the queries behind the pages' tables and pickers (jobs, the comparison table,
  runs, samples, the paper's figures);
- :mod:`.sample_views`: sample views (a sample with its run, token texts, the full-cache reference);
- :mod:`.explorer_views`: explorer views of eviction traces (the numbers come from
  :mod:`vase.traces.analysis`);
- :mod:`.api`: the API through :class:`vase.client.Client` (catalog, job submission, cancel).

Reads go to the results store (``vase.store.open_store`` on the configured database: the embedded
SQLite file by default, PostgreSQL in the compose stack) and to eviction traces (``vase.traces``);
job submission goes to the HTTP API. Pages never see SQL, a Store or an HTTP client: they get
DataFrames, dicts and small dataclasses. Everything that can be cached is, keyed by the database
URL (so one process serves several databases correctly): the Store and decoded traces with
``st.cache_resource``, query results with ``st.cache_data`` and a short TTL.

The functions work without a running Streamlit app (caches fall back to memory), so tests and
scripts can call them directly.
"""

from .api import SubmitResult, api_methods, api_status, api_tasks, cancel_job, parse_budgets, parse_param, submit_job
from .base import (
    ApiUnavailable,
    DashboardError,
    NotFound,
    StoreDown,
    api_url,
    clear_caches,
    database_label,
    database_url,
    export_csv,
    export_json,
    ping,
)
from .explorer_views import (
    HEATMAP_POSITIONS,
    HEATMAP_STEPS,
    HISTOGRAM_COLUMNS,
    MAX_SCATTER_POINTS,
    Explorer,
    PositionDetail,
    TraceInfo,
    explorer,
    held_overlap,
    position_detail,
    trace_info,
)
from .queries import (
    GRADINGS,
    RESULT_COLUMNS,
    SAMPLE_COLUMNS,
    filter_results,
    job,
    job_statuses,
    jobs,
    paper_choices,
    paper_match,
    paper_overlay,
    paper_source,
    results,
    run_label,
    runs,
    samples,
    trace_samples,
)
from .sample_views import (
    SampleView,
    TokenTexts,
    char_offset,
    reference_sample_id,
    same_prompt_samples,
    sample,
    sample_label,
    sample_view,
    token_texts,
    verdict_symbol,
)

__all__ = [
    "GRADINGS",
    "HEATMAP_POSITIONS",
    "HEATMAP_STEPS",
    "HISTOGRAM_COLUMNS",
    "MAX_SCATTER_POINTS",
    "RESULT_COLUMNS",
    "SAMPLE_COLUMNS",
    "ApiUnavailable",
    "DashboardError",
    "Explorer",
    "NotFound",
    "PositionDetail",
    "SampleView",
    "StoreDown",
    "SubmitResult",
    "TokenTexts",
    "TraceInfo",
    "api_methods",
    "api_status",
    "api_tasks",
    "api_url",
    "cancel_job",
    "char_offset",
    "clear_caches",
    "database_label",
    "database_url",
    "explorer",
    "export_csv",
    "export_json",
    "filter_results",
    "held_overlap",
    "job",
    "job_statuses",
    "jobs",
    "paper_choices",
    "paper_match",
    "paper_overlay",
    "paper_source",
    "parse_budgets",
    "parse_param",
    "ping",
    "position_detail",
    "reference_sample_id",
    "results",
    "run_label",
    "runs",
    "same_prompt_samples",
    "sample",
    "sample_label",
    "sample_view",
    "samples",
    "submit_job",
    "token_texts",
    "trace_info",
    "trace_samples",
    "verdict_symbol",
]
