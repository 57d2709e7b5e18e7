"""`vase serve`, `vase worker`, `vase token create|revoke|list`, `vase submit`, `vase migrate`.

Registered on the main typer app by :func:`register` (see the end of ``vase/cli.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

token_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="API tokens: writes to the API need one (stored hashed; shown once).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _apply_env(database_url: str | None = None, broker_url: str | None = None) -> Any:
    """Flags override the environment; returns the refreshed settings."""
    from .config import get_settings

    if database_url:
        os.environ["VASE_DATABASE_URL"] = database_url
    if broker_url:
        os.environ["VASE_BROKER_URL"] = broker_url
    get_settings.cache_clear()
    return get_settings()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]


def _store(database_url: str | None):
    from .store import StoreUnavailable, open_store

    settings = _apply_env(database_url)
    try:
        return open_store(settings.resolved_database_url)
    except StoreUnavailable as exc:
        _fail(f"database unavailable: {exc}", code=1)


DB_OPTION = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: VASE_DATABASE_URL, else the "
                                                      "embedded SQLite file).")
BROKER_OPTION = typer.Option(None, "--broker-url", help="Celery broker, redis://HOST:PORT/DB (default: "
                                                        "VASE_BROKER_URL; none: jobs run inside the API).")


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
    import uvicorn

    settings = _apply_env(database_url, broker_url)
    mode = "celery" if settings.broker_url else "embedded"
    if mode == "embedded" and workers > 1:
        _fail("workers: an embedded API (no broker) runs jobs in its own process and must be one process; "
              "set --broker-url to run several")
    typer.echo(
        f"vase API on http://{host}:{port} ({mode}: "
        + ("jobs go to Celery workers via " + _redacted(settings.broker_url) if settings.broker_url
           else "jobs run in this process")
        + f"; database {_redacted(settings.resolved_database_url)})",
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
    if gpus:
        os.environ["VASE_WORKER_GPUS"] = gpus
    settings = _apply_env(database_url, broker_url)
    if not settings.broker_url:
        _fail("broker-url: a worker needs a broker: set VASE_BROKER_URL or --broker-url redis://HOST:6379/0")
    from worker.app import app as celery_app
    from worker.app import worker_gpus

    found = worker_gpus()
    if found and not settings.worker_gpus:
        os.environ["VASE_WORKER_GPUS"] = ",".join(found)
        _apply_env()
    queue_list = queues or (settings.queue_gpu if found else settings.queue_cpu)
    if pool not in ("prefork", "solo", "threads"):
        _fail(f"pool: must be one of prefork, solo, threads, got {pool!r}")
    n = concurrency or max(1, len(found))
    argv = ["worker", "-Q", queue_list, "--concurrency", str(n), "--pool", pool, "--loglevel", loglevel,
            "--without-gossip", "--without-mingle"]
    if hostname:
        argv += ["--hostname", hostname]
    typer.echo(f"vase worker: queues {queue_list}, {n} process(es), GPUs {','.join(found) or 'none'}, broker "
               f"{_redacted(settings.broker_url)}, database {_redacted(settings.resolved_database_url)}", err=True)
    celery_app.worker_main(argv=argv)


@token_app.command("create")
def token_create(name: str = typer.Argument(..., help="A name for the token (who or what uses it)."),
                 database_url: str | None = DB_OPTION) -> None:
    """Create an API token and print it (only its hash is stored: keep it now)."""
    from .store import DuplicateTokenName

    store = _store(database_url)
    try:
        token = store.create_token(name)
    except DuplicateTokenName as exc:
        _fail(f"name: {exc}")
    except ValueError as exc:
        _fail(f"name: {exc}")
    typer.echo(token)
    typer.echo(f"created API token {name!r}; send it as 'Authorization: Bearer <token>' "
               "(or export VASE_API_TOKEN for the CLI)", err=True)


@token_app.command("revoke")
def token_revoke(name: str = typer.Argument(..., help="The token's name."),
                 database_url: str | None = DB_OPTION) -> None:
    """Revoke an API token: requests with it are refused from now on."""
    store = _store(database_url)
    if not store.revoke_token(name):
        _fail(f"name: no active API token named {name!r}", code=1)
    typer.echo(f"revoked API token {name!r}", err=True)


@token_app.command("list")
def token_list(database_url: str | None = DB_OPTION) -> None:
    """List API tokens (names and dates; never the tokens)."""
    for t in _store(database_url).list_tokens():
        state = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "active"
        typer.echo(f"{t['name']:32s} created {t['created_at']:%Y-%m-%d %H:%M}  {state}")


def migrate(database_url: str | None = DB_OPTION) -> None:
    """Upgrade the database schema to the newest revision (the API and workers also do it on start)."""
    store = _store(database_url)
    typer.echo(f"database {_redacted(store.url)} at revision {store.schema_revision()}", err=True)


def submit(
    job_file: str = typer.Argument(..., help="The job as JSON (a file, or - for stdin); see POST /v1/jobs."),
    api_url: str | None = typer.Option(None, "--api-url", help="Default: VASE_API_URL."),
    token: str | None = typer.Option(None, "--token", help="Default: VASE_API_TOKEN."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to finish, then print its results."),
    poll: float = typer.Option(2.0, "--poll", min=0.1, help="Seconds between status checks with --wait."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Submit a job to a running API; prints its id (with --wait, its results)."""
    import httpx

    from .config import get_settings

    settings = get_settings()
    base = (api_url or settings.api_url).rstrip("/")
    token = token or settings.api_token
    try:
        text = sys.stdin.read() if job_file == "-" else Path(job_file).read_text()
    except OSError as exc:
        _fail(f"job-file: {exc}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"job-file: not valid JSON: {exc}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        try:
            r = client.post("/v1/jobs", json=body)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the API at {base}: {exc}", code=1)
        if r.status_code != 201:
            _report_error(r)
        job = r.json()
        if not wait:
            typer.echo(json.dumps(job, indent=2) if as_json else job["id"])
            return
        typer.echo(f"job {job['id']} submitted; waiting", err=True)
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(poll)
            try:
                r = client.get(f"/v1/jobs/{job['id']}")
            except httpx.HTTPError as exc:
                typer.echo(f"warning: {exc}; retrying", err=True)
                continue
            if r.status_code == 503:
                continue
            if r.status_code != 200:
                _report_error(r)
            job = r.json()
            p = job["progress"]
            typer.echo(f"  {job['status']}: {p['done']}/{p['total']} samples", err=True)
        results = client.get(f"/v1/jobs/{job['id']}/results")
        if results.status_code != 200:
            _report_error(results)
        rows = results.json()["rows"]
        if as_json:
            typer.echo(json.dumps({"job": job, "results": rows}, indent=2))
        else:
            typer.echo(f"job {job['id']}: {job['status']}" + (f" ({job['error']})" if job.get("error") else ""))
            for row in rows:
                acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
                budget = "-" if row["budget"] is None else row["budget"]
                typer.echo(f"  {row['method']:40s} budget {budget!s:>6}  accuracy {acc:>7}  "
                           f"samples {row['n_samples']}")
        if job["status"] != "succeeded":
            raise typer.Exit(code=1)


def _report_error(response) -> None:
    try:
        body = response.json()
        message = body.get("message") or body
    except ValueError:
        message = response.text[:500]
    _fail(f"the API answered {response.status_code}: {message}", code=2 if response.status_code == 422 else 1)


def register(app: typer.Typer) -> None:
    """Add the service commands to the `vase` CLI."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("submit")(submit)
    app.command("migrate")(migrate)
    app.add_typer(token_app, name="token")
