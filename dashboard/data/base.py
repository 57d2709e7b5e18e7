"""What every part of the dashboard's data layer shares: the errors the pages explain, the
configured database and API, the cached Store and the one way to call it."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import streamlit as st

from vase.config import get_settings, redact_url

log = logging.getLogger("vase.dashboard")


class DashboardError(Exception):
    """Something the page should explain in words (the message is meant for the user)."""


class StoreDown(DashboardError):
    """The results database cannot be reached."""


class NotFound(DashboardError):
    """A job, run, sample or trace that does not exist (any more)."""


class ApiUnavailable(DashboardError):
    """The HTTP API cannot be reached (or refused us)."""


def database_url() -> str:
    """The configured database (``VASE_DATABASE_URL``, else the embedded SQLite file)."""
    return get_settings().resolved_database_url


def database_label() -> str:
    """The database URL with any password hidden, for display."""
    return redact_url(database_url())


def api_url() -> str:
    return get_settings().api_url.rstrip("/")


_QUERY_CACHES: list[Any] = []


def query_cache(*, ttl: float, max_entries: int):
    """``st.cache_data`` for a query's results (keyed by its arguments, the database URL first),
    forgotten by :func:`clear_caches`."""

    def wrap(fn):
        cached = st.cache_data(ttl=ttl, show_spinner=False, max_entries=max_entries)(fn)
        _QUERY_CACHES.append(cached)
        return cached

    return wrap


def clear_caches() -> None:
    """Forget cached query results (after a job was submitted, or on the user's request)."""
    for cached in _QUERY_CACHES:
        cached.clear()


@st.cache_resource(show_spinner=False, max_entries=8)
def _open(url: str):
    from vase.store import open_store

    return open_store(url)


def _down(error: Exception) -> StoreDown:
    return StoreDown(
        f"The results database ({database_label()}) is not reachable: {str(error).splitlines()[0][:300]}. "
        "Check VASE_DATABASE_URL, or start the database (the compose stack, or `scripts/test.sh` locally)."
    )


def store(url: str | None = None):
    """The Store of ``url`` (default: the configured database), opened and migrated once per URL."""
    from vase.store import StoreError

    try:
        return _open(url or database_url())
    except StoreError as error:
        raise _down(error) from error
    except Exception as error:  # bad URL, missing driver, failed migration
        raise StoreDown(f"Cannot open the results database ({database_label()}): {error}") from error


def query(fn, *args, **kwargs):
    """Call a store method, turning an unreachable database into :class:`StoreDown`."""
    from vase.store import StoreError

    try:
        return fn(*args, **kwargs)
    except StoreError as error:
        raise _down(error) from error


def ping() -> bool:
    """True if the database answers (raises :class:`StoreDown` otherwise)."""
    return query(store().ping)


def percent(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def source_label(job_id: str | None) -> str:
    """Where a run came from: ``CLI`` (``vase bench``) or ``job 1a2b3c4d``."""
    return "CLI" if job_id is None else f"job {str(job_id)[:8]}"


def export_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def export_json(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records", indent=2).encode("utf-8")
