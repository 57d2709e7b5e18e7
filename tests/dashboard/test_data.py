"""The query layer (dashboard.data) against a store seeded by a real bench run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import data

pytestmark = pytest.mark.slow


@pytest.fixture
def seeded(seeded_url, dash_env):
    dash_env(seeded_url)
    return seeded_url


def _run_id(method: str) -> int:
    runs = data.runs()
    return int(runs[runs["method_name"] == method]["run_id"].iloc[0])


def _sample_id(method: str) -> int:
    return int(data.samples([_run_id(method)])["sample_id"].iloc[0])


def test_results_table(seeded):
    frame = data.results()
    assert sorted(frame["method"]) == ["full", "snapkv", "vase:n_large=8"]
    assert set(frame["task"]) == {"arith-chain"}
    full = frame[frame["method"] == "full"].iloc[0]
    assert pd.isna(full["budget"])
    evicting = frame[frame["method"] != "full"]
    assert (evicting["budget"] == 32).all()
    assert evicting["kl_mean"].notna().all() and evicting["top1_agreement"].between(0, 100).all()
    assert frame["accuracy"].between(0, 100).all()
    assert (frame["kv_mib"] > 0).all()
    assert (evicting["kv_mib"] < float(full["kv_mib"])).all()  # a budget caps the cache
    assert (frame["n_samples"] == 1).all()


def test_filters(seeded):
    frame = data.results()
    assert list(data.filter_results(frame, methods=["snapkv"])["method"]) == ["snapkv"]
    assert list(data.filter_results(frame, budgets=["full"])["method"]) == ["full"]
    assert len(data.filter_results(frame, budgets=[32])) == 2
    assert data.filter_results(frame, tasks=["gsm8k"]).empty
    assert data.export_csv(frame).startswith(b"task,model,method")
    assert b'"method":"snapkv"' in data.export_json(frame).replace(b" ", b"")


def test_samples_and_sample_view(seeded):
    vase_sample = _sample_id("vase")
    view = data.sample_view(vase_sample)
    smp = view.sample
    assert view.method == "vase:n_large=8" and smp["problem_id"].startswith("arith-chain")
    assert view.reference is not None and view.reference["id"] == _sample_id("full")
    assert view.kl_per_token and len(view.kl_per_token) <= len(view.reference["tokens"])
    assert len(view.tokens) == smp["new_tokens"]
    # token texts: the prompt re-tokenizes to exactly what the run saw
    texts = data.token_texts(vase_sample)
    assert texts.available and not texts.note
    assert len(texts.prompt) == smp["metrics"]["prompt_tokens"]
    assert "".join(texts.prompt).startswith("<|im_start|>")
    assert data.reference_sample_id(_sample_id("full")) is None
    others = data.same_prompt_samples(vase_sample)
    assert sorted(others["sample_id"]) == sorted([_sample_id("full"), _sample_id("snapkv")])


def test_explorer_matches_the_trace(seeded):
    from vase.store import open_store
    from vase.traces import TraceReader

    sid = _sample_id("vase")
    info = data.trace_info(sid)
    assert info.has_full and info.num_layers == 30 and info.num_kv_heads == 3 and info.n_events > 0
    assert set(info.magnitudes["group"]) == {"kept", "evicted"}
    ex = data.explorer(sid, 5, 1)
    reader = TraceReader(open_store(seeded).get_trace(sid)["data"])
    death = reader.eviction_steps(5, 1)
    assert ex.n_evicted == int((death >= 0).sum())
    assert ex.heat.shape == (len(ex.position_edges) - 1, len(ex.step_edges) - 1)
    assert len(ex.row_labels) == ex.heat.shape[0] and "│" in ex.row_labels[0]
    assert set(ex.timeline["position"]) <= set(np.flatnonzero(death >= 0))
    assert ex.km["survival"].between(0, 1).all()
    # the position inspector agrees with held_positions
    step = ex.n_steps
    held = set(reader.held_positions(5, 1, step).tolist())
    detail = data.position_detail(sid, 5, 1, 10, step, radius=8)
    for row in detail.context.itertuples():
        assert (row.state == "held") == (row.position in held)
    assert len(detail.heads) == 3
    overlap = data.held_overlap(sid, _sample_id("snapkv"), 5, 1)
    assert overlap["jaccard"].between(0, 1).all() and overlap["jaccard"].iloc[0] == 1.0


def test_no_trace_and_missing_sample(seeded):
    with pytest.raises(data.NotFound):
        data.sample(10_000)
    with pytest.raises(data.NotFound):
        data.explorer(10_000, 0, 0)


def test_store_down_is_explained(dash_env):
    dash_env("postgresql://nobody@127.0.0.1:1/vase")
    with pytest.raises(data.StoreDown, match="not reachable|Cannot open"):
        data.results()


def test_api_down_is_explained(dash_env, seeded_url):
    dash_env(seeded_url)
    ok, message = data.api_status()
    assert not ok and "not reachable" in message and "127.0.0.1:9" in message
    with pytest.raises(data.ApiUnavailable):
        data.submit_job({"task": "arith-chain"})


def test_error_bodies_map_to_fields():
    from dashboard.data.api import form_errors
    from vase.client import ApiError

    payload = {"methods": [{"name": "full"}, {"name": "vase", "params": {"n_large": "x"}}]}
    ours = form_errors(
        ApiError.from_body(
            422,
            {
                "error": "invalid_request",
                "message": "m",
                "errors": [
                    {"field": "budgets[0]", "rule": "must be a multiple of residual (32)"},
                    {"field": "methods[1].params.n_large", "rule": "must be an integer"},
                    {"field": "generation.temperature", "rule": "must be > 0"},
                ],
            },
        ),
        payload,
    )
    assert ours.field_errors["budgets"] == "must be a multiple of residual (32)"
    assert ours.field_errors["param:vase:n_large"] == "must be an integer"
    assert ours.field_errors["temperature"] == "must be > 0"
    # what the API makes of a schema error (api/errors.py): the field's body path and the rule
    schema = form_errors(
        ApiError.from_body(
            422,
            {
                "error": "invalid_request",
                "message": "residual: Input should be greater than or equal to 1",
                "errors": [{"field": "residual", "location": "body", "rule": "Input should be greater than or equal to 1"}],
            },
        ),
        payload,
    )
    assert schema.field_errors["residual"].startswith("Input should be")
    unplaced = form_errors(
        ApiError.from_body(422, {"error": "invalid_request", "message": "m", "errors": [{"field": "x", "rule": "bad"}]}),
        payload,
    )
    assert unplaced.message == "x: bad" and not unplaced.field_errors
    other = form_errors(ApiError.from_body(409, {"error": "conflict", "message": "something else broke"}), payload)
    assert other.message == "something else broke" and not other.field_errors


def test_parsers():
    assert data.parse_budgets("64, 128 256") == [64, 128, 256]
    with pytest.raises(ValueError, match="'x'"):
        data.parse_budgets("64,x")
    assert data.parse_param("16") == 16 and data.parse_param("true") is True and data.parse_param("") is None
    assert data.parse_param("range") == "range"
