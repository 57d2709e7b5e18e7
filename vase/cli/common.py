"""What every command shares: the one way to fail, JSON output, progress bars, tables, settings
flags, the store, and the check that an optional extra is installed."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any, NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Say what is wrong on stderr and exit: 2 (the shell's usage-error code) for invalid input,
    1 for everything else (an unreachable database or API, a missing extra)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def require_extra(extra: str, command: str, *modules: str) -> None:
    """Exit with a message naming the extra to install when one of ``modules`` is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"`vase {command}` needs the {extra!r} extra ({', '.join(missing)} not installed): "
             f"pip install 'vase-bench[{extra}]'", code=1)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def progress(total: int, desc: str, unit: str = "tok"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)


def console():
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)  # piped or captured: do not squeeze to 80 columns


DB_OPTION = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: VASE_DATABASE_URL, else the "
                                                      "embedded SQLite file).")
BROKER_OPTION = typer.Option(None, "--broker-url", help="Celery broker, redis://HOST:PORT/DB (default: "
                                                        "VASE_BROKER_URL; none: jobs run inside the API).")


def apply_env(database_url: str | None = None, broker_url: str | None = None) -> Any:
    """Flags override the environment; returns the refreshed settings."""
    from ..config import get_settings

    if database_url:
        os.environ["VASE_DATABASE_URL"] = database_url
    if broker_url:
        os.environ["VASE_BROKER_URL"] = broker_url
    get_settings.cache_clear()
    return get_settings()


def open_store(database_url: str | None):
    """The store of ``--database-url`` (else the settings' database); exits 1 when it is down."""
    from ..store import StoreUnavailable, open_store

    settings = apply_env(database_url)
    try:
        return open_store(settings.resolved_database_url)
    except StoreUnavailable as exc:
        fail(f"database unavailable: {exc}", code=1)
