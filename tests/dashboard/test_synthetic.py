"""Pages on small synthetic stores: a model the paper reports (the overlay matches by itself), a
model without a local tokenizer (positions without text), and a summary-level trace."""

from __future__ import annotations

import json

import pytest

from .conftest import errors_of
from .synth import simulate


@pytest.fixture(scope="module")
def qwen_url(tmp_path_factory) -> tuple[str, dict[str, int]]:
    from vase.store import open_store

    url = f"sqlite:///{tmp_path_factory.mktemp('dash-qwen') / 'qwen.sqlite'}"
    store = open_store(url)
    ids = {}
    common = {
        "problem_id": "aime25-0",
        "sample_index": 0,
        "prompt": "Find x.",
        "output": "x is 3 " * 200,
        "tokens": [11 + (i % 7) for i in range(577)],
        "prompt_tokens": 64,
        "new_tokens": 577,
        "correct": True,
        "grade_status": "graded",
        "extracted": "3",
        "answer": "3",
    }
    for method, budget, level in (
        ("full", None, "off"),
        ("vase", 128, "full"),
        ("snapkv", 128, "summary"),
        ("vase", 256, "full"),
    ):
        run = store.get_or_create_run(
            "cli",
            f"qwen-{method}-{budget}",
            task="aime25",
            method=method,
            model="Qwen/Qwen3-4B",
            budget=budget,
            residual=16,
            trace_level=level,
        )
        trace = None
        if level != "off":
            trace = simulate(
                seed=budget or 0,
                prompt=64,
                total=640,
                budget=budget or 128,
                residual=16,
                layers=2,
                heads=2,
                level=level,
            ).record_for(0)
        ids[f"{method}@{budget}"] = int(
            store.add_sample(run, **common, kv_bytes_peak=(budget or 640) * 1024, trace=trace)
        )
    return url, ids


def test_paper_overlay_matches_the_model_and_task(qwen_url, dash_env, app_test):
    url, _ = qwen_url
    dash_env(url)
    at = app_test()
    at.run()
    at.toggle(key="compare_overlay").set_value(True).run()
    assert not errors_of(at), errors_of(at)
    captions = " ".join(str(c.value) for c in at.caption)
    assert "the paper's Qwen3-4B / AIME25 figures" in captions
    assert not any("publishes no figures" in str(i.value) for i in at.info)
    by_budget = next(c for c in at.get("plotly_chart") if c.key == "compare_acc_budget")  # the overlaid chart
    names = {t.get("name") for t in json.loads(by_budget.proto.spec)["data"]}
    assert {"paper · vase", "paper · snapkv", "paper · vase-dkv", "vase"} <= names


def test_explorer_without_a_tokenizer(qwen_url, page_of_sample):
    at = page_of_sample(qwen_url[0], "explorer", qwen_url[1]["vase@128"])
    assert any("No tokenizer for Qwen/Qwen3-4B" in str(c.value) for c in at.caption)
    assert len(at.get("plotly_chart")) >= 6


def test_explorer_with_a_summary_trace(qwen_url, page_of_sample):
    at = page_of_sample(qwen_url[0], "explorer", qwen_url[1]["snapkv@128"])
    assert any("`summary` level" in str(i.value) for i in at.info)
    assert len(at.get("plotly_chart")) == 2  # the value-magnitude charts only


def test_sample_page_verdict_correct(qwen_url, page_of_sample):
    at = page_of_sample(qwen_url[0], "sample", qwen_url[1]["vase@256"])
    assert any(str(s.value).startswith("**Correct**") for s in at.success)
    # the full-cache output of the same prompt is found; fidelity was not run for it
    assert any("Full-cache output" in str(m.value) for m in at.markdown)
    assert any("was not measured" in str(i.value) for i in at.info)
