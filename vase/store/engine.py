"""The store's engine: one SQLAlchemy engine per database, short transactions, migrations.

Backends: SQLite files (WAL journal, 30 s busy timeout, foreign keys on; writers take the write
lock up front with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing) and
PostgreSQL through psycopg 3 (``postgresql://`` URLs are rewritten to ``postgresql+psycopg://``).
After a fork the inherited pool is dropped, never reused. A database that cannot be reached (or
stays locked) raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from ..config import redact_url
from .values import json_serializer

_SQLITE_BUSY_TIMEOUT_S = 30.0
_MIGRATION_LOCK_KEY = 0x7661_7365_6D69_6772 & 0x7FFF_FFFF_FFFF_FFFF  # "vasemigr"
# Alembic keeps its migration context in module globals: one migration at a time per process.
_MIGRATE_LOCK = threading.RLock()


class StoreError(Exception):
    """Base class of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, refused, timed out, locked for too long)."""


def normalize_url(url: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for ``url``: a plain path becomes a SQLite file URL; ``postgres://`` and
    ``postgresql://`` select psycopg 3; ``~`` in SQLite paths is expanded."""
    url = os.fspath(url)
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url[len("sqlite:///") :]
        if path.startswith("~"):
            return f"sqlite:///{Path(path).expanduser()}"
    return url


class StoreBase:
    """One SQLAlchemy engine on ``url`` (SQLite file or PostgreSQL): connections, transactions,
    migrations. The query mixins of :class:`~vase.store.store.Store` build on it."""

    def __init__(self, url: str | os.PathLike[str], *, echo: bool = False, connect_timeout: int = 5,
                 pool_size: int = 5):
        self.url = normalize_url(url)
        u = make_url(self.url)
        self.dialect = u.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_serializer}
        if self.dialect == "sqlite":
            memory = u.database in (None, "", ":memory:") or "mode=memory" in str(u)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_S}
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=10, pool_timeout=30)
            kwargs["connect_args"] = {"connect_timeout": connect_timeout}
        self._engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _install_sqlite_hooks(self._engine)
        # The same pool; connections from it begin with BEGIN IMMEDIATE on SQLite.
        self._wengine = self._engine.execution_options(vase_write=True)
        self._pid = os.getpid()
        _register_fork_safety(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        if os.getpid() != self._pid:  # forked without the hook (e.g. multiprocessing spawn quirks)
            self._after_fork()
        try:
            with (self._wengine if write else self._engine).begin() as conn:
                yield conn
        except (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError) as error:
            raise StoreUnavailable(f"database unavailable ({redact_url(self.url)}): {error}") from error
        except DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailable(f"database connection lost ({redact_url(self.url)}): {error}") from error
            raise

    def _insert(self, table: Any):  # noqa: ANN202
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(table)

    def _after_fork(self) -> None:
        self._engine.dispose(close=False)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    def ping(self) -> bool:
        """True if the database answers (raises StoreUnavailable otherwise)."""
        with self._tx() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # -- migrations -----------------------------------------------------------------------------
    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (default: the newest). Safe to call from several
        processes (and threads) at once: a lock (``pg_advisory_lock`` on Postgres, the write lock
        on SQLite; a process-wide lock around Alembic, which is not thread-safe) serialises them
        and the late ones find nothing to do."""
        with _MIGRATE_LOCK:
            self._migrate(revision)

    def _migrate(self, revision: str) -> None:
        from alembic import command
        from alembic.config import Config

        here = Path(__file__).resolve().parent
        cfg = Config(str(here / "alembic.ini"))
        cfg.set_main_option("script_location", str(here / "migrations"))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        try:
            if self.dialect == "postgresql":
                with self._engine.connect() as conn:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                    conn.commit()
                    try:
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, revision)
                        conn.commit()
                    finally:
                        with contextlib.suppress(Exception):
                            conn.rollback()
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                        conn.commit()
            else:
                with self._wengine.connect() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    conn.commit()
        except (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError) as error:
            raise StoreUnavailable(f"database unavailable ({redact_url(self.url)}): {error}") from error

    def schema_revision(self) -> str | None:
        """The applied migration revision (None before the first migration)."""
        with self._tx() as conn:
            try:
                with conn.begin_nested():
                    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:
                return None


# ------------------------------------------------------------------------------------------------
# SQLite and fork hooks
# ------------------------------------------------------------------------------------------------
def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001, ANN202
        # Let SQLAlchemy (not pysqlite's legacy heuristics) decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001, ANN202
        immediate = conn.get_execution_options().get("vase_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_STORES: weakref.WeakSet[StoreBase] = weakref.WeakSet()
_FORK_HOOK = threading.Lock()
_FORK_HOOK_SET = False


def _register_fork_safety(store: StoreBase) -> None:
    global _FORK_HOOK_SET
    _STORES.add(store)
    with _FORK_HOOK:
        if not _FORK_HOOK_SET and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_all)
            _FORK_HOOK_SET = True


def _after_fork_all() -> None:
    for store in list(_STORES):
        with contextlib.suppress(Exception):
            store._after_fork()
