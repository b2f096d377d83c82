"""`aivos models build` and `aivos intents train`."""

from __future__ import annotations

from pathlib import Path

import click

from shared.paths import clinc150_path, default_bundle_dir

__all__ = ["build_cmd", "train_cmd"]


@click.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: the default bundle location).",
)
@click.option(
    "--epochs",
    type=int,
    default=2,
    show_default=True,
    help="Fine-tuning epochs (0 = frozen encoder, head only).",
)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option(
    "--keep-artifacts",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the fine-tuned encoder, head and fp32 graph here (benchmarks use them).",
)
def build_cmd(out: Path | None, epochs: int, seed: int, keep_artifacts: Path | None) -> None:
    """Build the default bundle: CLINC150 train+oos_train, threshold calibrated on val+oos_val."""
    from cloud.modelbuild.build import build_bundle

    data = clinc150_path()
    build_bundle(
        data,
        out or default_bundle_dir(),
        f"{data}#val",
        epochs=epochs,
        head_only_epochs=0 if epochs else 20,
        seed=seed,
        keep_artifacts=keep_artifacts,
    )


@click.command("train")
@click.option(
    "--data",
    required=True,
    help="Training data: CSV, JSONL or CLINC150 JSON (label 'oos' = out of scope).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Bundle directory to write (atomically).",
)
@click.option(
    "--val",
    default=None,
    help="Validation data for the threshold (default: stratified 20% of --data).",
)
@click.option("--epochs", type=int, default=2, show_default=True)
@click.option("--seed", type=int, default=13, show_default=True)
@click.option("--keep-artifacts", type=click.Path(path_type=Path), default=None)
def train_cmd(
    data: str, out: Path, val: str | None, epochs: int, seed: int, keep_artifacts: Path | None
) -> None:
    """Train an intent bundle on your own labelled data."""
    from cloud.modelbuild.build import build_bundle

    build_bundle(
        data,
        out,
        val,
        epochs=epochs,
        head_only_epochs=0 if epochs else 20,
        seed=seed,
        keep_artifacts=keep_artifacts,
    )
