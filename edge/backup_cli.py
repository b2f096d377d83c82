"""`aivos backup --data-dir D --out FILE` and `aivos restore --data-dir D FILE [--force]`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console

from aivos.edge.backup import ProgressFn, create_backup, restore_backup
from aivos.shared.cli_options import data_dir_option
from aivos.shared.progress import progress_display

__all__ = ["backup_cmd", "restore_cmd"]


_STAGES = {
    "copy": "copying (SQLite snapshots, index, files)",
    "archive": "writing the archive",
    "extract": "extracting and checking sha256s",
}


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


@contextlib.contextmanager
def _progress() -> Iterator[ProgressFn]:
    """One progress task per stage, on stderr: a bar on a terminal, plain lines otherwise."""
    with progress_display(Console(stderr=True)) as display:
        tasks = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = display.add_task(
                    _STAGES.get(stage, stage), total=total, in_bytes=True
                )
            display.update(tasks[stage], completed=done, total=total)

        yield report


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
    with _progress() as progress:
        manifest = create_backup(data_dir, out, with_bundles=with_bundles, progress=progress)
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
    with _progress() as progress:
        manifest = restore_backup(archive, data_dir, force=force, progress=progress)
    Console().print(
        f"restored {len(manifest.files)} files from {archive} (taken from {manifest.source}) "
        f"into {data_dir}; check it with `aivos audit verify --data-dir {data_dir}`",
        highlight=False,
    )
