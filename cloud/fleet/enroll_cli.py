"""`aivos fleet enroll | revoke | rotate`: site credentials on the secured hub."""

from __future__ import annotations

from pathlib import Path

import click

from aivos.cloud.fleet.enroll import enroll_site, retire_rotated, revoke_site, rotate_site
from aivos.shared.cli_options import data_dir_option

__all__ = ["enroll_cmd", "revoke_cmd", "rotate_cmd"]

_DATA_DIR = data_dir_option("Cloud data dir (holds pki/ and nats/).", required=True)
_OUT = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the site kit into.",
)
_LEAF_PORT = click.option(
    "--leaf-port", default=4223, show_default=True, help="Client port of the site's leaf node."
)
_HUB_LEAF_URL = click.option(
    "--hub-leaf-url",
    default=None,
    help="Leaf-node URL of the hub as the site sees it [default: from the hub config].",
)


@click.command("enroll")
@click.argument("site")
@_DATA_DIR
@_OUT
@_LEAF_PORT
@_HUB_LEAF_URL
def enroll_cmd(
    site: str, data_dir: Path, out: Path, leaf_port: int, hub_leaf_url: str | None
) -> None:
    """Issue SITE's credentials and write its kit (leaf.conf, edge.toml, credentials/)."""
    kit = enroll_site(data_dir, site, out, leaf_port=leaf_port, hub_leaf_url=hub_leaf_url)
    click.echo(f"enrolled {site}; start its leaf with: nats-server -c {kit / 'leaf.conf'}")
    click.echo(str(kit))


@click.command("revoke")
@click.argument("site")
@_DATA_DIR
def revoke_cmd(site: str, data_dir: Path) -> None:
    """Remove every credential of SITE; the running hub reloads and cuts it off."""
    revoke_site(data_dir, site)
    click.echo(f"revoked {site}")


@click.command("rotate")
@click.argument("site")
@_DATA_DIR
@_OUT
@_LEAF_PORT
@_HUB_LEAF_URL
@click.option(
    "--wait",
    "wait_s",
    default=0.0,
    show_default=True,
    help="Seconds to wait for the new kit to connect, then retire the old credentials.",
)
def rotate_cmd(
    site: str,
    data_dir: Path,
    out: Path,
    leaf_port: int,
    hub_leaf_url: str | None,
    wait_s: float,
) -> None:
    """Write a new kit for SITE; the old credentials stop once the new ones connect."""
    kit = rotate_site(data_dir, site, out, leaf_port=leaf_port, hub_leaf_url=hub_leaf_url)
    if wait_s > 0 and site in retire_rotated(data_dir, wait_s=wait_s):
        click.echo(f"new credentials of {site} connected; old ones retired")
    click.echo(str(kit))
