"""Runs (one cell of a grid: method x budget), their samples and the samples' eviction traces."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, func, select, update

from ..traces import RECORDED_LEVELS
from .engine import StoreBase
from .models import Job, Run, Sample, Trace, utcnow
from .values import SAMPLE_COLUMNS, column_value, plain

#: The scope of runs made by ``vase bench`` (a job's runs are scoped by the job id).
CLI_SCOPE = "cli"
_RUN_FIELDS = {"job_id", "task", "method", "params", "budget", "residual", "model", "generation", "fidelity",
               "trace_level", "manifest"}
_TEXT_COLUMNS = ("prompt", "output", "thinking")
_UNSET: Any = object()


def _sample_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    trace = {k[6:]: d.pop(k) for k in list(d) if k.startswith("trace_")}
    d["trace"] = trace if trace.get("level") is not None else None
    return d


class SampleQueries(StoreBase):
    """The ``runs``, ``samples`` and ``traces`` tables."""

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
                "params": plain(fields.get("params") or {}),
                "budget": fields.get("budget"),
                "residual": fields.get("residual"),
                "generation": plain(fields.get("generation") or {}),
                "fidelity": bool(fields.get("fidelity", False)),
                "trace_level": fields.get("trace_level") or "off",
                "manifest": plain(fields.get("manifest") or {}),
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
            if key in SAMPLE_COLUMNS:
                values[key] = column_value(key, value)
            else:
                extra[key] = value
        values["problem_id"] = str(values["problem_id"])
        values["sample_index"] = int(values["sample_index"])
        if extra:
            values["metrics"] = {**(values.get("metrics") or {}), **plain(extra)}
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
                            correct_flex: Any = _UNSET, extracted_flex: Any = _UNSET, flex_rule: Any = _UNSET,
                            metrics: dict[str, Any] | None = None) -> bool:
        """Re-grade a stored sample: set the given grade fields, strict and flexible (``metrics``
        is merged)."""
        values = {k: column_value(k, v) for k, v in (
            ("correct", correct), ("grade_status", grade_status), ("grade_reason", grade_reason),
            ("extracted", extracted), ("answer_text", answer_text), ("correct_flex", correct_flex),
            ("extracted_flex", extracted_flex), ("flex_rule", flex_rule)) if v is not _UNSET}
        with self._tx(write=True) as conn:
            if metrics:
                old = conn.execute(select(Sample.metrics).where(Sample.id == sample_id)).first()
                if old is None:
                    return False
                values["metrics"] = {**(old.metrics or {}), **plain(metrics)}
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
        if level not in RECORDED_LEVELS:
            raise ValueError(f"trace level must be one of {RECORDED_LEVELS}, not {level!r}")
        data = bytes(data or b"")
        values = {"level": level, "encoding": encoding, "data": data, "n_events": int(n_events),
                  "n_evicted": int(n_evicted), "nbytes": len(data), "meta": plain(meta)}
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
