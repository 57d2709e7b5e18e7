"""`vase regrade`: grade stored outputs again (strict and flexible) and print the updated table."""

from __future__ import annotations

import typer

from .common import emit_json, fail, open_store, progress


def regrade(
    job: str | None = typer.Option(None, "--job", help="Re-grade this job's samples."),
    run: list[int] = typer.Option([], "--run", help="Re-grade this run's samples (repeatable)."),
    all_runs: bool = typer.Option(False, "--all", help="Re-grade every stored sample."),
    db: str | None = typer.Option(None, "--db", help="Database URL (default: the embedded SQLite file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report and the result rows as JSON."),
) -> None:
    """Grade stored outputs again and write both verdicts (strict and flexible) back, e.g. to fill
    the flexible columns of samples stored before they existed."""
    chosen = [name for name, given in (("--job", job is not None), ("--run", bool(run)), ("--all", all_runs))
              if given]
    if len(chosen) != 1:
        fail(f"regrade: give exactly one of --job, --run or --all (got {', '.join(chosen) or 'none'})")
    from ..bench import result_rows
    from ..regrade import regrade as regrade_samples

    store = open_store(db)
    if job is not None and store.get_job(job) is None:
        fail(f"--job: no job {job!r} in the store")
    if run:
        unknown = sorted(set(run) - {r["id"] for r in store.list_runs(run_ids=run)})
        if unknown:
            fail(f"--run: no run {', '.join(map(str, unknown))} in the store")
    total = sum(r["n_samples"] for r in store.list_runs(job_id=job, run_ids=run or None))
    bar = progress(total, "re-grading", unit="sample")
    try:
        report = regrade_samples(store, job_id=job, run_ids=run or None, on_sample=lambda: bar.update(1))
    finally:
        bar.close()
    ids = [r["id"] for r in store.list_runs(job_id=job, run_ids=run or None)]
    rows = result_rows(store.results(run_ids=ids)) if ids else []
    if as_json:
        emit_json({"report": report.to_dict(), "rows": rows})
        return
    from .run import print_table

    for line in report.skipped:
        typer.echo(f"skipped: {line}", err=True)
    typer.echo(f"re-graded {report.samples} samples of {report.runs} runs: {report.strict_changed} strict and "
               f"{report.flex_changed} flexible verdicts changed", err=True)
    if rows:
        print_table(rows, "re-graded runs")
