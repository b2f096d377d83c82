"""Bring-your-own intents: training without `oos` rows, measured on CLINC150 test.

    python benchmarks/intent_byo.py no-oos [--reference BUNDLE] [--work DIR]
    python benchmarks/intent_byo.py site [--domains banking,travel] [--n-intents 10]

`no-oos`: CLINC150 train and val *without* their out-of-scope rows, built exactly like the
default bundle otherwise (same seed, epochs, augmentation) so the build borrows generic
negatives; compared on the test split with the same build *with* the oos rows: `--reference`
(e.g. the bundle `aivos models build` wrote with the same settings), or, without it, built in
this run, one build after the other. Both bundles' build seconds and the load average are
recorded next to the figures. Note: with all 150 intents covered, the generic pool is
CLINC150's own out-of-scope *train* rows, so this measures the pipeline without user oos data,
not the pool's reach; `site` measures that.

`site`: a branch that serves the first `--n-intents` intents of a CLINC150 domain, trained on
their train rows only (labels renamed `site_*`, so overlap with the generic pool has to be
found by centroid, not by name). The domain's other intents are kept out of the negatives
pool entirely; their test rows are requests the site does not serve but that look like its
own ("in-domain uncovered"): the share rejected as out of scope is the figure. Also reported:
in-scope accuracy on the covered intents' test rows and recall on CLINC150's oos test rows.

Writes benchmarks/results/intent_byo.json (merging the scenario run into what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from aivos.cloud.modelbuild.build import build_bundle
from aivos.edge.intent import IntentModel
from aivos.edge.intent.evaluate import EvalReport, evaluate, perturb_typos
from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.paths import clinc150_path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "intent_byo.json"
SITE_PREFIX = "site_"


def _write_jsonl(path: Path, rows: list[Example]) -> Path:
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in rows))
    return path


def _figures(report: EvalReport) -> dict[str, float | int | str | None]:
    return {
        "in_scope_accuracy": round(report.in_scope_accuracy, 4),
        "oos_recall": round(report.oos_recall, 4),
        "n_in_scope": report.n_in_scope,
        "n_oos": report.n_oos,
        "threshold": round(report.threshold, 4),
        "expected_oos_recall": report.expected_oos_recall,
        "expected_oos_recall_basis": report.expected_oos_recall_basis,
    }


def _clinc_eval(bundle: Path) -> dict[str, Any]:
    model = IntentModel.load(bundle)
    test = load_examples(f"{clinc150_path()}#test")
    clean = evaluate(model, test, latency_samples=0)
    noisy = [
        Example(t, e.label)
        for t, e in zip(perturb_typos([e.text for e in test]), test, strict=True)
    ]
    typos = evaluate(model, noisy, latency_samples=0)
    return {
        "bundle_version": model.version,
        "build_seconds": model.manifest.training.seconds,
        "training": model.manifest.training.train_source,
        "clean": _figures(clean),
        "typos": _figures(typos),
    }


def no_oos(reference: Path | None, work: Path, epochs: int, seed: int) -> dict[str, object]:
    data = clinc150_path()
    load_start = os.getloadavg()
    if reference is None:
        reference = work / "with_oos_bundle"
        if not reference.is_dir():  # a kept --work dir: evaluate again without rebuilding
            build_bundle(
                data,
                reference,
                f"{data}#val",
                epochs=epochs,
                seed=seed,
                console=Console(stderr=True),
            )
    train = [e for e in load_examples(data) if e.label != OOS_LABEL]
    val = [e for e in load_examples(f"{data}#val") if e.label != OOS_LABEL]
    bundle = work / "no_oos_bundle"
    if not bundle.is_dir():
        build_bundle(
            _write_jsonl(work / "train_no_oos.jsonl", train),
            bundle,
            _write_jsonl(work / "val_no_oos.jsonl", val),
            epochs=epochs,
            seed=seed,
            console=Console(stderr=True),
        )
    with_oos, without_oos = _clinc_eval(reference), _clinc_eval(bundle)
    with_, without = with_oos["clean"], without_oos["clean"]
    loss_points = round(100 * (with_["in_scope_accuracy"] - without["in_scope_accuracy"]), 2)
    out: dict[str, object] = {
        "with_oos_rows": with_oos,
        "without_oos_rows": without_oos,
        "in_scope_loss_points": loss_points,
        "targets_met": {
            "oos_recall_without_oos_rows_ge_0.70": without["oos_recall"] >= 0.70,
            "in_scope_loss_le_1_point": loss_points <= 1.0,
        },
    }
    out["load_average"] = {"start": load_start, "end": os.getloadavg()}
    return out


def site(domain: str, n_intents: int, work: Path, epochs: int, seed: int) -> dict[str, object]:
    data = clinc150_path()
    domains = json.loads((data.parent / "domains.json").read_text())
    covered, uncovered = domains[domain][:n_intents], domains[domain][n_intents:]

    def rename(rows: list[Example]) -> list[Example]:
        return [Example(e.text, SITE_PREFIX + e.label) for e in rows if e.label in covered]

    train = rename(load_examples(data))
    bundle = work / f"site_{domain}"
    manifest = build_bundle(
        _write_jsonl(work / f"site_{domain}.jsonl", train),
        bundle,
        epochs=epochs,
        seed=seed,
        exclude_negatives=uncovered,
        console=Console(stderr=True),
    )
    model = IntentModel.load(bundle)
    test = load_examples(f"{data}#test")
    in_scope = evaluate(model, rename(test), latency_samples=0)
    in_domain = [Example(e.text, OOS_LABEL) for e in test if e.label in uncovered]
    other_oos = [e for e in test if e.label == OOS_LABEL]
    return {
        "covered": covered,
        "uncovered_held_out_of_negatives": uncovered,
        "n_train": len(train),
        "training": manifest.training.train_source,
        "in_scope_accuracy": round(in_scope.in_scope_accuracy, 4),
        "in_domain_uncovered_recall": round(
            evaluate(model, in_domain, latency_samples=0).oos_recall, 4
        ),
        "n_in_domain_uncovered": len(in_domain),
        "clinc_oos_test_recall": round(evaluate(model, other_oos, latency_samples=0).oos_recall, 4),
        "expected_oos_recall": in_scope.expected_oos_recall,
        "expected_oos_recall_basis": in_scope.expected_oos_recall_basis,
        "threshold": round(model.threshold, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("scenario", choices=["no-oos", "site"])
    ap.add_argument(
        "--reference",
        type=Path,
        help="no-oos: the bundle built with oos rows (default: build it in this run)",
    )
    ap.add_argument("--domains", default="banking", help="site: comma-separated CLINC domains")
    ap.add_argument("--n-intents", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--work", type=Path, default=None, help="keep the bundles here")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.scenario == "no-oos":
            results["no_oos"] = no_oos(args.reference, work, args.epochs, args.seed)
        else:
            sites = results.setdefault("site", {})
            for domain in args.domains.split(","):
                sites[domain] = site(domain, args.n_intents, work, args.epochs, args.seed)
                print(json.dumps({domain: sites[domain]}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
