"""The FastAPI application: ``create_app()`` (``vase serve`` runs it with uvicorn).

    uvicorn --factory api.app:create_app
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI

from vase.config import Settings, get_settings

from . import errors
from .routers import catalog, health, jobs, samples
from .service import Service

DESCRIPTION = """
Benchmark KV-cache eviction methods (VaSE and its baselines) on reasoning tasks.

Submit a job (`POST /v1/jobs`): a model, a task, methods with their parameters, budgets. Workers
run it in chunks and store every sample; follow it with `GET /v1/jobs/{id}`, read the comparison
table at `GET /v1/jobs/{id}/results`, a sample at `GET /v1/samples/{id}` and what its cache held
at `GET /v1/samples/{id}/trace`.

Writes need a bearer token (`vase token create NAME`); reads too when the service sets
`VASE_REQUIRE_TOKEN_FOR_READS`. Every error has the same shape: `error` (a code), `message`, and
for invalid input `errors`, naming each field and the rule it broke.
"""


def _version() -> str:
    try:
        return metadata.version("vase-bench")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the environment's). With a broker URL jobs go to Celery
    workers; without one they run in a background thread of this process."""
    settings = settings or get_settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="vase", version=_version(), description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Submit, follow and cancel benchmark jobs; read their results."},
            {"name": "samples", "description": "Single samples and their eviction traces."},
            {"name": "catalog", "description": "Methods and tasks a job may name."},
            {"name": "health", "description": "Liveness and readiness probes."},
        ],
    )
    app.state.service = service
    errors.install(app)
    for module in (jobs, samples, catalog, health):
        app.include_router(module.router)
    _document_read_auth(app, settings)
    logging.getLogger("vase").setLevel(logging.INFO)
    return app


def _document_read_auth(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document says which operations need a token: writes always, reads only when
    ``require_token_for_reads`` is set (the bearer dependency is declared on every route)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            if not settings.require_token_for_reads:
                for operations in schema.get("paths", {}).values():
                    get = operations.get("get")
                    if get is not None:
                        get.pop("security", None)
                        get.get("responses", {}).pop("401", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
