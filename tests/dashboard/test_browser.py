"""A real browser: `vase dashboard` on a loopback port, every page loaded in headless Debian
Chromium (driven by Playwright), a full-page screenshot of each; a page error fails the test.

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
    from dashboard.screenshots import capture, chromium_path, running_dashboard

    chromium_path()  # fails with the install hint when Chromium is missing
    with running_dashboard(seeded_url, api_url="http://127.0.0.1:9", log_path=tmp_path / "dashboard.log") as base:
        results = capture(base, shots_dir)
    for r in results:
        print(f"\n[dashboard] {r.name}: {r.seconds:.1f} s -> {r.screenshot}")
    assert [r.name for r in results] == ["compare", "sample", "explorer", "jobs"]
    _check(results)


def test_explorer_of_a_32k_trace_in_chromium(long_url, shots_dir, tmp_path):
    from dashboard.screenshots import capture, running_dashboard

    url, sample_id = long_url
    with running_dashboard(url, api_url="http://127.0.0.1:9", log_path=tmp_path / "dashboard.log") as base:
        results = capture(
            base,
            shots_dir,
            [("explorer-32k", f"explorer?sample={sample_id}"), ("sample-32k", f"sample?sample={sample_id}")],
        )
    for r in results:
        print(f"\n[dashboard] {r.name}: {r.seconds:.1f} s -> {r.screenshot}")
    _check(results)
