"""`vase dashboard`: start the Streamlit dashboard (``dashboard/app.py``, shipped with the package).
It needs the ``dashboard`` extra."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from .common import fail, require_extra


def app_path() -> Path:
    """The dashboard's entry script: ``dashboard/app.py``, installed beside the ``vase`` package."""
    beside = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    if beside.exists():
        return beside
    import importlib.util

    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise FileNotFoundError("the dashboard package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def streamlit_command(port: int, address: str, extra: list[str] | None = None) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage statistics, no file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--client.showErrorDetails",
        "none",
        "--theme.base",
        "light",
        *(extra or []),
    ]


def dashboard(
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    address: str = typer.Option(
        "127.0.0.1", "--address", help="Interface to listen on (0.0.0.0 to serve other machines)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Database URL (default: VASE_DATABASE_URL, else the embedded SQLite file)."
    ),
    api_url: str | None = typer.Option(
        None, "--api-url", help="API base URL for job submission (default: VASE_API_URL)."
    ),
) -> None:
    """Start the results dashboard (Streamlit): compare methods, read samples, explore the cache."""
    if not 0 < port < 65536:
        fail(f"port: must be between 1 and 65535, got {port}")
    require_extra("dashboard", "dashboard", "streamlit", "plotly", "pandas")
    env = dict(os.environ)
    if db:
        env["VASE_DATABASE_URL"] = db
    if api_url:
        env["VASE_API_URL"] = api_url
    from ..config import get_settings, redact_url

    get_settings.cache_clear()
    database = redact_url(db or get_settings().resolved_database_url)
    typer.echo(f"vase dashboard on http://{address}:{port} (database: {database})", err=True)
    cmd = streamlit_command(port, address)
    try:
        os.execve(sys.executable, cmd, env)  # replace this process: signals reach Streamlit directly
    except OSError as error:  # pragma: no cover
        fail(f"could not start Streamlit: {error}", code=1)
