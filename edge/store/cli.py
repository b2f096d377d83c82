"""`aivos tokens create|revoke` and `aivos audit verify`.

Safe to run while the agent serves the same data directory: SQLite serialises the two
processes' writes (the agent notices a revocation within about a second).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from aivos.edge.store import Store
from aivos.edge.store import tokens as _tokens
from aivos.edge.store.audit import verify
from aivos.edge.store.db import db_path, open_reader
from aivos.edge.store.tokens import SCOPES, parse_bindings
from aivos.shared.cli_options import data_dir_option
from aivos.shared.errors import AuditChainBroken, NotFound

__all__ = ["tokens_create_cmd", "tokens_revoke_cmd", "audit_verify_cmd"]

_data_dir = data_dir_option("The agent's data directory (holds aivos.db).", required=True)


@click.command("create")
@_data_dir
@click.option("--scope", required=True, type=click.Choice(SCOPES), help="What the token may do.")
@click.option("--name", default=None, help="A unique name (default: SCOPE-<random id>).")
@click.option(
    "--bind",
    "bindings",
    multiple=True,
    metavar="KEY=VALUE",
    help="An attribute the site vouches for, e.g. account_id=ACC-1001 (repeatable): workflow "
    'inputs declared source = "token" take it from here, never from the request.',
)
def tokens_create_cmd(
    data_dir: Path, scope: str, name: str | None, bindings: tuple[str, ...]
) -> None:
    """Create an API token. The token is printed once, alone on the last line."""
    bound = parse_bindings(bindings)
    store = Store.open(data_dir)
    try:
        name, token = store.transact_sync(lambda c: _tokens.create(c, name, scope, bound=bound))
    finally:
        store.close()
    extra = f", bound {', '.join(f'{k}={v}' for k, v in bound.items())}" if bound else ""
    Console(stderr=True).print(
        f"created token [bold]{name}[/bold] (scope {scope}{extra}); it is shown only once:",
        highlight=False,
    )
    click.echo(token)


@click.command("revoke")
@_data_dir
@click.argument("name")
def tokens_revoke_cmd(data_dir: Path, name: str) -> None:
    """Revoke the token called NAME."""
    store = Store.open(data_dir)
    try:
        store.revoke_token_sync(name)
    finally:
        store.close()
    Console().print(f"revoked token [bold]{name}[/bold]", highlight=False)


@click.command("verify")
@_data_dir
def audit_verify_cmd(data_dir: Path) -> None:
    """Check the audit hash chain; exit 0 when intact, 1 naming the first bad row."""
    path = db_path(data_dir)
    if not path.exists():
        raise NotFound(f"no store at {path}")
    console = Console()
    conn = open_reader(path)
    try:
        conn.execute("BEGIN")
        result = verify(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    if result.ok:
        console.print(f"[green]audit chain intact[/green]: {result.n_rows} rows", highlight=False)
        return
    raise AuditChainBroken(
        result.first_bad_seq,
        f"audit chain broken at seq {result.first_bad_seq} "
        f"({result.n_rows} rows checked): {result.reason}",
    )
