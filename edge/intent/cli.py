"""`aivos intents eval --model DIR --data TEST [--perturb typos] [--batch-size 1] [--json]`."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from aivos.edge.intent.evaluate import EvalReport, evaluate, perturb_typos
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.as_served import ROWS_PER_RUN
from aivos.shared.cli_options import json_option
from aivos.shared.datasets import Example, load_examples

__all__ = ["eval_cmd"]


class PerturbedReport(msgspec.Struct, frozen=True):
    """`eval --perturb`: the same test set clean and perturbed, one bundle, one threshold."""

    perturb: str
    rate: float
    seed: int
    n_texts_changed: int
    clean: EvalReport
    perturbed: EvalReport
    in_scope_drop: float  # clean minus perturbed in-scope accuracy (fraction)
    oos_recall_change: float  # perturbed minus clean


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
@click.option(
    "--perturb",
    type=click.Choice(["none", "typos"]),
    default="none",
    show_default=True,
    help="Also evaluate a perturbed copy: 'typos' = seeded keyboard slips in longer words.",
)
@click.option(
    "--perturb-rate",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Share of words of 4+ letters that get a slip.",
)
@click.option("--seed", type=int, default=13, show_default=True, help="Perturbation seed.")
@click.option(
    "--spelling/--no-spelling",
    default=True,
    show_default=True,
    help="Correct misspelt words before classifying, as the agent does (model.spelling).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=ROWS_PER_RUN,
    show_default=True,
    help="Queries per classify call. 1 runs each alone, as the edge serves a lone query; "
    "larger is faster but not as served (the int8 graph's scores move with batch-mates).",
)
def eval_cmd(
    model_dir: Path,
    data: str,
    as_json: bool,
    threads: int | None,
    perturb: str,
    perturb_rate: float,
    seed: int,
    spelling: bool,
    batch_size: int,
) -> None:
    """Evaluate an intent bundle: in-scope accuracy, oos recall, latency."""
    model = IntentModel.load(model_dir, intra_op_threads=threads, spelling=spelling)
    examples = load_examples(data)
    report = evaluate(model, examples, batch_size=batch_size)
    if perturb == "none":
        if as_json:
            click.echo(msgspec.json.encode(report).decode())
            return
        _table(f"bundle {report.bundle_version} on {data}", {"value": report})
        return
    texts = perturb_typos([e.text for e in examples], perturb_rate, seed)
    changed = [Example(t, e.label) for t, e in zip(texts, examples, strict=True)]
    noisy = evaluate(model, changed, batch_size=batch_size, latency_samples=0)
    both = PerturbedReport(
        perturb=perturb,
        rate=perturb_rate,
        seed=seed,
        n_texts_changed=sum(t != e.text for t, e in zip(texts, examples, strict=True)),
        clean=report,
        perturbed=noisy,
        in_scope_drop=round(report.in_scope_accuracy - noisy.in_scope_accuracy, 4),
        oos_recall_change=round(noisy.oos_recall - report.oos_recall, 4),
    )
    if as_json:
        click.echo(msgspec.json.encode(both).decode())
        return
    title = f"bundle {report.bundle_version} on {data}, clean vs {perturb} ({perturb_rate:.0%})"
    _table(title, {"clean": report, perturb: noisy})


def _table(title: str, reports: dict[str, EvalReport]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    for name in reports:
        table.add_column(name, justify="right")
    rows = [msgspec.structs.asdict(r) for r in reports.values()]
    for key in rows[0]:
        values = [row[key] for row in rows]
        table.add_row(key, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    Console().print(table)
