"""`vase methods` and `vase tasks`: what a benchmark may name."""

from __future__ import annotations

import typer

from .common import console, emit_json, fail


def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the cache methods with their parameters and defaults, and the authors' eviction_mode each
    reproduces with those defaults (GitHub terarachang/VaSE; `--reference-exact` matches it)."""
    from ..policies import describe_policies

    described = describe_policies()
    if as_json:
        emit_json([{"name": d["name"], "kind": d["kind"], "params": d["params"], "stochastic": d["stochastic"],
                    "reference_mode": d["reference_mode"], "description": d["description"]} for d in described])
        return
    from rich.table import Table

    table = Table("method", "kind", "parameters (defaults)", "authors' mode", "description")
    for d in described:
        params = ", ".join(f"{k}={v}" for k, v in d["params"].items()) or "-"
        table.add_row(d["name"], d["kind"], params, d["reference_mode"] or "-", d["description"])
    console().print(table)


def tasks(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    markdown: bool = typer.Option(False, "--markdown",
                                  help="Print the generated tasks' parameters as the README's markdown table."),
) -> None:
    """List the tasks (hub sets load on connected hosts; offline ones are generated here) with the
    generated tasks' difficulty parameters and their defaults (`--json`: `params` {name: default};
    `--markdown`: each parameter's default, range and meaning, as the README's table)."""
    from ..tasks import list_tasks, parameter_table_markdown

    if as_json and markdown:
        fail("--json and --markdown: choose one output format")
    if markdown:
        typer.echo(parameter_table_markdown())
        return
    rows = list_tasks()
    if as_json:
        emit_json([{"name": t["name"], "offline": t["offline"], "size": t["size"],
                    "params": {k: v["default"] for k, v in t["params"].items()}} for t in rows])
        return
    for t in rows:
        params = ", ".join(f"{k}={v['default']}" for k, v in t["params"].items())
        typer.echo(f"{t['name']:28s} {'offline' if t['offline'] else 'hub':8s} "
                   f"{t['size'] if t['size'] is not None else '?':>6}  {params}".rstrip())
    typer.echo("Generated tasks take parameters in the name: 'fact-recall?facts=8&filler=600'.")
