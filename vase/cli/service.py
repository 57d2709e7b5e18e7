"""`vase serve` (the HTTP API), `vase worker` (a Celery worker) and `vase migrate` (the schema).

`serve` needs the ``api`` extra (and ``worker`` with a broker: the API then enqueues to Celery);
`worker` needs the ``worker`` extra. Without them they say which extra to install."""

from __future__ import annotations

import os

import typer

from ..config import redact_url
from .common import BROKER_OPTION, DB_OPTION, apply_env, fail, open_store, require_extra


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    database_url: str | None = DB_OPTION,
    broker_url: str | None = BROKER_OPTION,
    workers: int = typer.Option(1, "--workers", min=1, help="API processes (with a broker only)."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the HTTP API (docs at /docs). Without a broker, jobs run in this process on the
    embedded model and SQLite: nothing else to install."""
    require_extra("api", "serve", "fastapi", "uvicorn")
    settings = apply_env(database_url, broker_url)
    if settings.broker_url:
        require_extra("worker", "serve --broker-url", "celery", "redis")
    import uvicorn

    mode = "celery" if settings.broker_url else "embedded"
    if mode == "embedded" and workers > 1:
        fail("workers: an embedded API (no broker) runs jobs in its own process and must be one process; "
             "set --broker-url to run several")
    if mode == "embedded":  # jobs run a model in this process
        from ..runtime import size_threads

        size_threads()
    typer.echo(
        f"vase API on http://{host}:{port} ({mode}: "
        + ("jobs go to Celery workers via " + redact_url(settings.broker_url) if settings.broker_url
           else "jobs run in this process")
        + f"; database {redact_url(settings.resolved_database_url)})",
        err=True,
    )
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False)


def worker(
    queues: str | None = typer.Option(None, "--queues", "-Q", help="Comma-separated queues (default: the GPU "
                                                                   "queue with GPUs, else the CPU queue)."),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1,
                                           help="Processes (default: one per GPU, else 1)."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs to use, e.g. 0,1 (default: every visible GPU)."),
    pool: str = typer.Option("prefork", "--pool", help="prefork | solo | threads"),
    database_url: str | None = DB_OPTION,
    broker_url: str | None = BROKER_OPTION,
    loglevel: str = typer.Option("INFO", "--loglevel"),
    hostname: str | None = typer.Option(None, "--hostname", "-n"),
) -> None:
    """Start a Celery worker that runs job chunks (one process per GPU; models load once per process)."""
    require_extra("worker", "worker", "celery", "redis")
    if gpus:
        os.environ["VASE_WORKER_GPUS"] = gpus
    settings = apply_env(database_url, broker_url)
    if not settings.broker_url:
        fail("broker-url: a worker needs a broker: set VASE_BROKER_URL or --broker-url redis://HOST:6379/0")
    from worker.app import app as celery_app
    from worker.app import worker_gpus

    found = worker_gpus()
    if found and not settings.worker_gpus:
        os.environ["VASE_WORKER_GPUS"] = ",".join(found)
        apply_env()
    queue_list = queues or (settings.queue_gpu if found else settings.queue_cpu)
    if pool not in ("prefork", "solo", "threads"):
        fail(f"pool: must be one of prefork, solo, threads, got {pool!r}")
    n = concurrency or max(1, len(found))
    from ..runtime import size_threads

    threads = size_threads(n, settings)  # before the tasks import torch; the pool processes inherit it
    argv = ["worker", "-Q", queue_list, "--concurrency", str(n), "--pool", pool, "--loglevel", loglevel,
            "--without-gossip", "--without-mingle"]
    if hostname:
        argv += ["--hostname", hostname]
    typer.echo(f"vase worker: queues {queue_list}, {n} process(es) of {threads} torch thread(s), GPUs "
               f"{','.join(found) or 'none'}, broker {redact_url(settings.broker_url)}, database "
               f"{redact_url(settings.resolved_database_url)}", err=True)
    celery_app.worker_main(argv=argv)


def migrate(database_url: str | None = DB_OPTION) -> None:
    """Upgrade the database schema to the newest revision (the API and workers also do it on start)."""
    store = open_store(database_url)
    typer.echo(f"database {redact_url(store.url)} at revision {store.schema_revision()}", err=True)
