"""Dependencies: the service, the store, and bearer-token auth."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from vase.store import Store

from .errors import ApiError
from .service import Service

bearer = HTTPBearer(auto_error=False, description="An API token from `vase token create NAME`.")

AUTH_HINT = "send `Authorization: Bearer <token>` (create a token with `vase token create NAME`)"


# Dependencies that need no I/O are `async def`: FastAPI runs a plain `def` dependency in its thread
# pool, and a hop there per dependency costs more than the request's own work.
async def service(request: Request) -> Service:
    return request.app.state.service


async def store(svc: Service = Depends(service)) -> Store:
    if not svc.schema_ready:
        await run_in_threadpool(svc.ensure_schema)  # once (or until the database is back)
    return svc.store


async def _authenticate(svc: Service, credentials: HTTPAuthorizationCredentials | None) -> str:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or not credentials.credentials:
        raise ApiError(401, f"this request needs an API token: {AUTH_HINT}", headers=challenge)
    # A token verified a moment ago (VASE_TOKEN_CACHE_S) needs no database round trip, nor a thread.
    name = svc.known_token_name(credentials.credentials)
    if name is None:
        name = await run_in_threadpool(svc.token_name, credentials.credentials)
    if name is None:
        raise ApiError(401, "the API token is invalid or was revoked", headers=challenge)
    return name


async def require_writer(svc: Service = Depends(service),
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
    """Writes always need a valid token; returns its name."""
    return await _authenticate(svc, credentials)


async def require_reader(svc: Service = Depends(service),
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
    """Reads need a token only with ``VASE_REQUIRE_TOKEN_FOR_READS``."""
    if not svc.settings.require_token_for_reads:
        return None
    return await _authenticate(svc, credentials)
