"""`aivos doctor [--data-dir D] [--config F] [--kit K] [--json]`: exit 0 when nothing
failed (warnings allowed), 1 when something did."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.edge.doctor.box import Box
from aivos.edge.doctor.checks import run_checks
from aivos.shared.cli_options import config_option, data_dir_option, json_option
from aivos.shared.paths import aivos_home

__all__ = ["doctor_cmd"]

_MARK = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


def _default_data_dir() -> Path:
    """The edge dir of `aivos up` (the box one can try things on)."""
    return aivos_home() / "appliance" / "edge"


@click.command("doctor")
@data_dir_option("The agent's data directory. Default: the edge of `aivos up`.")
@config_option("The agent's settings file. Default: DATA_DIR/config.toml, else the kit's.")
@click.option(
    "--kit",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The site kit (certificates, leaf.conf). Default: found beside the data dir.",
)
@json_option("Print the findings as JSON.")
def doctor_cmd(
    data_dir: Path | None, config_path: Path | None, kit: Path | None, as_json: bool
) -> None:
    """Check this box (disk, store, outbox, bundle, provider, router thresholds, link, clock,
    certificates) and say what is wrong."""
    logging.getLogger("aivos").setLevel(logging.ERROR)  # the checks' own logs are noise here
    box = Box.load(data_dir or _default_data_dir(), config_path, kit)
    findings = run_checks(box)
    failed = [f for f in findings if f.status == "fail"]
    if as_json:
        body = {"ok": not failed, "data_dir": str(box.data_dir), "findings": findings}
        sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
    else:
        table = Table(title=f"aivos doctor: {box.data_dir}", show_lines=False)
        for column in ("check", "", "finding"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(f.check, _MARK[f.status], f.message)
        console = Console()
        console.print(table)
        warned = sum(f.status == "warn" for f in findings)
        if failed:
            console.print(f"[red]{len(failed)} problem(s)[/red], {warned} warning(s)")
        else:
            console.print(f"[green]no problems[/green], {warned} warning(s)")
    if failed:
        raise click.exceptions.Exit(1)
