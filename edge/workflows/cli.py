"""`aivos workflows validate|list|run`."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from aivos.shared.cli_options import config_option, data_dir_option
from aivos.shared.errors import DataError, WorkflowInvalid

__all__ = ["validate_cmd", "list_cmd", "run_cmd"]

_config_opt = config_option(
    "Agent config TOML; its [workflows] table gives the directory, secrets and connectors.",
    exists=True,
)


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])
    return out


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_config_opt
def validate_cmd(paths: tuple[Path, ...], config_path: Path | None) -> None:
    """Check workflow files (or directories of them); exit 1 if any is invalid.

    With --config, connector names are checked against the site's allow-list and, when no
    PATHS are given, the configured workflows are checked."""
    from aivos.edge.workflows.loader import WorkflowSet, load_workflow
    from aivos.edge.workflows.settings import load_workflow_settings

    console = Console()
    settings = load_workflow_settings(config_path) if config_path else None
    files = _expand(paths) if paths else (settings.workflow_paths() if settings else [])
    if not files:
        raise click.UsageError("give workflow files or directories, or --config")
    connectors = settings.connectors if settings else None
    loaded, failed = [], 0
    for path in files:
        try:
            loaded.append(load_workflow(path, connectors=connectors))
            console.print(f"[green]ok[/green]   {path}")
        except WorkflowInvalid as exc:
            failed += 1
            console.print(f"[red]FAIL[/red] {exc}", highlight=False)
    if not failed:
        try:
            WorkflowSet(loaded)
        except WorkflowInvalid as exc:
            failed += 1
            console.print(f"[red]FAIL[/red] {exc}", highlight=False)
    if failed:
        raise DataError("workflows", f"{failed} of {len(files)} workflow file(s) invalid")


@click.command("list")
@_config_opt
def list_cmd(config_path: Path | None) -> None:
    """List the configured workflows and what triggers them."""
    from aivos.edge.workflows.loader import load_workflows
    from aivos.edge.workflows.settings import load_workflow_settings

    settings = load_workflow_settings(config_path)
    workflows = load_workflows(settings.workflow_paths(), connectors=settings.connectors)
    table = Table("workflow", "intents", "events / nats", "steps", "deadline", "file")
    for wf in workflows.by_name.values():
        table.add_row(
            wf.name,
            ", ".join(wf.trigger.intents) or "-",
            ", ".join([*wf.trigger.events, *(f"nats:{n}" for n in wf.trigger.nats)]) or "-",
            str(len(wf.steps)),
            f"{wf.deadline_s:g}s",
            wf.source,
        )
    Console().print(table)


def _parse_inputs(pairs: tuple[str, ...], inputs_json: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if inputs_json:
        value = json.loads(inputs_json)
        if not isinstance(value, dict):
            raise click.BadParameter("--json must be a JSON object")
        inputs.update(value)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"--input expects key=value, got {pair!r}")
        inputs[key] = raw
    return inputs


@click.command("run")
@click.argument("name")
@_config_opt
@data_dir_option(file_okay=True)
@click.option("--input", "pairs", multiple=True, help="An input value, key=value (repeatable).")
@click.option("--json", "inputs_json", default=None, help="Inputs as one JSON object.")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True)
def run_cmd(
    name: str,
    config_path: Path | None,
    data_dir: Path | None,
    pairs: tuple[str, ...],
    inputs_json: str | None,
    wait_s: float,
) -> None:
    """Run workflow NAME once in this process and print its result and timeline.

    Runs that pause for approval stay in the store; an agent on the same data dir
    resumes them (approve with POST /v1/runs/<id>/approve)."""
    from aivos.edge.store import Store
    from aivos.edge.workflows.engine import WorkflowEngine
    from aivos.edge.workflows.settings import load_workflow_settings

    settings = load_workflow_settings(config_path)
    if data_dir is None:
        data_dir = Path("./var/edge")
        if config_path is not None:
            with open(config_path, "rb") as fh:
                raw = tomllib.load(fh)
            if isinstance(raw.get("data_dir"), str):
                data_dir = Path(raw["data_dir"])
    inputs = _parse_inputs(pairs, inputs_json)
    console = Console()

    async def go() -> None:
        store = await asyncio.to_thread(Store.open, data_dir)
        engine = WorkflowEngine(store, settings)
        try:
            await engine.start(resume=False)
            result = await engine.start_run(
                engine.workflow(name), inputs, wait_s=wait_s, trigger="cli"
            )
            detail = engine.run_detail(result.run_id)
        finally:
            await engine.stop()
            await asyncio.to_thread(store.close)
        table = Table("#", "step", "kind", "state", "attempts", "ms", "error")
        for s in detail.steps:
            table.add_row(
                str(s.seq),
                s.step,
                s.kind,
                s.state,
                str(s.attempts),
                f"{s.duration_ms:.1f}" if s.duration_ms is not None else "-",
                s.error or "",
            )
        console.print(table)
        console.print(f"run [bold]{result.run_id}[/bold]: {result.state}", highlight=False)
        if result.response is not None:
            console.print(result.response, highlight=False)

    asyncio.run(go())
