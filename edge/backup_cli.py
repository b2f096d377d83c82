"""`aivos backup --data-dir D --out FILE` and `aivos restore --data-dir D FILE [--force]`."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from aivos.edge.backup import create_backup, restore_backup
from aivos.shared.cli_options import data_dir_option

__all__ = ["backup_cmd", "restore_cmd"]


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


@click.command("backup")
@data_dir_option("The agent's data directory (it may be serving).", required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The archive to write (tar; gzip when it ends in .gz or .tgz).",
)
@click.option(
    "--with-bundles",
    is_flag=True,
    help="Also the installed bundle files (by default only the active-bundle pointer).",
)
def backup_cmd(data_dir: Path, out: Path, with_bundles: bool) -> None:
    """Back up an edge data dir: SQLite online backups, the knowledge index, settings and
    fleet state, with a manifest of sha256s. Safe while the agent serves."""
    started = time.monotonic()
    manifest = create_backup(data_dir, out, with_bundles=with_bundles)
    total = sum(f.size for f in manifest.files)
    Console().print(
        f"backup of {data_dir}: {len(manifest.files)} files, {_size(total)} "
        f"in {time.monotonic() - started:.1f} s -> {out}",
        highlight=False,
    )


@click.command("restore")
@data_dir_option("The data directory to restore into (stop its agent first).", required=True)
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Replace the contents of a non-empty data dir.")
def restore_cmd(data_dir: Path, archive: Path, force: bool) -> None:
    """Restore an `aivos backup` archive, every file checked against its sha256."""
    manifest = restore_backup(archive, data_dir, force=force)
    Console().print(
        f"restored {len(manifest.files)} files from {archive} (taken from {manifest.source}) "
        f"into {data_dir}; check it with `aivos audit verify --data-dir {data_dir}`",
        highlight=False,
    )
