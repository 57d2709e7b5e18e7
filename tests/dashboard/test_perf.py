"""Big traces stay fast: a 32k-token sample with a full trace (30 layers x 3 KV heads, budget 4096,
residual 64) renders in the cache explorer in under 2 s, data preparation and page together."""

from __future__ import annotations

import time

from dashboard import data
from dashboard.data import explorer_views, sample_views

from .conftest import errors_of

LIMIT_S = 2.0


def _clear_explorer_caches() -> None:
    data.clear_caches()
    for fn in (explorer_views._reader, explorer_views._explorer, sample_views._token_texts):
        fn.clear()


def test_explorer_data_for_a_32k_full_trace(long_url, dash_env):
    url, sample_id = long_url
    dash_env(url)
    data.ping()  # open (and migrate) the store outside the timing, as a running dashboard has
    _clear_explorer_caches()
    started = time.perf_counter()
    info = data.trace_info(sample_id)
    ex = data.explorer(sample_id, 17, 2)
    detail = data.position_detail(sample_id, 17, 2, 20_000, info.n_steps)
    elapsed = time.perf_counter() - started
    print(f"\n[dashboard] explorer data for a 32k-token full trace (cold caches): {elapsed * 1e3:.0f} ms")
    assert info.prompt_length + info.n_steps == 32768
    assert ex.heat.shape == (data.HEATMAP_POSITIONS, data.HEATMAP_STEPS)  # down-sampled, never the whole trace
    assert len(ex.timeline) <= data.MAX_SCATTER_POINTS < ex.n_evicted
    assert len(ex.life) <= data.MAX_SCATTER_POINTS
    assert ex.loop_step is not None and detail.position == 20_000
    assert elapsed < LIMIT_S


def test_explorer_page_renders_a_32k_full_trace(long_url, dash_env, app_test):
    url, sample_id = long_url
    dash_env(url)
    warm = app_test()  # a dashboard process that already served a page (modules imported)
    warm.switch_page("views/compare.py").run()
    _clear_explorer_caches()
    at = app_test()
    at.switch_page("views/explorer.py")
    at.query_params["sample"] = str(sample_id)
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    print(f"\n[dashboard] explorer page (AppTest run, cold caches) for a 32k-token full trace: {elapsed * 1e3:.0f} ms")
    assert not errors_of(at), errors_of(at)
    assert at.selectbox(key="explorer_sample").value == sample_id
    assert "32,256" in " ".join(str(m.value) for m in at.metric)  # decode steps
    assert len(at.get("plotly_chart")) >= 6
    assert elapsed < LIMIT_S
    # another layer and head: one more stream decoded
    started = time.perf_counter()
    at.slider(key="explorer_layer").set_value(29).run()
    at.selectbox(key="explorer_head").set_value(1).run()
    elapsed2 = (time.perf_counter() - started) / 2
    print(f"[dashboard] explorer page, switching layer/head: {elapsed2 * 1e3:.0f} ms per rerun")
    assert elapsed2 < LIMIT_S
