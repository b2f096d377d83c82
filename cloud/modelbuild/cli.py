"""`aivos models build` and `aivos intents train`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aivos.cloud.modelbuild.augment import AUGMENT_RATIO
from aivos.shared.paths import clinc150_path, default_bundle_dir

__all__ = ["build_cmd", "train_cmd"]

# All 6 layers by default. `--layers 4` classifies CLINC150 as well at 1.4x the speed, but
# its embeddings retrieve much worse (docs/models.md, "Encoder depth"), and the same
# embedding serves the knowledge index.
DEFAULT_LAYERS = 6
DEFAULT_FROZEN_LAYERS = 2
DEFAULT_EPOCHS = 2


def _training_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--epochs",
            type=int,
            default=DEFAULT_EPOCHS,
            show_default=True,
            help="Fine-tuning epochs (0 = frozen encoder, head only).",
        ),
        click.option(
            "--layers",
            type=click.IntRange(1, 6),
            default=DEFAULT_LAYERS,
            show_default=True,
            help="Transformer layers kept from the 6-layer base (fewer: faster, worse retrieval).",
        ),
        click.option(
            "--frozen-layers",
            type=click.IntRange(0, 6),
            default=DEFAULT_FROZEN_LAYERS,
            show_default=True,
            help="Bottom layers left untouched by fine-tuning.",
        ),
        click.option(
            "--distill-weight",
            type=click.FloatRange(min=0),
            default=0.0,
            show_default=True,
            help="Keep the embedding close to the full-depth base model's while fine-tuning, "
            "for retrieval with --layers below 6 (weight of a 1 - cosine loss; 0 = off).",
        ),
        click.option(
            "--augment-ratio",
            type=click.FloatRange(0, 1),
            default=AUGMENT_RATIO,
            show_default=True,
            help="Share of training rows that also get a noisy copy (typos, casing, "
            "punctuation, contractions); 0 = off.",
        ),
        click.option("--seed", type=int, default=13, show_default=True),
        click.option(
            "--keep-artifacts",
            type=click.Path(path_type=Path),
            default=None,
            help="Keep the fine-tuned encoder, head and fp32 graph here (benchmarks use them).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: the default bundle location).",
)
@click.option(
    "--from-fleet",
    "from_fleet",
    default=None,
    metavar="DB_URL_OR_PATH",
    help="Add the hard examples operators labelled on the console's review page (the cloud "
    "store: a postgresql:// URL, cloud.db or its directory).",
)
@click.option(
    "--from-site",
    "from_site",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Add the hard examples a site's operators labelled on site (the JSONL that "
    "`aivos candidates export` writes).",
)
@click.option(
    "--data",
    default=None,
    help="With --from-fleet or --from-site: the base training data (default: CLINC150).",
)
@_training_options
def build_cmd(
    out: Path | None,
    from_fleet: str | None,
    from_site: Path | None,
    data: str | None,
    **training: Any,
) -> None:
    """Build the default bundle: CLINC150 train+oos_train, threshold calibrated on val+oos_val."""
    if from_fleet is None and from_site is None:
        if data is not None:
            raise click.UsageError("--data goes with --from-fleet (or use `aivos intents train`)")
        base = clinc150_path()
        _build(base, out or default_bundle_dir(), f"{base}#val", **training)
        return
    if from_fleet is not None and from_site is not None:
        raise click.UsageError("--from-fleet and --from-site do not go together")
    from aivos.cloud.modelbuild.fromfleet import fleet_training_data, site_training_data

    target = out or default_bundle_dir()
    if from_site is not None:
        source = "site"
        fleet = site_training_data(from_site, data or clinc150_path(), target)
    else:
        assert from_fleet is not None
        source = "fleet"
        fleet = fleet_training_data(from_fleet, data or clinc150_path(), target)
    click.echo(
        f"from {source}: {fleet.n_reviewed} reviewed example(s) {fleet.per_label} + "
        f"{fleet.n_base} base rows -> {fleet.train}"
        + (f"; new intents: {', '.join(fleet.new_labels)}" if fleet.new_labels else ""),
        err=True,
    )
    _build(fleet.train, target, fleet.val, **training)


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
@click.option(
    "--generic-negatives/--no-generic-negatives",
    default=True,
    show_default=True,
    help="Without 'oos' rows in --data, train against generic negatives shipped with aivos "
    "(CLINC150 out-of-scope rows and intents your labels do not cover).",
)
@click.option(
    "--few-shot",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Few-shot recipe (the head blended with the class centroids after fine-tuning); "
    "auto = on at 20 or fewer rows per intent when the encoder is fine-tuned.",
)
@_training_options
def train_cmd(data: str, out: Path, val: str | None, few_shot: str, **training: Any) -> None:
    """Train an intent bundle on your own labelled data."""
    _build(data, out, val, few_shot={"auto": None, "on": True, "off": False}[few_shot], **training)


def _build(
    data: str | Path,
    out: Path,
    val: str | None,
    *,
    epochs: int,
    layers: int,
    frozen_layers: int,
    distill_weight: float,
    seed: int,
    keep_artifacts: Path | None,
    augment_ratio: float,
    generic_negatives: bool = True,
    few_shot: bool | None = None,
) -> None:
    from aivos.cloud.modelbuild.build import build_bundle

    build_bundle(
        data,
        out,
        val,
        epochs=epochs,
        head_only_epochs=0 if epochs else 20,
        seed=seed,
        keep_artifacts=keep_artifacts,
        layers=layers,
        frozen_layers=frozen_layers,
        distill_weight=distill_weight,
        augment_ratio=augment_ratio,
        generic_negatives=generic_negatives,
        few_shot=few_shot,
    )
