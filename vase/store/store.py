"""The results store: one owner of persistence for the CLI, the API, the workers and the dashboard.

``Store(url)`` wraps one SQLAlchemy engine (:mod:`.engine`). Every method opens its own short
transaction and returns plain dicts (datetimes are timezone-aware UTC), so a Store can be shared by
threads and used from any process. Its methods live beside the tables they query: jobs
(:mod:`.jobs`), runs, samples and traces (:mod:`.samples`), the comparison table
(:mod:`.results`) and API tokens (:mod:`.tokens`).

A database that cannot be reached (or stays locked) raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

from .jobs import JobQueries
from .results import ResultQueries
from .tokens import TokenQueries


class Store(JobQueries, ResultQueries, TokenQueries):
    """The vase results store at ``url`` (SQLite file or PostgreSQL). See the module docstring."""


__all__ = ["Store"]
