"""The dashboard on PostgreSQL (the compose stack's database): the same query layer and pages."""

from __future__ import annotations

import pytest

from dashboard import data

from .conftest import errors_of
from .synth import simulate

pytestmark = pytest.mark.postgres


def _seed(url: str) -> int:
    from vase.config import EMBEDDED_MODEL
    from vase.store import open_store

    store = open_store(url)
    rec = simulate(seed=3, prompt=64, total=640, budget=128, residual=16, layers=2, heads=2)
    full = store.get_or_create_run(
        "cli",
        "pg-full",
        task="synthetic",
        method="full",
        model=EMBEDDED_MODEL,
        budget=None,
        residual=16,
        trace_level="full",
    )
    vase = store.get_or_create_run(
        "cli",
        "pg-vase",
        task="synthetic",
        method="vase",
        model=EMBEDDED_MODEL,
        params={"n_large": 16},
        budget=128,
        residual=16,
        trace_level="full",
    )
    common = {
        "problem_id": "p0",
        "sample_index": 0,
        "prompt": " the" * 64,
        "output": "x " * 577,
        "tokens": [300 + (i % 50) for i in range(577)],
        "prompt_tokens": 64,
        "new_tokens": 577,
        "correct": True,
        "grade_status": "graded",
        "kv_bytes_peak": 1 << 20,
    }
    store.add_sample(full, **common)
    return int(
        store.add_sample(
            vase,
            **{**common, "kv_bytes_peak": 1 << 18, "kl_mean": 0.1, "top1_agreement": 0.9, "first_divergence": 5},
            trace=rec.record_for(0),
        )
    )


def test_pages_on_postgres(postgres_url, dash_env, app_test):
    sample_id = _seed(postgres_url)
    dash_env(postgres_url)
    frame = data.results()
    assert sorted(frame["method"]) == ["full", "vase:n_large=16"] and (frame["accuracy"] == 100.0).all()
    ex = data.explorer(sample_id, 1, 1)
    assert ex.n_evicted > 0 and ex.prompt_length == 64
    at = app_test()
    at.run()
    assert not errors_of(at), errors_of(at)
    assert len(at.dataframe[0].value) == 2
    at.switch_page("views/explorer.py").run()
    assert not errors_of(at), errors_of(at)
    assert at.selectbox(key="explorer_sample").value == sample_id
    at.switch_page("views/sample.py").run()
    assert not errors_of(at), errors_of(at)
