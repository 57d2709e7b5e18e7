"""/v1/methods and /v1/tasks: what a job may name."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Depends

from .. import deps
from ..responses import errors
from ..schemas import MethodOut, TaskOut

router = APIRouter(prefix="/v1", tags=["catalog"])


@lru_cache(maxsize=1)
def _methods() -> tuple[MethodOut, ...]:
    from vase.policies import describe_policies

    return tuple(MethodOut(name=d["name"], kind=d["kind"], stochastic=bool(d["stochastic"]),
                           description=d["description"] or "", params=d["params"],
                           reference_mode=d["reference_mode"]) for d in describe_policies())


@router.get("/methods", response_model=list[MethodOut], summary="Cache methods and their parameters",
            responses=errors(401))
def methods(_reader: str | None = Depends(deps.require_reader)) -> list[MethodOut]:
    return list(_methods())


@router.get("/tasks", response_model=list[TaskOut], summary="Benchmark tasks", responses=errors(401))
def tasks(_reader: str | None = Depends(deps.require_reader)) -> list[TaskOut]:
    from vase.tasks import list_tasks

    return [TaskOut(name=t["name"], offline=t["offline"], size=t["size"], description=t.get("description") or "",
                    params=t["params"]) for t in list_tasks()]
