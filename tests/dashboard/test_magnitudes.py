"""The explorer's value-magnitude section: the kept vs evicted distribution from the histograms a
trace summary keeps, and the fallback for traces recorded before it kept them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dashboard import data

from .conftest import errors_of
from .synth import simulate


@pytest.fixture(scope="module")
def mag_url(tmp_path_factory) -> tuple[str, dict[str, int]]:
    from vase.store import open_store

    url = f"sqlite:///{tmp_path_factory.mktemp('dash-mag') / 'mag.sqlite'}"
    store = open_store(url)
    ids = {}
    for name, level in (("new", "full"), ("old", "full"), ("old-summary", "summary")):
        run = store.get_or_create_run(
            "cli", f"mag-{name}", task="aime25", method="vase", model="Qwen/Qwen3-4B", budget=128, residual=16,
            trace_level=level,
        )
        trace = simulate(seed=1, prompt=64, total=640, budget=128, residual=16, layers=2, heads=2, level=level)
        record = trace.record_for(0)
        if name.startswith("old"):  # a trace summary as written before it kept histograms
            for layer in record["meta"]["layers"]:
                for key in ("kept_magnitude", "evicted_magnitude"):
                    layer[key].pop("hist", None)
        ids[name] = int(
            store.add_sample(
                run, problem_id="aime25-0", sample_index=0, prompt="Find x.", output="x is 3 " * 100,
                tokens=[11 + (i % 7) for i in range(577)], prompt_tokens=64, new_tokens=577, trace=record,
            )
        )
    return url, ids


def _chart(at, title: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if title in ((spec["layout"].get("title") or {}).get("text") or ""):
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def test_histograms_in_trace_info(mag_url, dash_env):
    url, ids = mag_url
    dash_env(url)
    info = data.trace_info(ids["new"])
    h = info.histograms
    assert list(h.columns) == data.HISTOGRAM_COLUMNS and set(h["group"]) == {"kept", "evicted"}
    assert (h["bin_lo"] < h["bin_hi"]).all() and (h["bin_lo"] > 0).all()
    n = info.magnitudes.set_index(["layer", "group"])["n"]
    for (layer, group), g in h.groupby(["layer", "group"]):
        assert g["count"].sum() == n[(layer, group)]
        assert g["share"].sum() == pytest.approx(1.0)
    # re-binned to 8 per decade: the same tokens in bins 4x as wide, on the same grid
    fine, coarse = info.histogram(1), info.histogram(1, 8)
    assert coarse["count"].sum() == fine["count"].sum() and len(coarse) < len(fine)
    assert np.allclose(np.log10(coarse["bin_lo"]) * 8, np.rint(np.log10(coarse["bin_lo"]) * 8))
    assert data.trace_info(ids["old"]).histograms.empty and data.trace_info(ids["old"]).histogram(0).empty


@pytest.mark.parametrize("name", ["new", "old", "old-summary"])
def test_explorer_magnitude_section(name, mag_url, page_of_sample):
    url, ids = mag_url
    at = page_of_sample(url, "explorer", ids[name])
    _chart(at, "Large-value tokens per layer")  # the per-layer p99/max chart stays
    if name == "new":
        spec = _chart(at, "Value-magnitude distribution: kept vs evicted · layer 0")
        assert spec["layout"]["xaxis"]["type"] == "log" and spec["layout"]["yaxis"]["type"] == "log"
        names = [t.get("name") or "" for t in spec["data"]]
        assert any(x.startswith("kept (n=") for x in names) and any(x.startswith("evicted (n=") for x in names)
        assert any("VaSE reserves them" in str(c.value) for c in at.caption)
        at.toggle(key="explorer_mag_log").set_value(False).run()
        assert _chart(at, "Value-magnitude distribution")["layout"]["yaxis"].get("type") != "log"
        at.slider(key="explorer_layer").set_value(1).run()
        _chart(at, "Value-magnitude distribution: kept vs evicted · layer 1")
        assert not errors_of(at), errors_of(at)
    else:
        _chart(at, "Value magnitude of kept vs evicted tokens · layer 0")  # the old bars
        assert any("before traces kept value-magnitude histograms" in str(i.value) for i in at.info)
        with pytest.raises(AssertionError):
            _chart(at, "Value-magnitude distribution")
