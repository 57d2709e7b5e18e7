"""`vase token create|revoke|list`: API tokens (only their SHA-256 is stored; a new one is shown once)."""

from __future__ import annotations

import typer

from .common import DB_OPTION, fail, open_store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="API tokens: writes to the API need one (stored hashed; shown once).")


@app.command("create")
def token_create(name: str = typer.Argument(..., help="A name for the token (who or what uses it)."),
                 database_url: str | None = DB_OPTION) -> None:
    """Create an API token and print it (only its hash is stored: keep it now)."""
    from ..store import DuplicateTokenName

    store = open_store(database_url)
    try:
        token = store.create_token(name)
    except DuplicateTokenName as exc:
        fail(f"name: {exc}")
    except ValueError as exc:
        fail(f"name: {exc}")
    typer.echo(token)
    typer.echo(f"created API token {name!r}; send it as 'Authorization: Bearer <token>' "
               "(or export VASE_API_TOKEN for the CLI)", err=True)


@app.command("revoke")
def token_revoke(name: str = typer.Argument(..., help="The token's name."),
                 database_url: str | None = DB_OPTION) -> None:
    """Revoke an API token: requests with it are refused from now on."""
    store = open_store(database_url)
    if not store.revoke_token(name):
        fail(f"name: no active API token named {name!r}", code=1)
    typer.echo(f"revoked API token {name!r}", err=True)


@app.command("list")
def token_list(database_url: str | None = DB_OPTION) -> None:
    """List API tokens (names and dates; never the tokens)."""
    for t in open_store(database_url).list_tokens():
        state = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "active"
        typer.echo(f"{t['name']:32s} created {t['created_at']:%Y-%m-%d %H:%M}  {state}")
