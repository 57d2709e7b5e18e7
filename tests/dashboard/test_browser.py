"""A real browser: `vase dashboard` on a loopback port, every page loaded in headless Debian
Chromium (driven by Playwright), a full-page screenshot of each once its content has rendered; a
page error or content that never appears fails the test.

Screenshots go to a temporary folder, or to ``$VASE_DASHBOARD_SCREENSHOTS`` when it is set (to look
at them). ``scripts/test.sh`` installs Chromium when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def shots_dir(tmp_path) -> Path:
    wanted = os.environ.get("VASE_DASHBOARD_SCREENSHOTS")
    return Path(wanted) if wanted else tmp_path / "screenshots"


def _check(results) -> None:
    failed = {r.name: r.errors for r in results if not r.ok}
    assert not failed, f"page errors: {failed}"
    for r in results:
        assert r.screenshot is not None and r.screenshot.stat().st_size > 20_000, r.name  # a rendered page, not blank


def test_every_page_in_chromium(seeded_url, shots_dir, tmp_path):
    from dashboard.screenshots import capture, chromium_path, pages_for, running_dashboard

    chromium_path()  # fails with the install hint when Chromium is missing
    pages = pages_for(seeded_url)
    # the named content each page must show, read from the seeded store
    compare, sample, explorer, _ = pages
    assert set(compare.texts) == {"full", "snapkv", "vase:n_large=8"}  # the comparison table's rows
    assert sample.path.startswith("sample?sample=") and len(sample.texts) == 1 and len(sample.texts[0]) >= 20
    assert explorer.path.startswith("explorer?sample=") and "heatmaplayer" in explorer.content[0]
    with running_dashboard(seeded_url, api_url="http://127.0.0.1:9", log_path=tmp_path / "dashboard.log") as base:
        results = capture(base, shots_dir, pages)
    for r in results:
        print(f"\n[dashboard] {r.name}: {r.seconds:.1f} s -> {r.screenshot}")
    assert [r.name for r in results] == ["compare", "sample", "explorer", "jobs"]
    _check(results)


def test_a_page_without_its_content_fails(tmp_path):
    """An empty database: every page renders (an empty state), but none shows its content, so
    every capture fails, each naming what it waited for."""
    from dashboard.screenshots import PAGES, capture, running_dashboard

    db = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    with running_dashboard(db, api_url="http://127.0.0.1:9", log_path=tmp_path / "dashboard.log") as base:
        results = capture(base, tmp_path / "shots", PAGES[:3], content_timeout_s=5)
    for r in results:
        assert not r.ok, r.name
        assert any("no visible" in e for e in r.errors), r.errors
        assert r.screenshot is not None  # a screenshot of the failed page, to look at


def test_explorer_of_a_32k_trace_in_chromium(long_url, shots_dir, tmp_path):
    from dashboard.screenshots import capture, page_at, running_dashboard

    url, sample_id = long_url
    pages = [page_at("explorer-32k", f"explorer?sample={sample_id}"), page_at("sample-32k", f"sample?sample={sample_id}")]
    pages[1] = pages[1].expecting(texts=("(synthetic output)",))  # the output stored by tests/dashboard/synth.py
    with running_dashboard(url, api_url="http://127.0.0.1:9", log_path=tmp_path / "dashboard.log") as base:
        results = capture(base, shots_dir, pages)
    for r in results:
        print(f"\n[dashboard] {r.name}: {r.seconds:.1f} s -> {r.screenshot}")
    _check(results)
