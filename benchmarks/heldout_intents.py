"""Few-shot intents on public intent sets never used for tuning: BANKING77 and HWU64.

    nice -n 5 python benchmarks/heldout_intents.py --k 10 --seeds 1 [--recipes blend,fewshot]

The data is not part of this repository. Fetch the two public repositories first (any git
clone works; the benchmark reads them with `git show`, nothing is copied into the tree):

- BANKING77 (Casanueva et al. 2020, CC BY 4.0): github.com/PolyAI-LDN/task-specific-datasets,
  `banking_data/train.csv` (10,003 rows) and `banking_data/test.csv` (3,080 rows), 77 intents.
- HWU64 (Liu et al. 2019, CC BY 4.0): github.com/xliuhw/NLU-Evaluation-Data, the authors'
  `CrossValidation/.../KFold_1` split: `trainset/*.csv` (9,960 rows) and
  `testset/csv/*.csv` (1,076 rows, the test set of the usual HWU64 benchmark size), 64
  intents named `scenario_intent`; the text is `answer_from_anno` (annotations removed).

For each set and seed, K rows per intent are sampled from its TRAIN split and built into a
bundle exactly as `aivos intents train --few-shot on` would (`fewshot.build_and_score`:
`build_bundle` with the CLI defaults, generic negatives borrowed from CLINC150, noisy
copies). The threshold is calibrated on 3 further TRAIN rows per intent (never trained on;
`label_accuracy` does not depend on it). Each int8 bundle is scored on the TEST split:
`label_accuracy` (top-1, the figure few-shot papers report), `in_scope_accuracy` at the
threshold, p50 latency on one ORT thread. Nothing here was tuned on these sets: the recipe
was chosen on CLINC150 `val`. Writes benchmarks/results/heldout_intents.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import random
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.shared.datasets import Example  # noqa: E402
from benchmarks.fewshot import (  # noqa: E402
    ROOT,
    _write_csv,
    build_and_score,
    load_average,
    summary,
)

MIRRORS = Path("/work/.mirror")
BANKING77_GIT = MIRRORS / "PolyAI-LDN+task-specific-datasets" / "repo"
HWU64_GIT = MIRRORS / "xliuhw+NLU-Evaluation-Data" / "repo"
HWU64_FOLD = (
    "CrossValidation/autoGeneFromRealAnno/autoGene_2018_03_22-13_01_25_169/CrossValidation/KFold_1"
)
VAL_ROWS = 3  # extra TRAIN rows per intent for the threshold only


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], check=True, capture_output=True, text=True
    ).stdout


def _show(git_dir: Path, path: str) -> str:
    return _git(git_dir, "show", f"HEAD:{path}")


def banking77(git_dir: Path, split: str) -> list[Example]:
    rows = csv.DictReader(io.StringIO(_show(git_dir, f"banking_data/{split}.csv")))
    return [Example(text=r["text"].strip(), label=r["category"]) for r in rows]


def hwu64(git_dir: Path, split: str) -> list[Example]:
    folder = f"{HWU64_FOLD}/{'trainset' if split == 'train' else 'testset/csv'}"
    out = []
    for path in _git(git_dir, "ls-tree", "--name-only", "HEAD", f"{folder}/").split():
        if not path.endswith(".csv"):
            continue
        for r in csv.DictReader(io.StringIO(_show(git_dir, path)), delimiter=";"):
            text = r["answer_from_anno"].strip()
            if text:
                out.append(Example(text=text, label=f"{r['scenario']}_{r['intent']}"))
    return out


def sample(rows: list[Example], k: int, extra: int, seed: int) -> tuple[list, list]:
    """K rows per intent for training and `extra` other rows for the threshold."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for e in rows:
        by_label[e.label].append(e)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        chosen = rng.sample(by_label[label], min(len(by_label[label]), k + extra))
        train.extend(chosen[:k])
        val.extend(chosen[k:])
    return train, val


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--k", type=int, default=10, help="rows per intent")
    ap.add_argument("--seeds", default="1", help="comma-separated sampling/training seeds")
    ap.add_argument("--recipes", default="blend,fewshot", help="see benchmarks/fewshot.py")
    ap.add_argument("--sets", default="banking77,hwu64")
    ap.add_argument("--banking77-git", type=Path, default=BANKING77_GIT)
    ap.add_argument("--hwu64-git", type=Path, default=HWU64_GIT)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "heldout_intents.json"
    )
    ap.add_argument(
        "--no-spelling", action="store_true", help="score without the edge's spelling correction"
    )
    args = ap.parse_args()
    loaders: dict[str, tuple[Callable[[Path, str], list[Example]], Path]] = {
        "banking77": (banking77, args.banking77_git),
        "hwu64": (hwu64, args.hwu64_git),
    }
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipes.split(",")
    result: dict = {
        "benchmark": "heldout_intents",
        "k": args.k,
        "threshold_rows_per_intent": VAL_ROWS,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "sets": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aivos-heldout-") as tmp:
        for name in args.sets.split(","):
            load, git_dir = loaders[name]
            train_rows, test = load(git_dir, "train"), load(git_dir, "test")
            runs: list[dict] = []
            result["sets"][name] = {
                "source": f"{git_dir} @ {_git(git_dir, 'rev-parse', 'HEAD').strip()[:12]}",
                "licence": "CC BY 4.0",
                "n_intents": len({e.label for e in train_rows}),
                "n_train_pool": len(train_rows),
                "n_test": len(test),
                "runs": runs,
            }
            for seed in seeds:
                work = Path(tmp) / f"{name}-{seed}"
                work.mkdir()
                train, val = sample(train_rows, args.k, VAL_ROWS, seed)
                train_csv = _write_csv(train, work / "train.csv")
                val_csv = _write_csv(val, work / "val.csv")
                for recipe in recipes:
                    runs.append(
                        build_and_score(
                            train_csv, val_csv, recipe, seed, work, test, not args.no_spelling
                        )
                    )
                    # written after every build: a long run stopped early keeps what it has
                    result["sets"][name]["summary"] = summary(runs)
                    result["load_average_at_end"] = load_average()
                    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["summary"] for k, v in result["sets"].items()}, indent=2))


if __name__ == "__main__":
    main()
