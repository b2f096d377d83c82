"""`aivos intents eval --model DIR --data TEST [--json]`."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.edge.intent.evaluate import evaluate
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.cli_options import json_option
from aivos.shared.datasets import load_examples

__all__ = ["eval_cmd"]


@click.command("eval")
@click.option(
    "--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Bundle directory."
)
@click.option(
    "--data", required=True, help="CSV, JSONL or CLINC150 JSON (PATH#test for its test split)."
)
@json_option("Print one JSON object instead of a table.")
@click.option(
    "--threads", type=int, default=None, help="ORT intra-op threads (default: all cores)."
)
def eval_cmd(model_dir: Path, data: str, as_json: bool, threads: int | None) -> None:
    """Evaluate an intent bundle: in-scope accuracy, oos recall, latency."""
    model = IntentModel.load(model_dir, intra_op_threads=threads)
    examples = load_examples(data)
    report = evaluate(model, examples)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    table = Table(title=f"bundle {report.bundle_version} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in msgspec.structs.asdict(report).items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
