"""Every page through Streamlit's AppTest, against a store seeded by a real bench run."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from .conftest import errors_of

pytestmark = pytest.mark.slow


def _texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _title(chart) -> str:
    return json.loads(chart.proto.spec)["layout"]["title"]["text"]


def _values(array) -> list[float]:
    """A Plotly JSON array: a list, or numbers packed as a typed array ({"dtype", "bdata"})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


@pytest.fixture
def seeded_app(seeded_url, dash_env, app_test):
    dash_env(seeded_url)
    at = app_test()
    at.run()
    assert not errors_of(at), errors_of(at)
    return at


def test_compare_table_filters_and_plots(seeded_app):
    at = seeded_app
    assert at.title[0].value == "Compare methods"
    assert at.selectbox(key="compare_model").value == "embedded:smollm2-135m-instruct"
    for key in ("compare_tasks", "compare_methods", "compare_budgets", "compare_sources"):
        assert at.button_group(key=key) is not None
    table = at.dataframe(key="compare_table").value
    assert sorted(table["method"]) == ["full", "snapkv", "vase:n_large=8"]
    assert {"accuracy", "accuracy_se", "loop_rate", "kl_mean", "top1_agreement", "tokens_per_s", "kv_mib"} <= set(
        table.columns
    )
    assert {"accuracy_flex", "accuracy_flex_se", "pass_at_k_flex"} <= set(table.columns)
    assert table["accuracy_flex"].notna().all()  # the bench stored both verdicts
    assert len(at.get("download_button")) == 2
    assert _charts(at) == 4  # accuracy vs memory (the top chart), vs budget, loops, KL
    assert _title(at.get("plotly_chart")[0]) == "Accuracy (flexible) vs KV memory · arith-chain"

    # the top chart: one point per method and budget at its peak KV memory, with its flexible
    # accuracy and standard error, labelled
    top = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    points = {t["name"]: t for t in top if t.get("mode") != "text"}
    assert sorted(points) == sorted(table["method"])
    for _, row in table.iterrows():
        trace = points[row["method"]]
        assert _values(trace["x"]) == [pytest.approx(row["kv_mib"])]
        assert _values(trace["y"]) == [pytest.approx(row["accuracy_flex"])]
        assert _values(trace["error_y"]["array"]) == [pytest.approx(row["accuracy_flex_se"])]
    labels = " ".join(next(t for t in top if t.get("mode") == "text")["text"])
    assert "full" in labels and "snapkv · 32" in labels and "vase:n_large=8 · 32" in labels

    # strict grading: the same charts on the strict columns
    at.button_group(key="compare_grading").set_value("strict").run()
    assert _title(at.get("plotly_chart")[0]) == "Accuracy (strict) vs KV memory · arith-chain"
    assert _title(at.get("plotly_chart")[1]) == "Accuracy (strict) vs budget · arith-chain"
    strict = {t["name"]: t for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"] if t.get("mode") != "text"}
    for _, row in table.iterrows():
        assert _values(strict[row["method"]]["y"]) == [pytest.approx(row["accuracy"])]
        assert _values(strict[row["method"]]["error_y"]["array"]) == [pytest.approx(row["accuracy_se"])]

    at.button_group(key="compare_methods").set_value(["snapkv"]).run()
    assert list(at.dataframe(key="compare_table").value["method"]) == ["snapkv"]
    at.button_group(key="compare_methods").set_value(["full", "snapkv", "vase:n_large=8"]).run()
    at.button_group(key="compare_budgets").set_value(["full"]).run()
    table = at.dataframe(key="compare_table").value
    assert list(table["method"]) == ["full"] and list(table["budget"]) == ["full"]
    assert any("Only the full cache ran" in t for t in _texts(at, "info"))
    at.button_group(key="compare_budgets").set_value([]).run()
    assert any("No run matches these filters" in t for t in _texts(at, "info"))
    assert not errors_of(at)


def test_compare_paper_overlay(seeded_app):
    at = seeded_app
    at.toggle(key="compare_overlay").set_value(True).run()
    assert any("publishes no figures" in t for t in _texts(at, "info"))
    at.selectbox(key="compare_paper_model").set_value("Qwen3-14B")
    at.selectbox(key="compare_paper_task").set_value("aime26").run()
    assert any("Qwen3-14B / aime26" in t for t in _texts(at, "caption"))
    assert _charts(at) == 4 and not errors_of(at)


def test_sample_page(seeded_app):
    at = seeded_app
    at.switch_page("views/sample.py").run()
    assert not errors_of(at), errors_of(at)
    assert at.title[0].value == "Sample"
    for key in ("sample_task", "sample_model", "sample_run", "sample_pick"):
        assert at.selectbox(key=key) is not None
    # the default run is one that evicts; its verdict, output and agreement are shown
    run_label = at.selectbox(key="sample_run").format_func(at.selectbox(key="sample_run").value)
    assert "full cache" not in run_label
    verdicts = _texts(at, "error") + _texts(at, "success") + _texts(at, "warning")
    assert any(v.startswith(("**Wrong**", "**Correct**", "**Not graded**")) for v in verdicts)
    assert any("Agreement with the full cache" in s.value for s in at.subheader)
    assert _charts(at) == 1  # per-token KL
    html = " ".join(str(m.value) for m in at.markdown)
    assert "<div style=" in html  # output boxes
    assert any(b.label == "Open in the cache explorer" for b in at.button)

    # filters change what is listed: the full-cache run has the reference output
    from dashboard import data

    runs = data.runs()
    full = int(runs[runs["method_name"] == "full"]["run_id"].iloc[0])
    at.selectbox(key="sample_run").set_value(full).run()
    assert any("This is the full-cache output" in t for t in _texts(at, "info"))
    full_samples = data.samples([full])
    at.checkbox(key="sample_only_wrong").check().run()
    n_wrong = int((full_samples["correct"] == False).sum())  # noqa: E712
    if n_wrong:
        assert len(at.selectbox(key="sample_pick").options) == n_wrong
    else:
        assert any("No sample of this run matches the filters" in t for t in _texts(at, "info"))
    at.checkbox(key="sample_only_wrong").uncheck()
    at.checkbox(key="sample_only_loops").check().run()
    n_loops = int(full_samples["loop_detected"].fillna(False).astype(bool).sum())
    if n_loops:
        assert len(at.selectbox(key="sample_pick").options) == n_loops
    else:
        assert any("No sample of this run matches the filters" in t for t in _texts(at, "info"))
    assert not errors_of(at)


def test_sample_loop_is_highlighted(long_url, page_of_sample):
    url, sample_id = long_url
    at = page_of_sample(url, "sample", sample_id)
    assert any("Repetition loop" in t for t in _texts(at, "warning"))
    html = " ".join(str(m.value) for m in at.markdown)
    assert "<mark" in html
    assert any("contains the loop" in e.label for e in at.expander) or "#f9c6de" in html


def test_explorer_page(seeded_app):
    at = seeded_app
    at.switch_page("views/explorer.py").run()
    assert not errors_of(at), errors_of(at)
    assert at.title[0].value == "Cache explorer"
    for key in ("explorer_task", "explorer_model", "explorer_run", "explorer_sample", "explorer_head"):
        assert at.selectbox(key=key) is not None
    assert at.slider(key="explorer_layer").value == 0
    assert "full cache" not in at.selectbox(key="explorer_run").format_func(at.selectbox(key="explorer_run").value)
    n = _charts(at)
    assert n >= 6  # heatmap, magnitudes x2, lifetime, survival, timeline (+ age)
    assert "layer 0, KV head 0" in _title(at.get("plotly_chart")[0])
    # the value-magnitude distribution of kept vs evicted tokens (the trace keeps histograms)
    assert "Value-magnitude distribution: kept vs evicted · layer 0" in _title(at.get("plotly_chart")[1])
    at.slider(key="explorer_layer").set_value(7).run()
    at.selectbox(key="explorer_head").set_value(2).run()
    assert "layer 7, KV head 2" in _title(at.get("plotly_chart")[0])
    dist = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert "layer 7" in dist["layout"]["title"]["text"]
    assert {"kept", "evicted"} <= {(t.get("name") or "").split(" ")[0] for t in dist["data"]}
    # the token inspector
    at.number_input(key="explorer_position").set_value(3).run()
    assert any("Position **3**" in str(m.value) for m in at.markdown)
    # side by side with another method on the same prompt
    at.toggle(key="explorer_compare").set_value(True).run()
    assert at.selectbox(key="explorer_other") is not None
    assert _charts(at) == n + 4  # two heatmaps, overlap, survival
    assert not errors_of(at), errors_of(at)


def test_explorer_from_the_sample_page(seeded_app):
    at = seeded_app
    at.switch_page("views/sample.py").run()
    sample_id = at.selectbox(key="sample_pick").value
    next(b for b in at.button if b.label == "Open in the cache explorer").click().run()
    assert at.title[0].value == "Cache explorer"
    assert at.selectbox(key="explorer_sample").value == sample_id
    assert not errors_of(at)


def test_jobs_page_without_api(seeded_app):
    at = seeded_app
    at.switch_page("views/jobs.py").run()
    assert not errors_of(at), errors_of(at)
    assert at.title[0].value == "Jobs"
    assert at.multiselect(key="jobs_status") is not None and at.toggle(key="jobs_autorefresh").value is True
    assert any("not reachable" in t and "127.0.0.1:9" in t for t in _texts(at, "warning"))
    assert any("No jobs" in t for t in _texts(at, "info"))


@pytest.mark.parametrize("page", ["views/compare.py", "views/sample.py", "views/explorer.py", "views/jobs.py"])
def test_empty_database(page, tmp_path, dash_env, app_test):
    dash_env(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    at = app_test()
    at.switch_page(page).run()
    assert not errors_of(at), errors_of(at)
    assert _texts(at, "info") or _texts(at, "warning")


@pytest.mark.parametrize("page", ["views/compare.py", "views/sample.py", "views/explorer.py", "views/jobs.py"])
def test_database_down(page, dash_env, app_test):
    dash_env("postgresql://nobody@127.0.0.1:1/vase")
    at = app_test()
    at.switch_page(page).run()
    assert not at.exception
    assert any("Database unavailable" in t for t in _texts(at, "error")), _texts(at, "error")
