"""The vase results store (SQLAlchemy 2 + Alembic): jobs, runs, samples, traces, API tokens.

    from vase.store import open_store
    store = open_store()            # settings' database (SQLite under ~/.cache/vase by default), migrated
    job_id = store.create_job(spec, model=..., task=..., total_samples=...)

Every method returns plain dicts; a database that is down raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .engine import StoreError, StoreUnavailable, normalize_url
from .jobs import JOB_KEYS
from .models import ACTIVE_STATUSES, JOB_STATUSES, TERMINAL_STATUSES
from .results import RESULT_KEYS
from .samples import CLI_SCOPE
from .store import Store
from .tokens import DuplicateTokenName
from .values import canonical_json, config_hash

_DEFAULT_SQLITE = Path("~/.cache/vase/vase.sqlite")
_OPEN: dict[str, Store] = {}
_OPEN_LOCK = threading.Lock()


def default_database_url() -> str:
    """The configured database URL (``vase.config``), else the SQLite file ~/.cache/vase/vase.sqlite."""
    try:
        from vase.config import get_settings
    except ImportError:  # pragma: no cover - settings module missing
        path = _DEFAULT_SQLITE.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return get_settings().resolved_database_url


def open_store(url: str | None = None, *, migrate: bool = True, cached: bool = True) -> Store:
    """A Store for ``url`` (None: the configured database), migrated to the newest schema.

    Stores are cached per URL within the process (one engine/pool per database), and the
    migration runs once per URL and process; ``cached=False`` always builds a new Store.
    """
    resolved = normalize_url(url if url is not None else default_database_url())
    if not cached:
        store = Store(resolved)
        if migrate:
            store.migrate()
        return store
    with _OPEN_LOCK:
        store = _OPEN.get(resolved)
        if store is None:
            store = Store(resolved)
            if migrate:
                store.migrate()
            _OPEN[resolved] = store
        return store


__all__ = [
    "ACTIVE_STATUSES",
    "CLI_SCOPE",
    "DuplicateTokenName",
    "JOB_KEYS",
    "JOB_STATUSES",
    "RESULT_KEYS",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TERMINAL_STATUSES",
    "canonical_json",
    "config_hash",
    "default_database_url",
    "normalize_url",
    "open_store",
]
