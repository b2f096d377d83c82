"""Few-shot intents: K rows per CLINC150 intent, default recipe vs the few-shot recipe.

    nice -n 5 python benchmarks/fewshot.py --k 10 --seeds 1 [--recipes blend,fewshot]

For each seed, K rows per in-scope intent are sampled from CLINC150 `train` and written
to a CSV, and one bundle per recipe is built from it by `build_bundle` with the defaults
of `aivos intents train` (generic negatives, noisy copies), the recipe forced on or off.
Recipes: `default` (`--few-shot off`), `fewshot` (`--few-shot on`, as shipped) and
`blend` (the few-shot recipe without its contrastive stage: the previous recipe).
The threshold is calibrated on CLINC150 `val` (+ `oos_val`), as `--val` would;
`--val holdout` leaves it out so the build holds out 20% of the K rows instead. Each int8
bundle is scored on CLINC150 `test` (4,500 in-scope, 1,000 oos) by the evaluation behind
`aivos intents eval`: `label_accuracy` (top-1 label, no threshold: the number few-shot
papers report), `in_scope_accuracy` (right label and above the threshold), `oos_recall`,
and single-query latency on one ORT thread. The bundle classifies as the agent does, with
the edge's spelling correction; `--no-spelling` scores the classifier alone.
Writes benchmarks/results/fewshot.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from aivos.cloud.modelbuild import fewshot
from aivos.cloud.modelbuild.build import build_bundle
from aivos.cloud.modelbuild.cli import DEFAULT_EPOCHS, DEFAULT_FROZEN_LAYERS, DEFAULT_LAYERS
from aivos.edge.intent import IntentModel
from aivos.edge.intent.evaluate import evaluate
from aivos.shared.datasets import OOS_LABEL, Example, clinc_split, load_examples
from aivos.shared.paths import clinc150_path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"default": False, "blend": True, "fewshot": True}


def sample_k_shot(k: int, seed: int) -> list[Example]:
    """K rows of every in-scope CLINC150 intent from `train`, chosen by `seed`."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for e in load_examples(clinc150_path()):
        if e.label != OOS_LABEL:
            by_label[e.label].append(e)
    rng = random.Random(seed)
    return [e for label in sorted(by_label) for e in rng.sample(by_label[label], k)]


def _write_csv(rows: list[Example], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([e.text, e.label] for e in rows)
    return path


@contextmanager
def recipe_switch(recipe: str) -> Iterator[None]:
    """`blend` is the few-shot recipe with its contrastive stage switched off."""
    saved = fewshot.CONTRASTIVE_STEPS
    if recipe == "blend":
        fewshot.CONTRASTIVE_STEPS = 0
    try:
        yield
    finally:
        fewshot.CONTRASTIVE_STEPS = saved


def build_and_score(
    train_csv: Path,
    val: str | Path | None,
    recipe: str,
    seed: int,
    work: Path,
    test: Sequence[Example],
    spelling: bool = True,
) -> dict:
    """Build one bundle as `aivos intents train` would (the recipe forced) and score it
    on `test` with the evaluation behind `aivos intents eval` (`spelling`: with the edge's
    spelling correction, as the agent classifies; off = the classifier alone)."""
    out = work / f"bundle-{recipe}-{seed}"
    started = time.monotonic()
    with recipe_switch(recipe):
        manifest = build_bundle(
            train_csv,
            out,
            val,
            epochs=DEFAULT_EPOCHS,
            seed=seed,
            layers=DEFAULT_LAYERS,
            frozen_layers=DEFAULT_FROZEN_LAYERS,
            few_shot=RECIPES[recipe],
        )
    build_s = time.monotonic() - started
    model = IntentModel.load(out, intra_op_threads=1, spelling=spelling)
    report = evaluate(model, test)
    row = {
        "recipe": recipe,
        "seed": seed,
        "build_seconds": round(build_s, 1),
        "epochs": manifest.training.epochs,
        "n_train": manifest.training.n_train,
        "model_bytes": (out / "model.onnx").stat().st_size,
        "spelling_correction": spelling,
        **{k: v for k, v in msgspec.structs.asdict(report).items() if not isinstance(v, str)},
    }
    print(json.dumps(row), flush=True)
    return row


def run_one(
    train_csv: Path, val: str | None, recipe: str, seed: int, work: Path, spelling: bool = True
) -> dict:
    test = load_examples(clinc_split(clinc150_path(), "test"))
    return build_and_score(train_csv, val, recipe, seed, work, test, spelling)


def load_average() -> list[float]:
    """The 1/5/15-minute load average when the run ended: absolute times depend on it."""
    return [round(x, 2) for x in os.getloadavg()]


def summary(rows: list[dict]) -> dict:
    keys = ("label_accuracy", "in_scope_accuracy", "oos_recall", "latency_ms_p50", "build_seconds")
    out: dict[str, dict] = {}
    for recipe in sorted({r["recipe"] for r in rows}):
        mine = [r for r in rows if r["recipe"] == recipe]
        out[recipe] = {k: round(statistics.mean(r[k] for r in mine), 4) for k in keys}
        out[recipe]["n_seeds"] = len(mine)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", type=int, default=10, help="rows per intent")
    ap.add_argument("--seeds", default="1", help="comma-separated sampling/training seeds")
    ap.add_argument("--recipes", default="blend,fewshot")
    ap.add_argument("--val", choices=["clinc", "holdout"], default="clinc")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fewshot.json")
    ap.add_argument("--work", type=Path, default=None, help="keep the bundles here")
    ap.add_argument("--merge", action="store_true", help="keep --out's runs of other recipes/seeds")
    ap.add_argument(
        "--no-spelling", action="store_true", help="score without the edge's spelling correction"
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipes.split(",")
    val = clinc_split(clinc150_path(), "val") if args.val == "clinc" else None

    rows = []
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        if (old["k"], old["val"]) == (args.k, args.val):
            rows = [
                r for r in old["runs"] if (r["recipe"] not in recipes or r["seed"] not in seeds)
            ]
    with tempfile.TemporaryDirectory(prefix="aivos-fewshot-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            train_csv = _write_csv(sample_k_shot(args.k, seed), work / f"train-{seed}.csv")
            rows.extend(
                run_one(train_csv, val, recipe, seed, work, not args.no_spelling)
                for recipe in recipes
            )
    rows.sort(key=lambda r: (r["seed"], r["recipe"]))
    result = {
        "benchmark": "fewshot",
        "k": args.k,
        "val": args.val,
        "test": "CLINC150 test (4,500 in-scope + 1,000 oos)",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average_at_end": load_average(),
        "summary": summary(rows),
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
