"""`aivos nats reload`: reload the fleet hub's nats-server the way the fleet commands do.

A SIGHUP sent by hand (``kill -HUP``, a service manager's reload) takes no lock: it can
land while `aivos fleet enroll/rotate/revoke` rewrites ``users.conf`` or while `aivos nats
rotate-cert` has written a node's new key but not yet its certificate, and nats-server
then reads a half-written users file or a key that does not match its certificate. This
command takes the locks those writers take, in their order (``identities.lock``, then
``pki/``, then ``pki/nodes/``), waits while one is held (saying so), then signals."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from aivos.cloud.fleet.enroll import identities_lock, signal_hub
from aivos.shared.cli_options import data_dir_option

__all__ = ["reload_cmd"]


@click.command("reload")
@data_dir_option("Cloud data dir (holds pki/ and nats/).", required=True)
def reload_cmd(data_dir: Path) -> None:
    """SIGHUP every running node of the hub under --data-dir, after any change to its
    users file or certificates in progress has finished (use it instead of kill -HUP).
    Run it as the account that owns the data dir's files (the service account)."""
    if not (data_dir / "nats").is_dir():  # taking the lock would create the folder
        _no_hub(data_dir, f"no folder {data_dir / 'nats'}")
    with identities_lock(data_dir):
        done = signal_hub(data_dir)
    if not done.pids:
        _no_hub(data_dir, "no live pid in " + ", ".join(str(f) for f in done.pid_files))
    pids = ", ".join(str(pid) for pid in done.pids)
    plural = "s" if len(done.pids) > 1 else ""
    click.echo(f"reloaded the hub under {data_dir}: SIGHUP sent to pid{plural} {pids}")


def _no_hub(data_dir: Path, why: str) -> NoReturn:
    raise click.ClickException(
        f"no hub node is running under {data_dir} ({why}); nothing was reloaded. Start the "
        "hub (aivos up, or its aivos-hub unit): it reads the current files when it starts."
    )
