"""Out-of-scope scores side by side: max softmax probability (MSP, the baseline) against
distance scores on the bundle's sentence embedding (shared/ood.py), on CLINC150.

    python benchmarks/ood_score.py --bundle NAME=DIR=TRAIN_SPEC=VAL_SPEC [--bundle ...] \
        [--cache /tmp/ood] [--out benchmarks/results/ood_score.json] [--no-end-to-end]

For each bundle: the ONNX graph runs once over CLINC150 train/val/test (cached as .npy under
`--cache`); class statistics are fitted on the bundle's own training rows (TRAIN_SPEC, in-scope
rows only); every score's threshold is chosen on CLINC150 validation with the build's rule
(the highest threshold costing at most the build's in-scope budget: 0.5 point with the user's
own oos rows, 1 point without, cloud/modelbuild/calibrate.py), then applied to test once.
Reported per score: val oos recall at that threshold (what the choice was made on), test
in-scope accuracy / oos recall at it, and the best test oos recall at test in-scope >= 96.5 %
(the curve's figure the issue quotes). Classification is of the text as written (no spelling
correction: the score, not the speller, is what differs).

End to end, per bundle: a copy carrying the statistics as the build now writes them (the
build's own `ood_calibration` on TRAIN_SPEC and VAL_SPEC, the rows the bundle was built
from), evaluated on CLINC150 test by `aivos intents eval`'s `evaluate` through the real
runtime (the served score and MSP alone from the same run), and the per-query cost of the
score beside the model call, single-threaded, one query per call and 16 per call.

`test_best_in_scope_at_msp_oos_recall` reads the test curve the other way: the in-scope
accuracy a score keeps while catching as much oos as MSP caught at its own val threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import msgspec
import numpy as np

from aivos.cloud.modelbuild.calibrate import (
    USER_IN_SCOPE_BUDGET,
    choose_threshold_on,
    ood_calibration,
    predict_probs,
)
from aivos.edge.intent.evaluate import evaluate
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.bundle import load_bundle_manifest, sha256_file, staged_bundle, write_manifest
from aivos.shared.datasets import OOS_LABEL, load_examples
from aivos.shared.ood import OOD_FILE, SCORE, OodScorer, fit

DATA = Path(__file__).resolve().parents[1] / "shared/data/clinc150/data_full.json"
RESULTS = Path(__file__).resolve().parent / "results" / "ood_score.json"
TARGET_IN_SCOPE = 0.965


def _cached(cache: Path, name: str, bundle: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    probs_file, emb_file = cache / f"{name}_{split}_probs.npy", cache / f"{name}_{split}_emb.npy"
    if not probs_file.is_file():
        texts = [e.text for e in load_examples(f"{DATA}#{split}")]
        probs, emb = predict_probs(bundle / "model.onnx", bundle / "tokenizer.json", texts)
        np.save(probs_file, probs)
        np.save(emb_file, emb)
    return np.load(probs_file), np.load(emb_file)


def _rates(
    score: np.ndarray, pred: np.ndarray, truth: np.ndarray, t: float, oos: int
) -> tuple[float, float]:
    accepted = (score >= t) & (pred != oos)
    ins = truth != oos
    return float(((pred == truth) & accepted)[ins].mean()), float((~accepted)[~ins].mean())


def _best_recall_at(
    score: np.ndarray, pred: np.ndarray, truth: np.ndarray, oos: int, floor: float
) -> float:
    """The highest oos recall of any threshold keeping in-scope accuracy >= floor."""
    ins = truth != oos
    ok = (pred == truth) & (pred != oos)
    order = np.argsort(score)  # rejecting the lowest scores first
    # in-scope accuracy and oos recall when the k lowest-scored rows are rejected
    lost = np.concatenate([[0], np.cumsum(ok[order] & ins[order])])
    caught = np.concatenate([[0], np.cumsum(~ins[order] & (pred[order] != oos))])
    acc = (ok[ins].sum() - lost) / ins.sum()
    rec = ((pred[~ins] == oos).sum() + caught) / (~ins).sum()
    # only cut between distinct scores
    distinct = np.concatenate([[True], np.diff(score[order]) > 0, [True]])
    good = (acc >= floor) & distinct
    return float(rec[good].max()) if good.any() else 0.0


def _in_scope_at_recall(
    score: np.ndarray, pred: np.ndarray, truth: np.ndarray, oos: int, recall: float
) -> float:
    """The highest in-scope accuracy of any threshold catching at least `recall` of oos."""
    ins = truth != oos
    ok = (pred == truth) & (pred != oos)
    order = np.argsort(score)
    lost = np.concatenate([[0], np.cumsum(ok[order] & ins[order])])
    caught = np.concatenate([[0], np.cumsum(~ins[order] & (pred[order] != oos))])
    acc = (ok[ins].sum() - lost) / ins.sum()
    rec = ((pred[~ins] == oos).sum() + caught) / (~ins).sum()
    distinct = np.concatenate([[True], np.diff(score[order]) > 0, [True]])
    good = (rec >= recall - 1e-9) & distinct
    return float(acc[good].max()) if good.any() else 0.0


def _scores(
    scorer: OodScorer, probs: np.ndarray, emb: np.ndarray, train_emb: np.ndarray
) -> dict[str, np.ndarray]:
    """Every candidate score, higher = more in scope; the shipped one is `SCORE`."""
    msp = probs.max(1)
    d = scorer.distance(emb)
    typ = scorer.typicality(d)
    centroids = scorer.stats.means / np.linalg.norm(scorer.stats.means, axis=1, keepdims=True)
    sims = emb @ train_emb.T
    return {
        "msp": msp,
        "mahalanobis": -d,
        "max_cosine_centroid": (emb @ centroids.T).max(1),
        "knn5_cosine": np.sort(sims, axis=1)[:, -5:].mean(1),
        "msp_x_typicality": msp * typ,
        "msp_x_cosine_centroid": msp * (emb @ centroids.T).max(1),
        SCORE: scorer.score(msp, emb),
    }


def evaluate_bundle(name: str, bundle: Path, train_spec: str, cache: Path) -> dict[str, object]:
    """All candidate scores on cached outputs: threshold on val, test once."""
    manifest = load_bundle_manifest(bundle)
    index = {label: i for i, label in enumerate(manifest.labels)}
    oos = index[OOS_LABEL]
    train_text = {e.text for e in load_examples(train_spec)}
    clinc_train = load_examples(f"{DATA}#train")
    _, tr_emb = _cached(cache, name, bundle, "train")
    keep = np.array([e.text in train_text and e.label != OOS_LABEL for e in clinc_train])
    tr_y = np.array([index[e.label] for e in clinc_train])[keep]
    splits = {}
    for split in ("val", "test"):
        probs, emb = _cached(cache, name, bundle, split)
        truth = np.array([index[e.label] for e in load_examples(f"{DATA}#{split}")])
        splits[split] = (probs, emb, truth)
    stats = fit(tr_emb[keep], tr_y, np.unique(tr_y))
    v_probs, v_emb, v_truth = splits["val"]
    stats = stats.with_quantiles(OodScorer(stats).distance(v_emb[v_truth != oos]))
    scorer = OodScorer(stats)
    budget = manifest.metrics.get("calibration_in_scope_budget", USER_IN_SCOPE_BUDGET)
    per_split = {s: _scores(scorer, p, e, tr_emb[keep]) for s, (p, e, _) in splits.items()}
    label_acc = {s: float((p.argmax(1) == t)[t != oos].mean()) for s, (p, _, t) in splits.items()}
    results: dict[str, dict[str, float]] = {}
    for score_name, v_score in per_split["val"].items():
        v_pred = v_probs.argmax(1)
        t = choose_threshold_on(v_score, v_pred, v_truth, oos, budget)
        v_in, v_rec = _rates(v_score, v_pred, v_truth, t, oos)
        t_probs, _, t_truth = splits["test"]
        t_score, t_pred = per_split["test"][score_name], t_probs.argmax(1)
        t_in, t_rec = _rates(t_score, t_pred, t_truth, t, oos)
        results[score_name] = {
            "val_threshold": round(float(t), 5),
            "val_in_scope_accuracy": round(v_in, 4),
            "val_oos_recall": round(v_rec, 4),
            "test_in_scope_accuracy": round(t_in, 4),
            "test_oos_recall": round(t_rec, 4),
            "test_best_oos_recall_at_in_scope_96.5": round(
                _best_recall_at(t_score, t_pred, t_truth, oos, TARGET_IN_SCOPE), 4
            ),
        }
        # the curve's other reading: in-scope kept while catching what MSP caught on test
        results[score_name]["test_best_in_scope_at_msp_oos_recall"] = round(
            _in_scope_at_recall(t_score, t_pred, t_truth, oos, results["msp"]["test_oos_recall"]),
            4,
        )
    return {
        "bundle": str(bundle),
        "bundle_version": manifest.bundle_version,
        "train_rows_for_statistics": int(keep.sum()),
        "calibration_in_scope_budget": budget,
        "val_label_accuracy": round(label_acc["val"], 4),
        "test_label_accuracy": round(label_acc["test"], 4),
        "scores": results,
    }


def retrofit(bundle: Path, train_spec: str, val_spec: str, out: Path) -> Path:
    """A copy of `bundle` carrying the out-of-scope statistics and threshold, computed by the
    build's own `ood_calibration` on the build's train / val rows: a bundle as the build now
    writes it, without retraining."""
    manifest = load_bundle_manifest(bundle)
    val = load_examples(val_spec)
    budget = manifest.metrics.get("calibration_in_scope_budget", USER_IN_SCOPE_BUDGET)
    with staged_bundle(out) as staging:
        for name in manifest.files:
            shutil.copy2(bundle / name, staging / name)
        probs, emb = predict_probs(
            staging / "model.onnx", staging / "tokenizer.json", [e.text for e in val]
        )
        _, ood = ood_calibration(
            staging,
            staging / "model.onnx",
            staging / "tokenizer.json",
            load_examples(train_spec),
            manifest.labels,
            probs,
            emb,
            [e.label for e in val],
            budget,
        )
        files = {**manifest.files, OOD_FILE: sha256_file(staging / OOD_FILE)}
        write_manifest(
            staging,
            msgspec.structs.replace(
                manifest, files=files, ood=ood, bundle_version=manifest.bundle_version + "-ood"
            ),
        )
    return out


def end_to_end(bundle: Path) -> dict[str, object]:
    """`aivos intents eval` on CLINC150 test through the real runtime (one intra-op thread):
    the bundle's served score beside MSP alone, from the same run."""
    model = IntentModel.load(bundle, intra_op_threads=1, spelling=False)
    report = evaluate(model, load_examples(f"{DATA}#test"))
    return {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in msgspec.structs.asdict(report).items()
    }


def per_query_cost(bundle: Path, n: int = 320, batch: int = 16) -> dict[str, float]:
    """The model call vs the added score (distance + typicality), side by side on the same
    queries, one thread: one query per call (the score's matrices come back from memory
    after each model call), and `batch` queries per call (one score call per batch, as
    `classify_batch` makes it)."""
    model = IntentModel.load(bundle, intra_op_threads=1, spelling=False)
    assert model.ood is not None
    texts = [e.text for e in load_examples(f"{DATA}#test")][:n]
    out: dict[str, float] = {"queries": n, "batch": batch}
    for size in (1, batch):
        model_us, extra_us = [], []
        for start in range(0, n, size):
            t0 = time.perf_counter()
            probs, emb, _, _ = model._run(texts[start : start + size])
            t1 = time.perf_counter()
            model.ood.score(probs.max(1), emb)
            t2 = time.perf_counter()
            model_us.append((t1 - t0) * 1e6 / size)
            extra_us.append((t2 - t1) * 1e6 / size)
        key = "single" if size == 1 else f"batch{size}"
        out[f"{key}_model_us_per_query_p50"] = round(float(np.median(model_us)), 1)
        out[f"{key}_score_us_per_query_p50"] = round(float(np.median(extra_us)), 1)
        out[f"{key}_score_us_per_query_p99"] = round(float(np.percentile(extra_us, 99)), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", action="append", required=True, help="NAME=DIR=TRAIN_SPEC=VAL_SPEC"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ood"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-end-to-end", action="store_true", help="numpy comparison only")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"load_average_start": list(os.getloadavg())}
    bundles: dict[str, object] = {}
    for spec in args.bundle:
        name, directory, train_spec, val_spec = spec.split("=", 3)
        result = evaluate_bundle(name, Path(directory), train_spec, args.cache)
        if not args.no_end_to_end:
            fitted = retrofit(Path(directory), train_spec, val_spec, args.cache / f"{name}-ood")
            result["end_to_end_test"] = end_to_end(fitted)
            result["per_query_cost"] = per_query_cost(fitted)
        bundles[name] = result
        print(json.dumps({name: result}, indent=1), flush=True)
    report["bundles"] = bundles
    report["load_average_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
