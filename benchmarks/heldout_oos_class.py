"""What the `oos` class costs a 10-shot site bundle on the held-out public intent sets.

    nice -n 5 python benchmarks/heldout_oos_class.py --sets hwu64,banking77 --seed 1

A bundle built from in-scope rows only has an `oos` class (the generic negatives, about
half of a 10-shot build's training rows). `heldout_intents.py`'s top-1 counts a test row
predicted `oos` as wrong; the published few-shot models have no such class. For one seed
this builds the same bundle as `heldout_intents.py --recipes fewshot` (same sample, same
threshold rows, `aivos intents train --few-shot on` defaults, its artifacts kept) and reports,
on the TEST split, int8 as served without spelling correction: top-1 with the `oos` class,
the rows predicted `oos`, and top-1 over the set's own labels (the argmax of the bundle's
folded head on the served embedding with the `oos` row masked: the same logits the graph's
softmax reads). Data: see `heldout_intents.py` (fetched clones, read with `git show`).
Writes benchmarks/results/heldout_oos_class.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.modelbuild.build import build_bundle  # noqa: E402
from aivos.cloud.modelbuild.cli import DEFAULT_EPOCHS, DEFAULT_FROZEN_LAYERS, DEFAULT_LAYERS
from aivos.edge.intent import IntentModel
from aivos.shared.datasets import OOS_LABEL, Example
from benchmarks.fewshot import _write_csv, load_average
from benchmarks.heldout_intents import (
    BANKING77_GIT,
    HWU64_GIT,
    VAL_ROWS,
    banking77,
    hwu64,
    sample,
)

ROOT = Path(__file__).resolve().parent.parent
LOADERS: dict[str, tuple[Callable[[Path, str], list[Example]], Path]] = {
    "banking77": (banking77, BANKING77_GIT),
    "hwu64": (hwu64, HWU64_GIT),
}


def score(name: str, seed: int, k: int, work: Path) -> dict[str, object]:
    load, git_dir = LOADERS[name]
    train, val = sample(load(git_dir, "train"), k, VAL_ROWS, seed)
    test = load(git_dir, "test")
    bundle, artifacts = work / "bundle", work / "artifacts"
    build_bundle(
        _write_csv(train, work / "train.csv"),
        bundle,
        _write_csv(val, work / "val.csv"),
        epochs=DEFAULT_EPOCHS,
        seed=seed,
        layers=DEFAULT_LAYERS,
        frozen_layers=DEFAULT_FROZEN_LAYERS,
        few_shot=True,
        keep_artifacts=artifacts,
    )
    model = IntentModel.load(bundle, intra_op_threads=1, spelling=False)
    labels = list(model.manifest.labels)
    head = np.load(artifacts / "head.npz")
    preds = model.classify_batch([e.text for e in test])
    logits = np.stack([p.embedding for p in preds]) @ head["weight"].T + head["bias"]
    logits[:, labels.index(OOS_LABEL)] = -np.inf
    own = [labels[i] for i in logits.argmax(1)]
    n = len(test)
    with_oos = sum(p.intent == e.label for p, e in zip(preds, test, strict=True))
    over_own = sum(a == e.label for a, e in zip(own, test, strict=True))
    return {
        "set": name,
        "seed": seed,
        "k": k,
        "n_test": n,
        "top1_with_oos_class": round(with_oos / n, 4),
        "rows_predicted_oos": sum(p.intent == OOS_LABEL for p in preds),
        "top1_over_set_labels": round(over_own / n, 4),
        "training": model.manifest.training.train_source.replace(f"{work}/", ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sets", default="hwu64,banking77")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--k", type=int, default=10, help="rows per intent")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "heldout_oos_class.json"
    )
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="aivos-oos-class-") as tmp:
        for name in args.sets.split(","):
            work = Path(tmp) / name
            work.mkdir()
            runs.append(score(name, args.seed, args.k, work))
            print(json.dumps(runs[-1]), flush=True)
    result = {"benchmark": "heldout_oos_class", "runs": runs, "load_average_at_end": load_average()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
