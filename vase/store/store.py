"""The results store: one owner of persistence for the CLI, the API, the workers and the dashboard.

``Store(url)`` wraps one SQLAlchemy engine. Every method opens its own short transaction and
returns plain dicts (datetimes are timezone-aware UTC), so a Store can be shared by threads and
used from any process (after a fork the inherited pool is dropped, never reused).

Backends: SQLite files (WAL journal, 30 s busy timeout, foreign keys on; writers take the write
lock up front with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing) and
PostgreSQL through psycopg 3 (``postgresql://`` URLs are rewritten to ``postgresql+psycopg://``).

A database that cannot be reached (or stays locked) raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from .models import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRACE_LEVELS,
    ApiToken,
    Job,
    Run,
    Sample,
    Trace,
    utcnow,
)

_SQLITE_BUSY_TIMEOUT_S = 30.0
_MIGRATION_LOCK_KEY = 0x7661_7365_6D69_6772 & 0x7FFF_FFFF_FFFF_FFFF  # "vasemigr"
CLI_SCOPE = "cli"
# Alembic keeps its migration context in module globals: one migration at a time per process.
_MIGRATE_LOCK = threading.RLock()


class StoreError(Exception):
    """Base class of the store's errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, refused, timed out, locked for too long)."""


class DuplicateTokenName(StoreError, ValueError):
    """An active API token with this name already exists."""


# ------------------------------------------------------------------------------------------------
# URLs
# ------------------------------------------------------------------------------------------------
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


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover
        return "<url>"


# ------------------------------------------------------------------------------------------------
# Value cleaning
# ------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe python values: numpy scalars/arrays, tuples, sets, NaN/inf (-> None), datetimes."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return _plain(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return _plain(item())
    return str(value)


def _json_serializer(value: Any) -> str:
    import json

    return json.dumps(_plain(value), separators=(",", ":"), allow_nan=False)


_SAMPLE_COLUMNS = {c.name for c in Sample.__table__.columns} - {"id", "run_id", "created_at"}
_FLOAT_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is float}
_RUN_FIELDS = {"job_id", "task", "method", "params", "budget", "residual", "model", "generation", "fidelity",
               "trace_level", "manifest"}
_GRADE_FIELDS = ("extracted", "correct", "grade_status", "grade_reason", "answer_text")
_TEXT_COLUMNS = ("prompt", "output", "thinking")
_UNSET: Any = object()


_STRING_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is str}
_INT_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is int}
_BOOL_COLUMNS = {c.name for c in Sample.__table__.columns if c.type.python_type is bool}


def _column_value(name: str, value: Any) -> Any:
    """A sample field value fit for its column (numpy -> python, NaN -> NULL, lists -> JSON text)."""
    if value is None:
        return None
    if name == "metrics":
        return _plain(value)
    value = _plain(value)
    if value is None:
        return None
    if name in _FLOAT_COLUMNS:
        value = float(value)
        return value if math.isfinite(value) else None
    if name in _INT_COLUMNS:
        return int(value)
    if name in _BOOL_COLUMNS:
        return bool(value)
    if name in _STRING_COLUMNS and not isinstance(value, str):
        import json

        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return value


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, numpy/tuples made plain, NaN as null."""
    import json

    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 hex of :func:`canonical_json` of ``config`` (a run's resume key: put everything that
    determines its results in it: model + revision, task + limit + dataset fingerprint, method,
    params, budget, residual, generation parameters, prompt template version)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------
# pass@k
# ------------------------------------------------------------------------------------------------
def _pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, have {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _pass_ks(min_n: int) -> list[int]:
    """k values reported: 1, 2, 4, 8, ... up to the fewest samples of any problem, and that n."""
    if min_n < 1:
        return []
    ks, k = [], 1
    while k <= min_n:
        ks.append(k)
        k *= 2
    if ks[-1] != min_n:
        ks.append(min_n)
    return ks


def _mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var) / math.sqrt(n)


# ------------------------------------------------------------------------------------------------
# Row -> dict
# ------------------------------------------------------------------------------------------------
def _job_dict(row: Any, done: int | None = None) -> dict[str, Any]:
    d = dict(row._mapping)
    if done is not None:
        d["done_samples"] = int(done)
    total = d.get("total_samples") or 0
    d["progress"] = min(1.0, d["done_samples"] / total) if total else (1.0 if d["status"] == "succeeded" else 0.0)
    return d


def _sample_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    trace = {k[6:]: d.pop(k) for k in list(d) if k.startswith("trace_")}
    d["trace"] = trace if trace.get("level") is not None else None
    return d


class Store:
    """The vase results store at ``url`` (SQLite file or PostgreSQL). See the module docstring."""

    def __init__(self, url: str | os.PathLike[str], *, echo: bool = False, connect_timeout: int = 5,
                 pool_size: int = 5):
        self.url = normalize_url(url)
        u = make_url(self.url)
        self.dialect = u.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_serializer}
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
        return f"Store({_redact(self.url)!r})"

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        if os.getpid() != self._pid:  # forked without the hook (e.g. multiprocessing spawn quirks)
            self._after_fork()
        try:
            with (self._wengine if write else self._engine).begin() as conn:
                yield conn
        except (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError) as error:
            raise StoreUnavailable(f"database unavailable ({_redact(self.url)}): {error}") from error
        except DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailable(f"database connection lost ({_redact(self.url)}): {error}") from error
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
            raise StoreUnavailable(f"database unavailable ({_redact(self.url)}): {error}") from error

    def schema_revision(self) -> str | None:
        """The applied migration revision (None before the first migration)."""
        with self._tx() as conn:
            try:
                with conn.begin_nested():
                    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:
                return None

    # -- jobs -------------------------------------------------------------------------------------
    def create_job(self, spec: dict[str, Any], *, model: str, task: str, total_samples: int,
                   owner: str | None = None) -> str:
        """A new queued job; returns its id (uuid4 hex)."""
        job_id = uuid.uuid4().hex
        now = utcnow()
        with self._tx(write=True) as conn:
            conn.execute(insert(Job).values(
                id=job_id, created_at=now, updated_at=now, status="queued", model=model, task=task,
                spec=_plain(spec), total_samples=int(total_samples), done_samples=0, failed_samples=0,
                cancel_requested=False, owner=owner,
            ))
        return job_id

    @staticmethod
    def _done_counts(conn: Connection, job_ids: Sequence[str]) -> dict[str, int]:
        """Stored samples per job, for the given jobs only (indexed: runs.job_id, samples.run_id)."""
        if not job_ids:
            return {}
        q = (select(Run.job_id, func.count(Sample.id)).join(Sample, Sample.run_id == Run.id)
             .where(Run.job_id.in_(list(job_ids))).group_by(Run.job_id))
        return {job_id: int(n) for job_id, n in conn.execute(q).all()}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        """The job as a dict (see ``JOB_KEYS``) or None. ``done_samples`` counts stored samples."""
        with self._tx() as conn:
            row = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()
            if row is None:
                return None
            return _job_dict(row, self._done_counts(conn, [job_id]).get(job_id, 0))

    def list_jobs(self, status: str | Iterable[str] | None = None, model: str | None = None,
                  task: str | None = None, limit: int = 50, offset: int = 0, *,
                  owner: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """(jobs newest first, total matching). ``status`` may be one status or several."""
        conds = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            conds.append(Job.status.in_(statuses))
        if model is not None:
            conds.append(Job.model == model)
        if task is not None:
            conds.append(Job.task == task)
        if owner is not None:
            conds.append(Job.owner == owner)
        q = select(Job.__table__).where(*conds).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
        with self._tx() as conn:
            rows = conn.execute(q).all()
            total = conn.execute(select(func.count()).select_from(Job).where(*conds)).scalar_one()
            done = self._done_counts(conn, [r.id for r in rows])
        return [_job_dict(r, done.get(r.id, 0)) for r in rows], int(total)

    def set_job_status(self, job_id: str, status: str, error: str | None = None, *, force: bool = False) -> bool:
        """Move a job to ``status``; returns False if the job is missing or the move is refused.

        ``running`` sets started_at (first time) and heartbeat_at; a terminal status sets
        finished_at and snapshots done_samples. A job in a terminal status stays there (so a
        worker cannot resurrect a job cancelled while queued) unless the new status is
        ``queued`` (re-queue: clears finished_at, error and the cancel request) or ``force``.
        """
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}; expected one of {JOB_STATUSES}")
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if error is not None:
            values["error"] = error
        if status == "running":
            values["started_at"] = func.coalesce(Job.started_at, now)
            values["heartbeat_at"] = now
        elif status in TERMINAL_STATUSES:
            values["finished_at"] = now
            values["done_samples"] = (
                select(func.count(Sample.id)).join(Run, Sample.run_id == Run.id)
                .where(Run.job_id == job_id).scalar_subquery()
            )
        else:  # queued
            values.update(finished_at=None, cancel_requested=False)
            if error is None:
                values["error"] = None
        stmt = update(Job).where(Job.id == job_id).values(**values)
        if not force and status != "queued":
            stmt = stmt.where(Job.status.not_in(TERMINAL_STATUSES))
        with self._tx(write=True) as conn:
            return conn.execute(stmt).rowcount > 0

    def request_cancel(self, job_id: str) -> dict[str, Any] | None:
        """Ask for a job to stop. A queued job is cancelled at once; a running one is flagged and
        its worker stops at the next check. Returns the job after the change (None if missing)."""
        now = utcnow()
        with self._tx(write=True) as conn:
            conn.execute(update(Job).where(Job.id == job_id, Job.status.not_in(TERMINAL_STATUSES))
                         .values(cancel_requested=True, updated_at=now))
            conn.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                         .values(status="cancelled", finished_at=now))
        return self.get_job(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        """True if cancellation was requested, the job is already cancelled, or it no longer exists."""
        with self._tx() as conn:
            row = conn.execute(select(Job.cancel_requested, Job.status).where(Job.id == job_id)).first()
        return row is None or bool(row.cancel_requested) or row.status == "cancelled"

    def heartbeat(self, job_id: str) -> bool:
        """Record that the job's worker is alive. Returns :meth:`is_cancel_requested` (one round trip
        for the worker's periodic check)."""
        now = utcnow()
        with self._tx(write=True) as conn:
            conn.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=now))
            row = conn.execute(select(Job.cancel_requested, Job.status).where(Job.id == job_id)).first()
        return row is None or bool(row.cancel_requested) or row.status == "cancelled"

    def add_failed_samples(self, job_id: str, n: int = 1) -> None:
        """Count samples a worker gave up on (they have no row; done_samples counts stored rows)."""
        with self._tx(write=True) as conn:
            conn.execute(update(Job).where(Job.id == job_id)
                         .values(failed_samples=Job.failed_samples + int(n), updated_at=utcnow()))

    def job_progress(self, job_id: str) -> dict[str, Any] | None:
        """{total, done, failed, remaining, fraction} derived from the stored samples."""
        job = self.get_job(job_id)
        if job is None:
            return None
        total, done, failed = job["total_samples"], job["done_samples"], job["failed_samples"]
        return {
            "total": total,
            "done": done,
            "failed": failed,
            "remaining": max(0, total - done - failed),
            "fraction": job["progress"],
        }

    def stale_jobs(self, max_age_s: float) -> list[dict[str, Any]]:
        """Running jobs whose worker has not sent a heartbeat for ``max_age_s`` seconds (dead workers)."""
        cutoff = utcnow() - timedelta(seconds=max_age_s)
        q = select(Job.id).where(
            Job.status == "running",
            or_(Job.heartbeat_at < cutoff, and_(Job.heartbeat_at.is_(None), Job.updated_at < cutoff)),
        )
        with self._tx() as conn:
            ids = conn.execute(q).scalars().all()
        return [j for j in (self.get_job(i) for i in ids) if j is not None]

    def delete_job(self, job_id: str) -> bool:
        """Delete a job with its runs, samples and traces."""
        with self._tx(write=True) as conn:
            runs = select(Run.id).where(Run.job_id == job_id)
            samples = select(Sample.id).where(Sample.run_id.in_(runs))
            conn.execute(delete(Trace).where(Trace.sample_id.in_(samples)))
            conn.execute(delete(Sample).where(Sample.run_id.in_(runs)))
            conn.execute(delete(Run).where(Run.job_id == job_id))
            return conn.execute(delete(Job).where(Job.id == job_id)).rowcount > 0

    # -- runs -------------------------------------------------------------------------------------
    def get_or_create_run(self, scope: str, config_hash: str, **fields: Any) -> int:
        """The id of the run (scope, config_hash), created with ``fields`` if it does not exist.

        Race-safe (INSERT ... ON CONFLICT DO NOTHING, then SELECT). ``scope`` is the job id or
        "cli"; ``job_id`` defaults to ``scope`` when a job with that id exists. Fields: task,
        method, model (required), params, budget, residual, generation, fidelity, trace_level,
        manifest. An existing run keeps its stored fields.
        """
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise TypeError(f"unknown run fields: {sorted(unknown)}")
        missing = {"task", "method", "model"} - set(fields)
        if missing:
            raise TypeError(f"get_or_create_run needs {sorted(missing)}")
        with self._tx(write=True) as conn:
            if "job_id" in fields:
                job_id = fields.pop("job_id")
            elif scope != CLI_SCOPE:
                job_id = conn.execute(select(Job.id).where(Job.id == scope)).scalar()
            else:
                job_id = None
            values = {
                "job_id": job_id,
                "scope": scope,
                "config_hash": config_hash,
                "task": fields["task"],
                "method": fields["method"],
                "model": fields["model"],
                "params": _plain(fields.get("params") or {}),
                "budget": fields.get("budget"),
                "residual": fields.get("residual"),
                "generation": _plain(fields.get("generation") or {}),
                "fidelity": bool(fields.get("fidelity", False)),
                "trace_level": fields.get("trace_level") or "off",
                "manifest": _plain(fields.get("manifest") or {}),
                "created_at": utcnow(),
            }
            conn.execute(self._insert(Run.__table__).values(**values)
                         .on_conflict_do_nothing(index_elements=["scope", "config_hash"]))
            return int(conn.execute(select(Run.id).where(Run.scope == scope, Run.config_hash == config_hash))
                       .scalar_one())

    @staticmethod
    def _with_sample_counts(conn: Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
        runs = [dict(r._mapping) for r in rows]
        if runs:
            q = (select(Sample.run_id, func.count(Sample.id)).where(Sample.run_id.in_([r["id"] for r in runs]))
                 .group_by(Sample.run_id))
            counts = {run_id: int(n) for run_id, n in conn.execute(q).all()}
            for r in runs:
                r["n_samples"] = counts.get(r["id"], 0)
        return runs

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        """The run (all columns and ``n_samples``) or None."""
        with self._tx() as conn:
            runs = self._with_sample_counts(conn, conn.execute(select(Run.__table__).where(Run.id == run_id)).all())
        return runs[0] if runs else None

    def runs_for_job(self, job_id: str) -> list[dict[str, Any]]:
        return self.list_runs(job_id=job_id)

    def list_runs(self, *, job_id: str | None = None, scope: str | None = None, task: str | None = None,
                  method: str | None = None, model: str | None = None, budget: int | None = None,
                  config_hash: str | None = None, run_ids: Iterable[int] | None = None,
                  limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Runs (oldest first) matching every filter given; each dict has ``n_samples``."""
        conds = []
        for col, val in ((Run.job_id, job_id), (Run.scope, scope), (Run.task, task), (Run.method, method),
                         (Run.model, model), (Run.budget, budget), (Run.config_hash, config_hash)):
            if val is not None:
                conds.append(col == val)
        if run_ids is not None:
            conds.append(Run.id.in_(list(run_ids)))
        q = select(Run.__table__).where(*conds).order_by(Run.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self._tx() as conn:
            return self._with_sample_counts(conn, conn.execute(q).all())

    # -- samples ----------------------------------------------------------------------------------
    def existing_sample_keys(self, run_id: int) -> set[tuple[str, int]]:
        """{(problem_id, sample_index)} already stored for the run (to resume)."""
        with self._tx() as conn:
            rows = conn.execute(select(Sample.problem_id, Sample.sample_index).where(Sample.run_id == run_id))
            return {(r.problem_id, int(r.sample_index)) for r in rows}

    def add_sample(self, run_id: int, *, trace: dict[str, Any] | None = None, **fields: Any) -> int | None:
        """Store one sample; returns its id, or None if (run, problem_id, sample_index) exists
        already (a duplicate is ignored, whoever wrote it). Keys that are not columns go into the
        ``metrics`` JSON. ``trace``: ``save_trace`` keyword arguments, saved in the same
        transaction (e.g. ``TraceRecorder.record_for(row)``)."""
        if "problem_id" not in fields or "sample_index" not in fields:
            raise TypeError("add_sample needs problem_id and sample_index")
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in fields.items():
            if key in _SAMPLE_COLUMNS:
                values[key] = _column_value(key, value)
            else:
                extra[key] = value
        values["problem_id"] = str(values["problem_id"])
        values["sample_index"] = int(values["sample_index"])
        if extra:
            values["metrics"] = {**(values.get("metrics") or {}), **_plain(extra)}
        values.update(run_id=run_id, created_at=utcnow())
        stmt = (self._insert(Sample.__table__).values(**values)
                .on_conflict_do_nothing(index_elements=["run_id", "problem_id", "sample_index"])
                .returning(Sample.id))
        with self._tx(write=True) as conn:
            sample_id = conn.execute(stmt).scalar()
            if sample_id is not None and trace is not None:
                self._save_trace(conn, int(sample_id), **trace)
        return None if sample_id is None else int(sample_id)

    def update_sample_grade(self, sample_id: int, *, correct: Any = _UNSET, grade_status: Any = _UNSET,
                            grade_reason: Any = _UNSET, extracted: Any = _UNSET, answer_text: Any = _UNSET,
                            metrics: dict[str, Any] | None = None) -> bool:
        """Re-grade a stored sample: set the given grade fields (``metrics`` is merged)."""
        values = {k: _column_value(k, v) for k, v in (
            ("correct", correct), ("grade_status", grade_status), ("grade_reason", grade_reason),
            ("extracted", extracted), ("answer_text", answer_text)) if v is not _UNSET}
        with self._tx(write=True) as conn:
            if metrics:
                old = conn.execute(select(Sample.metrics).where(Sample.id == sample_id)).first()
                if old is None:
                    return False
                values["metrics"] = {**(old.metrics or {}), **_plain(metrics)}
            if not values:
                return conn.execute(select(Sample.id).where(Sample.id == sample_id)).first() is not None
            return conn.execute(update(Sample).where(Sample.id == sample_id).values(**values)).rowcount > 0

    def _samples_query(self, include_text: bool = True):  # noqa: ANN202
        cols = [c for c in Sample.__table__.columns if include_text or c.name not in _TEXT_COLUMNS]
        return (
            select(*cols, Run.job_id.label("job_id"),
                   Trace.level.label("trace_level"), Trace.encoding.label("trace_encoding"),
                   Trace.n_events.label("trace_n_events"), Trace.n_evicted.label("trace_n_evicted"),
                   Trace.nbytes.label("trace_nbytes"))
            .join(Run, Run.id == Sample.run_id)
            .outerjoin(Trace, Trace.sample_id == Sample.id)
        )

    def get_sample(self, sample_id: int) -> dict[str, Any] | None:
        """The sample (all columns, its run's ``job_id``, and ``trace``: the trace's level,
        encoding, n_events, n_evicted, nbytes or None)."""
        with self._tx() as conn:
            row = conn.execute(self._samples_query().where(Sample.id == sample_id)).first()
        return None if row is None else _sample_dict(row)

    @staticmethod
    def _sample_conds(run_id: int | None, job_id: str | None, problem_id: str | None,
                      correct: bool | None) -> list[Any]:
        conds = []
        if run_id is not None:
            conds.append(Sample.run_id == run_id)
        if job_id is not None:
            conds.append(Sample.run_id.in_(select(Run.id).where(Run.job_id == job_id)))
        if problem_id is not None:
            conds.append(Sample.problem_id == str(problem_id))
        if correct is not None:
            conds.append(Sample.correct == bool(correct))
        return conds

    def list_samples(self, run_id: int | None = None, job_id: str | None = None, *,
                     problem_id: str | None = None, correct: bool | None = None, limit: int | None = None,
                     offset: int = 0, include_text: bool = True) -> list[dict[str, Any]]:
        """Samples ordered by (run, problem, index). ``include_text=False`` leaves out prompt,
        output and thinking (they can be 100 kB each)."""
        q = (self._samples_query(include_text)
             .where(*self._sample_conds(run_id, job_id, problem_id, correct))
             .order_by(Sample.run_id, Sample.problem_id, Sample.sample_index).offset(offset))
        if limit is not None:
            q = q.limit(limit)
        with self._tx() as conn:
            return [_sample_dict(r) for r in conn.execute(q).all()]

    def count_samples(self, run_id: int | None = None, job_id: str | None = None, *,
                      problem_id: str | None = None, correct: bool | None = None) -> int:
        q = select(func.count(Sample.id)).where(*self._sample_conds(run_id, job_id, problem_id, correct))
        with self._tx() as conn:
            return int(conn.execute(q).scalar_one())

    # -- traces -----------------------------------------------------------------------------------
    def _save_trace(self, conn: Connection, sample_id: int, level: str, encoding: str, data: bytes | None,
                    n_events: int = 0, n_evicted: int = 0, meta: dict[str, Any] | None = None) -> int:
        if level not in TRACE_LEVELS:
            raise ValueError(f"trace level must be one of {TRACE_LEVELS}, not {level!r}")
        data = bytes(data or b"")
        values = {"level": level, "encoding": encoding, "data": data, "n_events": int(n_events),
                  "n_evicted": int(n_evicted), "nbytes": len(data), "meta": _plain(meta)}
        stmt = (self._insert(Trace.__table__).values(sample_id=sample_id, **values)
                .on_conflict_do_update(index_elements=["sample_id"], set_=values).returning(Trace.id))
        return int(conn.execute(stmt).scalar_one())

    def save_trace(self, sample_id: int, level: str, encoding: str, data: bytes | None, n_events: int = 0,
                   n_evicted: int = 0, meta: dict[str, Any] | None = None) -> int:
        """Store (or replace) the sample's trace; returns the trace id."""
        with self._tx(write=True) as conn:
            return self._save_trace(conn, sample_id, level, encoding, data, n_events, n_evicted, meta)

    def get_trace(self, sample_id: int, *, with_data: bool = True) -> dict[str, Any] | None:
        """{id, sample_id, level, encoding, data (bytes), n_events, n_evicted, nbytes, meta} or None."""
        cols = [c for c in Trace.__table__.columns if with_data or c.name != "data"]
        with self._tx() as conn:
            row = conn.execute(select(*cols).where(Trace.sample_id == sample_id)).first()
        if row is None:
            return None
        d = dict(row._mapping)
        if "data" in d and d["data"] is not None:
            d["data"] = bytes(d["data"])
        return d

    # -- results ----------------------------------------------------------------------------------
    def results(self, job_id: str | None = None, run_ids: Iterable[int] | None = None, *,
                scope: str | None = None) -> list[dict[str, Any]]:
        """The comparison table: one row per run (see ``RESULT_KEYS``), ordered by task, model,
        method, budget. With no filter: every run.

        accuracy = mean over problems of the fraction of graded samples that are correct (mean
        pass@1); accuracy_se = sample std (ddof 1) of those per-problem fractions / sqrt(problems),
        0 for one problem. pass_at_k maps k (1, 2, 4, ... and the fewest graded samples any
        problem has) to the mean unbiased pass@k. Rates and means skip NULLs; kv_bytes_peak is
        the max.
        """
        runs = self.list_runs(job_id=job_id, scope=scope, run_ids=run_ids)
        if not runs:
            return []
        ids = [r["id"] for r in runs]

        def rate(col):  # noqa: ANN001, ANN202
            return func.avg(case((col.is_(None), None), (col == True, 1.0), else_=0.0))  # noqa: E712

        agg = select(
            Sample.run_id,
            func.count(Sample.id).label("n_samples"),
            func.count(Sample.correct).label("n_graded"),
            func.count(func.distinct(Sample.problem_id)).label("n_problems"),
            rate(Sample.loop_detected).label("loop_rate"),
            rate(Sample.truncated).label("truncated_rate"),
            func.avg(Sample.new_tokens).label("mean_new_tokens"),
            func.avg(Sample.kl_mean).label("kl_mean"),
            func.avg(Sample.top1_agreement).label("top1_agreement"),
            func.avg(Sample.tokens_per_s).label("tokens_per_s"),
            func.max(Sample.kv_bytes_peak).label("kv_bytes_peak"),
            func.avg(Sample.evictions).label("evictions"),
            func.avg(Sample.sparsity).label("sparsity"),
        ).where(Sample.run_id.in_(ids)).group_by(Sample.run_id)
        per_problem = select(
            Sample.run_id,
            Sample.problem_id,
            func.count(Sample.correct).label("n"),
            func.sum(case((Sample.correct == True, 1), else_=0)).label("c"),  # noqa: E712
        ).where(Sample.run_id.in_(ids), Sample.correct.is_not(None)).group_by(Sample.run_id, Sample.problem_id)
        with self._tx() as conn:
            aggs = {r.run_id: r for r in conn.execute(agg).all()}
            problems: dict[int, list[tuple[int, int]]] = {}
            for r in conn.execute(per_problem).all():
                problems.setdefault(r.run_id, []).append((int(r.n), int(r.c)))

        out = []
        for run in runs:
            a = aggs.get(run["id"])
            nc = problems.get(run["id"], [])
            accuracy, se = _mean_se([c / n for n, c in nc])
            pass_at_k = {}
            if nc:
                for k in _pass_ks(min(n for n, _ in nc)):
                    pass_at_k[k] = sum(_pass_at_k(n, c, k) for n, c in nc) / len(nc)

            def num(name: str, cast=float):  # noqa: ANN001
                v = getattr(a, name) if a is not None else None
                return None if v is None else cast(v)

            out.append({
                "run_id": run["id"],
                "job_id": run["job_id"],
                "scope": run["scope"],
                "task": run["task"],
                "method": run["method"],
                "params": run["params"],
                "budget": run["budget"],
                "residual": run["residual"],
                "model": run["model"],
                "generation": run["generation"],
                "fidelity": run["fidelity"],
                "trace_level": run["trace_level"],
                "config_hash": run["config_hash"],
                "n_problems": num("n_problems", int) or 0,
                "n_samples": num("n_samples", int) or 0,
                "n_graded": num("n_graded", int) or 0,
                "accuracy": accuracy,
                "accuracy_se": se,
                "pass_at_k": pass_at_k,
                "loop_rate": num("loop_rate"),
                "truncated_rate": num("truncated_rate"),
                "mean_new_tokens": num("mean_new_tokens"),
                "kl_mean": num("kl_mean"),
                "top1_agreement": num("top1_agreement"),
                "tokens_per_s": num("tokens_per_s"),
                "kv_bytes_peak": num("kv_bytes_peak", int),
                "evictions": num("evictions"),
                "sparsity": num("sparsity"),
            })
        out.sort(key=lambda r: (r["task"], r["model"], r["method"],
                                -1 if r["budget"] is None else r["budget"], r["run_id"]))
        return out

    # -- API tokens -------------------------------------------------------------------------------
    def create_token(self, name: str) -> str:
        """A new API token called ``name``; returns the plaintext (shown once; only its sha256 is
        stored). A revoked token's name can be reused; an active one's cannot (DuplicateTokenName)."""
        if not name or not name.strip():
            raise ValueError("token name must not be empty")
        token = "vase_" + secrets.token_urlsafe(32)
        digest = _hash_token(token)
        now = utcnow()
        with self._tx(write=True) as conn:
            existing = conn.execute(select(ApiToken.id, ApiToken.revoked_at).where(ApiToken.name == name)).first()
            if existing is not None and existing.revoked_at is None:
                raise DuplicateTokenName(f"an API token named {name!r} already exists; revoke it first")
            try:
                if existing is not None:
                    conn.execute(update(ApiToken).where(ApiToken.id == existing.id)
                                 .values(token_hash=digest, created_at=now, revoked_at=None))
                else:
                    with conn.begin_nested():
                        conn.execute(insert(ApiToken).values(name=name, token_hash=digest, created_at=now))
            except IntegrityError as error:  # a concurrent create with the same name
                raise DuplicateTokenName(f"an API token named {name!r} already exists") from error
        return token

    def revoke_token(self, name: str) -> bool:
        """Revoke the active token called ``name``; False if there is none."""
        with self._tx(write=True) as conn:
            return conn.execute(update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow())).rowcount > 0

    def verify_token(self, token: str) -> str | None:
        """The name of the active token ``token`` is, or None."""
        if not token:
            return None
        with self._tx() as conn:
            return conn.execute(select(ApiToken.name).where(ApiToken.token_hash == _hash_token(token),
                                                            ApiToken.revoked_at.is_(None))).scalar()

    def list_tokens(self) -> list[dict[str, Any]]:
        """[{name, created_at, revoked_at}] (never the hash)."""
        with self._tx() as conn:
            rows = conn.execute(select(ApiToken.name, ApiToken.created_at, ApiToken.revoked_at)
                                .order_by(ApiToken.name)).all()
        return [dict(r._mapping) for r in rows]


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


_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
_FORK_HOOK = threading.Lock()
_FORK_HOOK_SET = False


def _register_fork_safety(store: Store) -> None:
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


JOB_KEYS = (
    "id", "created_at", "updated_at", "started_at", "finished_at", "status", "model", "task", "spec",
    "total_samples", "done_samples", "failed_samples", "error", "cancel_requested", "owner", "heartbeat_at",
    "progress",
)
RESULT_KEYS = (
    "run_id", "job_id", "scope", "task", "method", "params", "budget", "residual", "model", "generation",
    "fidelity", "trace_level", "config_hash", "n_problems", "n_samples", "n_graded", "accuracy", "accuracy_se",
    "pass_at_k", "loop_rate", "truncated_rate", "mean_new_tokens", "kl_mean", "top1_agreement", "tokens_per_s",
    "kv_bytes_peak", "evictions", "sparsity",
)
