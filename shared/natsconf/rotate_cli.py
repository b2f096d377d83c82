"""`aivos nats rotate-cert`: a running hub node gets a new certificate and reloads."""

from __future__ import annotations

from pathlib import Path

import click

from aivos.shared.errors import ConfigError
from aivos.shared.natsconf.rotate import rotate_node_cert

__all__ = ["rotate_cert_cmd"]


@click.command("rotate-cert")
@click.option(
    "--config",
    "configs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    required=True,
    help="The node's nats-server config (hub.conf, hub-<i>.conf; repeatable: one node "
    "after the other).",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Install this certificate (it must be issued by the node's CA) instead of "
    "issuing one here.",
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The key of --cert.",
)
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="SIGHUP the running node (its pid file) after writing the files.",
)
def rotate_cert_cmd(
    configs: tuple[Path, ...], cert: Path | None, key: Path | None, reload: bool
) -> None:
    """Give a hub node a new certificate from its CA (same subject and host names) and
    reload it without a restart: established leaf, client and route connections stay up,
    new ones get the new certificate. Run it as the account that owns the node's files."""
    if (cert is None) != (key is None):
        raise click.UsageError("give --cert and --key together")
    if cert is not None and len(configs) > 1:
        raise click.UsageError("--cert/--key replace one node's certificate: give one --config")
    replacement = (cert, key) if cert is not None and key is not None else None
    for config in configs:
        try:
            done = rotate_node_cert(config, replacement=replacement, reload=reload)
        except ConfigError as exc:
            raise click.ClickException(f"{config}: {exc}") from exc
        state = (
            f"reloaded (pid {done.reloaded_pid})"
            if done.reloaded_pid is not None
            else "not reloaded (not running, or --no-reload): takes effect at its next start"
        )
        click.echo(
            f"{config}: certificate serial {done.old_serial:x} -> {done.new_serial:x}; {state}"
        )
