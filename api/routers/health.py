"""/healthz (the process answers) and /readyz (the database and the broker answer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from .. import deps
from ..schemas import HealthOut, ReadyOut
from ..service import Service

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the API process answers")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, summary="Readiness: the database and the broker answer",
            responses={503: {"model": ReadyOut, "description": "The database or the broker is unavailable."}})
def readyz(svc: Service = Depends(deps.service)):
    db_ok, db_detail = svc.check_database()
    broker_ok, broker_detail = svc.check_broker()
    ready = db_ok and broker_ok
    body = ReadyOut(status="ready" if ready else "unavailable", mode=svc.mode,
                    checks={"database": {"ok": db_ok, "detail": db_detail},
                            "broker": {"ok": broker_ok, "detail": broker_detail}})
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
