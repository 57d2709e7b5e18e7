"""Load every dashboard page in headless Chromium, save full-page screenshots, report page errors.

    python -m dashboard.screenshots --db sqlite:///path/to/vase.sqlite --out shots/
    python -m dashboard.screenshots --url http://127.0.0.1:8501 --out shots/    # a dashboard already running

Without ``--url`` it starts ``vase dashboard`` on a free loopback port (against ``--db``, or the
configured database) and stops it afterwards. The browser is Debian's ``chromium``
(``/usr/bin/chromium``; ``scripts/test.sh`` installs it) driven by Playwright, which downloads no
browser of its own.

Each page is screenshot only once its content has rendered: every page names the elements that
must be visible (Compare: rows of the comparison table and the points of its top chart; Sample: the
output; Cache explorer: the heatmap; Jobs: its status filter) and, with ``--db``, the content read
from that database that must be shown (Compare: a row per method; Sample and Cache explorer: a
stored sample opened by its link, its output text). A page *fails* when that content does not
appear, when Streamlit shows an exception (``stException``) or the dashboard's "Something went
wrong" box, or when it never finishes loading: a screenshot of an empty page is a failure. Exit
status: 0 when every page rendered its content cleanly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path



@dataclass(frozen=True)
class Page:
    """A page to capture: its name, its URL path, and what it must show once it has rendered."""

    name: str
    path: str
    #: CSS selectors of elements that must be visible (found by the key of the Streamlit element)
    content: tuple[str, ...] = ()
    #: CSS selectors of elements that must exist (a data grid's cells: drawn on a canvas, their
    #: accessible copies have no size)
    present: tuple[str, ...] = ()
    #: texts that must be shown: a cell of a data grid, or within the page's visible text
    texts: tuple[str, ...] = ()

    def expecting(self, path: str | None = None, texts: tuple[str, ...] = ()) -> Page:
        return replace(self, path=self.path if path is None else path, texts=self.texts + texts)


GRID_CELL = '[data-testid^="glide-cell-"]'  # a cell of a Streamlit data grid (canvas-drawn; these are its accessible copy)
COMPARE = Page(
    "compare",
    "",
    (".st-key-compare_table canvas", ".st-key-compare_acc_memory .scatterlayer .point"),
    ('.st-key-compare_table [data-testid^="glide-cell-"][data-testid$="-0"]',),  # a cell of the first row
)
SAMPLE = Page("sample", "sample", (".st-key-sample_output [data-testid='stMarkdownContainer'] div",))
EXPLORER = Page("explorer", "explorer", (".st-key-explorer_heatmap .heatmaplayer image",))
#: The explorer of a database without any ``full`` trace: its explanation of what to run.
EXPLORER_UNTRACED = Page("explorer", "explorer", ('[data-testid="stMain"] [data-testid="stAlert"]',))
JOBS = Page("jobs", "jobs", (".st-key-jobs_status",))
#: The pages, with the content every one of them shows whatever the data; the default page
#: (Compare) lives at the root.
PAGES = [COMPARE, SAMPLE, EXPLORER, JOBS]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
WIDTH, HEIGHT = 1400, 1000


@dataclass
class PageResult:
    name: str
    url: str
    screenshot: Path | None
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def chromium_path() -> str:
    for candidate in (
        os.environ.get("VASE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("Chromium is not installed: `apt-get install chromium` (scripts/test.sh does it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vase_command() -> list[str]:
    script = Path(sys.executable).parent / "vase"
    if script.exists():
        return [str(script)]
    found = shutil.which("vase")
    if found:
        return [found]
    return [sys.executable, "-c", "from vase.cli import app; app()"]


@contextlib.contextmanager
def running_dashboard(
    db: str | None = None,
    api_url: str | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[str]:
    """Start ``vase dashboard`` on a loopback port; yields its base URL; stops it on exit."""
    port = port or _free_port()
    cmd = [*_vase_command(), "dashboard", "--port", str(port), "--address", "127.0.0.1"]
    if db:
        cmd += ["--db", db]
    if api_url:
        cmd += ["--api-url", api_url]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"vase dashboard exited with status {proc.returncode}" + (f" (log: {log_path})" if log_path else "")
                )
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vase dashboard did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if log_path:
            log.close()


_PAGE_ERRORS_JS = """() => {
  const out = [];
  for (const e of document.querySelectorAll('[data-testid="stException"]'))
    out.push('exception: ' + e.innerText.slice(0, 400));
  for (const e of document.querySelectorAll('[data-testid="stAlertContentError"]')) {
    if (e.innerText.includes('Something went wrong')) out.push('error box: ' + e.innerText.slice(0, 400));
  }
  return out;
}"""

_BUSY_JS = """() => {
  const w = document.querySelector('[data-testid="stStatusWidget"]');
  const skeleton = document.querySelector('[data-testid="stSkeleton"]');
  return !!(w && /running|connecting/i.test(w.innerText || '')) || !!skeleton;
}"""

# What of a page's expected content is missing: selectors without a visible element, texts neither
# in a grid cell nor in the main area's visible text (whitespace collapsed on both sides).
_MISSING_JS = """([selectors, present, texts, cell]) => {
  const visible = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const squash = t => (t || '').replace(/\\s+/g, ' ').trim();
  const main = document.querySelector('[data-testid="stMain"]');
  const shown = squash(main ? main.innerText : '');
  const cells = Array.from(document.querySelectorAll(cell)).map(c => squash(c.textContent));
  const missing = [];
  for (const s of selectors)
    if (!Array.from(document.querySelectorAll(s)).some(visible)) missing.push('no visible ' + s);
  for (const s of present)
    if (!document.querySelector(s)) missing.push('no ' + s);
  for (const t of texts) {
    const want = squash(t);
    if (!cells.includes(want) && !shown.includes(want)) missing.push('text not shown: ' + JSON.stringify(want));
  }
  return missing;
}"""


def capture(
    base: str,
    out_dir: Path,
    pages: list[Page] | None = None,
    *,
    settle_ms: int = 1000,
    timeout_s: float = 60.0,
    content_timeout_s: float | None = None,
) -> list[PageResult]:
    """Load each page headless (within ``timeout_s``), wait until its expected content is visible
    and Streamlit has finished running it, screenshot the whole page (the viewport is stretched to
    the page's height) and collect page errors; content still missing ``content_timeout_s``
    (default ``timeout_s``) after the page loaded is an error."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            console_errors: list[str] = []
            page.on("pageerror", lambda exc: console_errors.append(f"javascript: {exc}"))
            for spec in pages or PAGES:
                console_errors.clear()
                started = time.monotonic()
                url = f"{base}/{spec.path}"
                errors: list[str] = []
                shot: Path | None = out_dir / f"{spec.name}.png"
                try:
                    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
                    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
                    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_s * 1000)
                    errors += _wait_for_content(page, spec, content_timeout_s or timeout_s)
                    _settle(page, settle_ms, timeout_s)
                    height = page.evaluate(_HEIGHT_JS)
                    page.set_viewport_size({"width": WIDTH, "height": int(min(max(HEIGHT, height + 40), 12000))})
                    _settle(page, 800, timeout_s)
                    if not errors:  # still there after the page settled (a rerun may have replaced it)
                        errors += page.evaluate(_MISSING_JS, _missing_args(spec))
                    page.screenshot(path=str(shot))
                    errors += page.evaluate(_PAGE_ERRORS_JS)
                    if page.get_by_text("Page not found").count():
                        errors.append("Streamlit says: page not found")
                except Exception as exc:  # noqa: BLE001 - a page that does not load is a failed page
                    errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    with contextlib.suppress(Exception):
                        page.screenshot(path=str(shot))
                    if not shot.exists():
                        shot = None
                errors += console_errors
                results.append(PageResult(spec.name, url, shot, time.monotonic() - started, errors))
        finally:
            browser.close()
    return results


def _wait_for_content(page, spec: Page, timeout_s: float) -> list[str]:
    """Wait until every expected element and text of ``spec`` is on the page; what is still
    missing after ``timeout_s`` (empty when all of it came)."""
    args = _missing_args(spec)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = page.evaluate(_MISSING_JS, args)
        if not missing:
            return []
        if time.monotonic() > deadline:
            return [f"after {timeout_s:.0f} s: {m}" for m in missing]
        page.wait_for_timeout(200)


def page_at(name: str, path: str) -> Page:
    """A capture named ``name`` of ``path`` (``explorer?sample=3``), expecting the content of the
    page it opens."""
    page = path.split("?", 1)[0].strip("/")
    known = next((p for p in PAGES if p.path == page), None)
    if known is None:
        raise ValueError(f"path {path!r}: must open one of the pages {[p.path or '/' for p in PAGES]}")
    return replace(known, name=name, path=path)


def _missing_args(spec: Page) -> list:
    return [list(spec.content), list(spec.present), list(spec.texts), GRID_CELL]


def pages_for(db: str) -> list[Page]:
    """:data:`PAGES` with the content a database's data must show: Compare a row per method of
    the model it opens on (the first in order); Sample a stored sample of a method that evicts
    (else any), opened by its link, with the text of its output; Cache explorer a sample with a
    ``full`` trace, opened by its link (its heatmap), or without one the page's explanation."""
    from vase.methods import method_label
    from vase.store import open_store

    store = open_store(db)
    rows = store.results()
    compare, sample, explorer = COMPARE, SAMPLE, EXPLORER_UNTRACED
    if rows:
        model = sorted({r["model"] for r in rows})[0]
        labels = sorted({method_label(r["method"], r.get("params") or {}) for r in rows if r["model"] == model})
        compare = COMPARE.expecting(texts=tuple(labels))
    runs = sorted(store.list_runs(), key=lambda r: (r["method"] == "full", r["id"]))
    shown = next((smp for r in runs for smp in store.list_samples(run_id=r["id"], limit=1)), None)
    if shown is not None:
        sample = SAMPLE.expecting(f"sample?sample={shown['id']}", (_visible_output(shown),))
    traced = next(
        (smp for r in runs if r["trace_level"] == "full" for smp in store.list_samples(run_id=r["id"], limit=1)),
        None,
    )
    if traced is not None:
        explorer = EXPLORER.expecting(f"explorer?sample={traced['id']}")
    return [compare, sample, explorer, JOBS]


def _visible_output(sample: dict) -> str:
    """The start of the output's text the Sample page shows open (the thinking is collapsed)."""
    output, thinking = sample.get("output") or "", sample.get("thinking")
    if thinking and thinking in output:
        output = output.replace(thinking, " ", 1)
    words = " ".join(output.split())
    return words[:60].rsplit(" ", 1)[0] if len(words) > 60 else words


_HEIGHT_JS = "() => { const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 0 }"


def _settle(page, quiet_ms: int, timeout_s: float) -> None:
    """Wait until the app is not running and its page has kept the same height for ``quiet_ms``."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    last_height = -1
    while time.monotonic() < deadline:
        busy = page.evaluate(_BUSY_JS)
        height = page.evaluate(_HEIGHT_JS)
        now = time.monotonic()
        if busy or height != last_height:
            quiet_since = None if busy else now
            last_height = height
        elif quiet_since is None:
            quiet_since = now
        elif (now - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(150)
    raise TimeoutError("the page kept running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dashboard-screenshots"), help="Folder for the PNG files.")
    parser.add_argument("--db", help="Database URL for the dashboard it starts (default: the configured one).")
    parser.add_argument("--api-url", help="API URL for the dashboard it starts.")
    parser.add_argument("--url", help="Use a dashboard already running at this base URL.")
    parser.add_argument(
        "--page",
        action="append",
        default=None,
        help="NAME=PATH to capture instead of the four pages (repeatable), e.g. explorer=explorer?sample=3",
    )
    args = parser.parse_args(argv)
    if args.page:
        pages = [page_at(*p.split("=", 1)) for p in args.page]
    elif args.db:
        pages = pages_for(args.db)
    else:
        pages = PAGES
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base = args.url or stack.enter_context(
            running_dashboard(args.db, args.api_url, log_path=args.out / "dashboard.log")
        )
        results = capture(base, args.out, pages)
    for r in results:
        state = "ok" if r.ok else "FAILED: " + " | ".join(r.errors)
        print(f"{r.name:10s} {r.seconds:5.1f} s  {r.screenshot}  {state}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
