"""Load every dashboard page in headless Chromium, save full-page screenshots, report page errors.

    python -m dashboard.screenshots --db sqlite:///path/to/vase.sqlite --out shots/
    python -m dashboard.screenshots --url http://127.0.0.1:8501 --out shots/    # a dashboard already running

Without ``--url`` it starts ``vase dashboard`` on a free loopback port (against ``--db``, or the
configured database) and stops it afterwards. The browser is Debian's ``chromium``
(``/usr/bin/chromium``; ``scripts/test.sh`` installs it) driven by Playwright, which downloads no
browser of its own. A page *fails* when Streamlit shows an exception (``stException``) or the
dashboard's "Something went wrong" box, or when it never finishes loading. Exit status: 0 when every
page loaded cleanly, 1 otherwise.
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
from dataclasses import dataclass, field
from pathlib import Path

#: (name, URL path) of the pages; the default page (Compare) lives at the root.
PAGES = [("compare", ""), ("sample", "sample"), ("explorer", "explorer"), ("jobs", "jobs")]
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


def capture(
    base: str,
    out_dir: Path,
    pages: list[tuple[str, str]] | None = None,
    *,
    settle_ms: int = 1000,
    timeout_s: float = 60.0,
) -> list[PageResult]:
    """Load each page headless, wait until Streamlit has finished running it, screenshot the whole
    page (the viewport is stretched to the page's height) and collect page errors."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            console_errors: list[str] = []
            page.on("pageerror", lambda exc: console_errors.append(f"javascript: {exc}"))
            for name, path in pages or PAGES:
                console_errors.clear()
                started = time.monotonic()
                url = f"{base}/{path}"
                errors: list[str] = []
                shot: Path | None = out_dir / f"{name}.png"
                try:
                    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
                    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
                    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_s * 1000)
                    _settle(page, settle_ms, timeout_s)
                    height = page.evaluate(_HEIGHT_JS)
                    page.set_viewport_size({"width": WIDTH, "height": int(min(max(HEIGHT, height + 40), 12000))})
                    _settle(page, 800, timeout_s)
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
                results.append(PageResult(name, url, shot, time.monotonic() - started, errors))
        finally:
            browser.close()
    return results


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
    pages = [tuple(p.split("=", 1)) for p in args.page] if args.page else None
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        base = args.url or stack.enter_context(
            running_dashboard(args.db, args.api_url, log_path=args.out / "dashboard.log")
        )
        results = capture(base, args.out, pages)  # type: ignore[arg-type]
    for r in results:
        state = "ok" if r.ok else "FAILED: " + " | ".join(r.errors)
        print(f"{r.name:10s} {r.seconds:5.1f} s  {r.screenshot}  {state}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
