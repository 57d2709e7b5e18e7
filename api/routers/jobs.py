"""/v1/jobs: submit, list, inspect, cancel, results, samples."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import PlainTextResponse

from vase import jobs as job_service
from vase.spec import JobSpec
from vase.store import TERMINAL_STATUSES, Store

from .. import deps
from ..bodies import JsonBodyRoute
from ..errors import ApiError, not_found
from ..responses import errors
from ..schemas import (
    JOB_STATUS,
    JobList,
    JobOut,
    ResultRow,
    ResultsOut,
    SampleList,
    SampleSummary,
    text,
)
from ..service import Service

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=JsonBodyRoute)

JobId = Annotated[text(1, 64), Path(description="The job id (32 hex characters).")]
MAX_OFFSET = 1_000_000_000


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    end = end or datetime.now(UTC)
    return round(max(0.0, (end - start).total_seconds()), 3)


def job_out(job: dict[str, Any]) -> JobOut:
    info = (job.get("spec") or {}).get(job_service.SERVICE_KEY) or {}
    total, done, failed = job["total_samples"] or 0, job["done_samples"] or 0, job["failed_samples"] or 0
    return JobOut(
        id=job["id"], status=job["status"], model=job["model"], task=job["task"], owner=job.get("owner"),
        progress={"total": total, "done": done, "failed": failed, "remaining": max(0, total - done - failed),
                  "fraction": job["progress"]},
        timings={
            "created_at": job["created_at"], "updated_at": job.get("updated_at"), "started_at": job.get("started_at"),
            "finished_at": job.get("finished_at"), "heartbeat_at": job.get("heartbeat_at"),
            "queued_s": _seconds(job["created_at"], job.get("started_at")) if job.get("started_at") else None,
            "elapsed_s": _seconds(job.get("started_at"), job.get("finished_at")),
        },
        error=job.get("error"), cancel_requested=bool(job.get("cancel_requested")), queue=info.get("queue"),
        chunks=info.get("n_chunks"), spec=job.get("spec") or {},
    )


def _job(store: Store, job_id: str) -> dict[str, Any]:
    job = store.get_job(job_id)
    if job is None:
        raise not_found(f"job {job_id!r}")
    return job


@router.post(
    "/jobs", status_code=201, response_model=JobOut, summary="Submit a job",
    responses=errors(401, 415, 422, 503),
    description="Validates the job against the method registry's rules, the model allow-list "
                "(`VASE_ALLOWED_MODELS`) and the resources it needs (the model's context, a worker's KV memory, "
                "the token cap), stores it (committed) and only then enqueues its chunks. Returns the job, with "
                "its estimate under `spec.service.estimate`; its `Location` header points at it.",
)
def create_job(
    body: JobSpec,
    response: Response,
    owner: str = Depends(deps.require_writer),
    svc: Service = Depends(deps.service),
    store: Store = Depends(deps.store),
) -> JobOut:
    plan = job_service.plan_job(body, svc.settings)  # JobInvalid -> 422, nothing stored
    job = job_service.submit(store, plan, svc.dispatcher, owner=owner)
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return job_out(job)


@router.get("/jobs", response_model=JobList, summary="List jobs (newest first)", responses=errors(401, 422, 503))
def list_jobs(
    status: JOB_STATUS | None = Query(None, description="Only jobs in this status."),
    model: text(0, 512) | None = Query(None, description="Only jobs of this model."),
    task: text(0, 256) | None = Query(None, description="Only jobs of this task."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    _reader: str | None = Depends(deps.require_reader),
    store: Store = Depends(deps.store),
) -> JobList:
    items, total = store.list_jobs(status=status, model=model, task=task, limit=limit, offset=offset)
    return JobList(items=[job_out(j) for j in items], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job: status, progress, timings, error",
            responses=errors(401, 404, 422, 503))
def get_job(job_id: JobId, _reader: str | None = Depends(deps.require_reader),
            store: Store = Depends(deps.store)) -> JobOut:
    return job_out(_job(store, job_id))


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
    responses=errors(401, 404, 409, 422, 503),
    description="A queued job is cancelled at once; a running one is flagged and its workers stop between "
                "samples (its status turns `cancelled` then). Cancelling a cancelled job is a no-op; a job "
                "that succeeded or failed cannot be cancelled (409).",
)
def cancel_job(job_id: JobId, _writer: str = Depends(deps.require_writer),
               store: Store = Depends(deps.store)) -> JobOut:
    job = _job(store, job_id)
    if job["status"] in TERMINAL_STATUSES and job["status"] != "cancelled":
        raise ApiError(409, f"job {job_id} already {job['status']}; it cannot be cancelled")
    if job["status"] != "cancelled":
        job = store.request_cancel(job_id) or job
    return job_out(job)


RESULT_FIELDS = list(ResultRow.model_fields)


def _result_rows(store: Store, job_id: str) -> list[ResultRow]:
    from vase.bench import result_rows

    raw = store.results(job_id=job_id)
    out = []
    for flat, row in zip(result_rows(raw), raw, strict=True):
        flat = dict(flat)
        flat["method_name"] = row["method"]
        flat["params"] = row.get("params") or {}
        for curve in ("pass_at_k", "pass_at_k_flex"):
            flat[curve] = {str(k): v for k, v in (flat.get(curve) or {}).items()}
        out.append(ResultRow(**{k: flat.get(k) for k in RESULT_FIELDS if k in flat}))
    return out


@router.get(
    "/jobs/{job_id}/results", response_model=ResultsOut, summary="The comparison table",
    responses={**errors(401, 404, 422, 503),
               200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "One row per run (method x budget): accuracy ± SE and pass@k, strict "
                                    "and flexible (`accuracy_flex`), loop rate, "
                                    "KL and top-1 agreement (fidelity), speed, KV memory, evictions."}},
    description="Partial while the job runs (`complete` is false). `?format=csv` returns CSV.",
)
def job_results(
    job_id: JobId,
    format: Literal["json", "csv"] = Query("json", description="json or csv."),
    _reader: str | None = Depends(deps.require_reader),
    store: Store = Depends(deps.store),
):
    job = _job(store, job_id)
    rows = _result_rows(store, job_id)
    if format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                             for k, v in row.model_dump().items()})
        return PlainTextResponse(buf.getvalue(), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="vase-{job_id}.csv"'})
    return ResultsOut(job_id=job_id, status=job["status"], complete=job["status"] == "succeeded", rows=rows)


@router.get("/jobs/{job_id}/samples", response_model=SampleList, summary="A job's samples (without texts)",
            responses=errors(401, 404, 422, 503))
def job_samples(
    job_id: JobId,
    run_id: int | None = Query(None, ge=1, le=2**31 - 1, description="Only this run's samples."),
    problem_id: text(0, 256) | None = Query(None),
    correct: bool | None = Query(None),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    _reader: str | None = Depends(deps.require_reader),
    store: Store = Depends(deps.store),
) -> SampleList:
    _job(store, job_id)
    runs = {r["id"]: r for r in store.list_runs(job_id=job_id)}
    if run_id is not None and run_id not in runs:
        return SampleList(items=[], total=0, limit=limit, offset=offset)
    rows = store.list_samples(run_id=run_id, job_id=job_id, problem_id=problem_id, correct=correct, limit=limit,
                              offset=offset, include_text=False)
    total = store.count_samples(run_id=run_id, job_id=job_id, problem_id=problem_id, correct=correct)
    items = []
    for s in rows:
        run = runs.get(s["run_id"], {})
        items.append(SampleSummary(
            id=s["id"], run_id=s["run_id"], method=run.get("method"), budget=run.get("budget"),
            problem_id=s["problem_id"], sample_index=s["sample_index"], correct=s.get("correct"),
            correct_flex=s.get("correct_flex"), grade_status=s.get("grade_status"), new_tokens=s.get("new_tokens"), truncated=s.get("truncated"),
            loop_detected=s.get("loop_detected"), kl_mean=s.get("kl_mean"), top1_agreement=s.get("top1_agreement"),
            trace_level=(s.get("trace") or {}).get("level"),
        ))
    return SampleList(items=items, total=total, limit=limit, offset=offset)


__all__ = ["TERMINAL_STATUSES", "job_out", "router"]
