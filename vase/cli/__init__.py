"""The `vase` command line: one module per command group, joined here.

- :mod:`.catalog`: ``methods``, ``tasks``;
- :mod:`.run`: ``generate``, ``bench`` (the library; the base install is enough);
- :mod:`.regrade`: ``regrade`` (stored outputs graded again, strict and flexible);
- :mod:`.service`: ``serve``, ``worker``, ``migrate`` (``serve`` needs the ``api`` extra, ``worker``
  the ``worker`` extra);
- :mod:`.tokens`: ``token create|revoke|list``;
- :mod:`.submit`: ``submit`` (a job to a running API, through :mod:`vase.client`);
- :mod:`.dashboard`: ``dashboard`` (the ``dashboard`` extra).

Bad parameters exit with code 2 and a message naming the parameter.
"""

from __future__ import annotations

import typer

from . import catalog, dashboard, regrade, run, service, submit, tokens

app = typer.Typer(add_completion=False, no_args_is_help=True, help="KV-cache eviction benchmarks (VaSE and baselines).")

app.command()(catalog.methods)
app.command()(run.generate)
app.command()(catalog.tasks)
app.command()(run.bench)
app.command()(regrade.regrade)
app.command()(service.serve)
app.command()(service.worker)
app.command()(submit.submit)
app.command()(service.migrate)
app.add_typer(tokens.app, name="token")
app.command()(dashboard.dashboard)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
