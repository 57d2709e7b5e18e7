"""`vase submit`: send a job to a running API (through :mod:`vase.client`), optionally wait for it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .common import fail


def submit(
    job_file: str = typer.Argument(..., help="The job as JSON (a file, or - for stdin); see POST /v1/jobs."),
    api_url: str | None = typer.Option(None, "--api-url", help="Default: VASE_API_URL."),
    token: str | None = typer.Option(None, "--token", help="Default: VASE_API_TOKEN."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to finish, then print its results."),
    poll: float = typer.Option(2.0, "--poll", min=0.1, help="Seconds between status checks with --wait."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Submit a job to a running API; prints its id (with --wait, its results)."""
    from ..client import ApiError, ApiUnreachable, Client

    try:
        text = sys.stdin.read() if job_file == "-" else Path(job_file).read_text()
    except OSError as exc:
        fail(f"job-file: {exc}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"job-file: not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail("job-file: must be a JSON object (a job, see POST /v1/jobs)")
    from ..spec import JobInvalid, JobSpec

    try:  # types and bounds, before any request; the API checks the rest (the registries, the model, resources)
        JobSpec.parse(body)
    except JobInvalid as exc:
        fail(str(exc))
    with Client(api_url, token) as api:
        try:
            job = api.submit(body)
            if not wait:
                typer.echo(json.dumps(job, indent=2) if as_json else job["id"])
                return
            typer.echo(f"job {job['id']} submitted; waiting", err=True)
            job = api.wait(
                job, poll=poll,
                on_progress=lambda j: typer.echo(
                    f"  {j['status']}: {j['progress']['done']}/{j['progress']['total']} samples", err=True),
                on_retry=lambda exc: typer.echo(f"warning: {exc}; retrying", err=True),
            )
            rows = api.results(job["id"])["rows"]
        except ApiUnreachable as exc:
            fail(str(exc), code=1)
        except ApiError as exc:
            fail(str(exc), code=2 if exc.status == 422 else 1)
    if as_json:
        typer.echo(json.dumps({"job": job, "results": rows}, indent=2))
    else:
        typer.echo(f"job {job['id']}: {job['status']}" + (f" ({job['error']})" if job.get("error") else ""))
        for row in rows:
            acc, flex = ("-" if row.get(k) is None else f"{100 * row[k]:.1f}%" for k in ("accuracy", "accuracy_flex"))
            budget = "-" if row["budget"] is None else row["budget"]
            typer.echo(f"  {row['method']:40s} budget {budget!s:>6}  accuracy {acc:>7}  flexible {flex:>7}  "
                       f"samples {row['n_samples']}")
    if job["status"] != "succeeded":
        raise typer.Exit(code=1)
