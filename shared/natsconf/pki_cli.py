"""`aivos pki init`: create the private CA and the hub certificate."""

from __future__ import annotations

from pathlib import Path

import click

from aivos.shared.cli_options import data_dir_option
from aivos.shared.natsconf.pki import init_pki

__all__ = ["pki_init_cmd"]


@click.command("init")
@data_dir_option("Cloud data dir; the CA goes into DATA_DIR/pki.", required=True)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Name or IP the hub is reached at (repeatable; localhost and 127.0.0.1 always).",
)
def pki_init_cmd(data_dir: Path, hosts: tuple[str, ...]) -> None:
    """Create the aivos CA (kept if it exists) and (re)issue the hub's certificate."""
    pki = init_pki(data_dir, hosts=list(hosts))
    click.echo(f"CA: {pki.ca_path}")
    click.echo(f"hub certificate: {pki.hub_files.cert}")
