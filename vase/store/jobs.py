"""Jobs in the store: create, list, move through their statuses, heartbeats and cancellation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from .engine import StoreBase
from .models import JOB_STATUSES, TERMINAL_STATUSES, Job, Run, Sample, Trace, utcnow
from .values import plain

JOB_KEYS = (
    "id", "created_at", "updated_at", "started_at", "finished_at", "status", "model", "task", "spec",
    "total_samples", "done_samples", "failed_samples", "error", "cancel_requested", "owner", "heartbeat_at",
    "progress",
)


def _job_dict(row: Any, done: int | None = None) -> dict[str, Any]:
    d = dict(row._mapping)
    if done is not None:
        d["done_samples"] = int(done)
    total = d.get("total_samples") or 0
    d["progress"] = min(1.0, d["done_samples"] / total) if total else (1.0 if d["status"] == "succeeded" else 0.0)
    return d


class JobQueries(StoreBase):
    """The ``jobs`` table (see ``JOB_KEYS``); ``done_samples`` counts a job's stored samples."""

    def create_job(self, spec: dict[str, Any], *, model: str, task: str, total_samples: int,
                   owner: str | None = None) -> str:
        """A new queued job; returns its id (uuid4 hex)."""
        return self.insert_job(spec, model=model, task=task, total_samples=total_samples, owner=owner)["id"]

    def insert_job(self, spec: dict[str, Any], *, model: str, task: str, total_samples: int,
                   owner: str | None = None) -> dict[str, Any]:
        """A new queued job, inserted in one transaction; returns it as :meth:`get_job` would, built
        from the inserted values (no second round trip to read it back)."""
        now = utcnow()
        values = {
            "id": uuid.uuid4().hex, "created_at": now, "updated_at": now, "started_at": None, "finished_at": None,
            "status": "queued", "model": model, "task": task, "spec": plain(spec), "total_samples": int(total_samples),
            "done_samples": 0, "failed_samples": 0, "error": None, "cancel_requested": False, "owner": owner,
            "heartbeat_at": None,
        }
        with self._tx(write=True) as conn:
            conn.execute(insert(Job).values(**values))
        return {**values, "progress": 0.0}

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
        done = (select(func.count(Sample.id)).join(Run, Sample.run_id == Run.id).where(Run.job_id == job_id)
                .scalar_subquery().label("stored_samples"))
        with self._tx() as conn:  # one statement: the job and its stored samples
            row = conn.execute(select(Job.__table__, done).where(Job.id == job_id)).first()
        if row is None:
            return None
        job = _job_dict(row, row.stored_samples)
        del job["stored_samples"]
        return job

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
