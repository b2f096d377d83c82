"""Intent quality: fp32 vs int8 on CLINC150 test, the in-scope / oos trade-off curve, and
the int8 bundle on the typo-perturbed test split.

    python benchmarks/intent_quality.py --bundle DIR --artifacts DIR [--baseline DIR
        [--baseline-artifacts DIR]] [--split val] [--no-spelling]

Uses the bundle's own threshold (calibrated on val) for the headline numbers; the curve
sweeps the threshold over the test split only to show the trade-off, and
`best_oos_recall_at_target` reads it at the issue's target: the highest test oos recall of
any threshold keeping in-scope accuracy >= 96.5 % (every distinct score is a candidate cut,
not only the plotted grid). The curve is of the score the bundle serves (the out-of-scope
score of shared/ood.py when the bundle carries one, else MSP); for a bundle with an ood score
the same figures for MSP alone (the manifest's MSP threshold) sit under `msp`, and
`label_accuracy` is top-1 over the in-scope rows regardless of any threshold. The typo figures use
the evaluation's own perturbation (`aivos intents eval --perturb typos`: 30% of the words of
4+ letters, seed 13), not the training augmentation's. `--baseline` evaluates a second int8
bundle the same way in the same run (a build with `--augment-ratio 0`: the augmentation's
effect side by side) and records the difference. Also recorded: bundle versions, their
build seconds and the load average while this ran. Queries go through the edge's spelling
correction as the agent classifies them (`IntentModel.load` default); `--no-spelling` scores
the classifier alone, as written. Writes docs/img/intent_tradeoff.png and
benchmarks/results/intent_quality.json.

`--split val` runs all of it on CLINC150 val instead: what recipe changes are chosen on (the
test split is for the chosen one, once). With `--baseline-artifacts` (the baseline's
`--keep-artifacts`) the two bundles' top-1 labels on the in-scope rows are also compared row
by row (`paired_vs_baseline`): rows only the bundle gets right, rows only the baseline gets
right, and the exact McNemar p of that split, for the fp32 twins (whose labels do not depend
on how queries are batched) and for the int8 graphs (which quantise activations per batch, so
their top-1 moves 0.1-0.3 points with batch composition alone).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from math import comb
from pathlib import Path

import numpy as np
from _intent_common import fp32_twin  # run as a script: benchmarks/ is on sys.path

from aivos.edge.intent import IntentModel
from aivos.edge.intent.evaluate import perturb_typos
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path

ROOT = Path(__file__).resolve().parent.parent


TARGET_IN_SCOPE = 0.965  # issue 16: in-scope accuracy >= 96.5 % at oos recall >= 65 %
TARGET_OOS_RECALL = 0.65


def _probs(model: IntentModel, texts: list[str]) -> np.ndarray:
    """Per text: [served score, predicted intent, MSP] (MSP = the served score without an
    ood score in the bundle)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    confs = np.zeros(len(texts))
    msps = np.zeros(len(texts))
    preds = np.empty(len(texts), dtype=object)
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        for i, p in zip(idx, model.classify_batch([texts[i] for i in idx]), strict=True):
            confs[i], preds[i] = p.confidence, p.intent
            msps[i] = p.confidence if p.msp is None else p.msp
    return np.stack([confs, preds, msps], 1)


def best_oos_recall_at(
    score: np.ndarray, pred: np.ndarray, truth: np.ndarray, oos: str, floor: float
) -> tuple[float, float | None]:
    """(highest oos recall, its threshold) over every threshold keeping in-scope accuracy
    >= `floor`; (0.0, None) when none does. A row is accepted when its score >= threshold
    and its prediction is not `oos`, as `_scores` counts."""
    ins = truth != oos
    ok = (pred == truth) & (pred != oos)
    order = np.argsort(score, kind="stable")  # rejecting the lowest scores first
    s = score[order]
    # in-scope accuracy and oos recall when the k lowest-scored rows are rejected
    lost = np.concatenate([[0], np.cumsum(ok[order] & ins[order])])
    caught = np.concatenate([[0], np.cumsum(~ins[order] & (pred[order] != oos))])
    acc = (ok[ins].sum() - lost) / ins.sum()
    rec = ((pred[~ins] == oos).sum() + caught) / (~ins).sum()
    # a threshold can only cut between distinct scores: k rows rejected = threshold s[k]
    cut = np.concatenate([[True], np.diff(s) > 0, [True]])
    good = (acc >= floor) & cut
    if not good.any():
        return 0.0, None
    k = int(np.flatnonzero(good)[np.argmax(rec[good])])
    threshold = float(s[k]) if k < len(s) else float(np.nextafter(s[-1], np.inf))
    return float(rec[k]), threshold


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p for `b` rows won and `c` lost (binomial, p = 1/2)."""
    n = b + c
    if not n:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired(right: np.ndarray, base_right: np.ndarray) -> dict[str, float | int]:
    """Row-by-row comparison of two classifiers' correctness on the same rows."""
    won = int((right & ~base_right).sum())
    lost = int((~right & base_right).sum())
    return {
        "top1": float(right.mean()),
        "baseline_top1": float(base_right.mean()),
        "gain_points": round(100 * float(right.mean() - base_right.mean()), 2),
        "won": won,
        "lost": lost,
        "mcnemar_exact_p": round(mcnemar_exact_p(won, lost), 4),
    }


def _summary(out: np.ndarray, truth: np.ndarray, t: float, oos: str, col: int) -> dict[str, object]:
    """Headline figures for one score column of `_probs`: at threshold `t`, along a threshold
    grid (the plotted curve) and at the issue's in-scope target."""
    view = np.stack([out[:, col], out[:, 1]], 1)
    acc, rec = _scores(view, truth, t, oos)
    grid = np.linspace(0.0, 0.999, 200)
    curve = [_scores(view, truth, float(g), oos) for g in grid]
    best, at = best_oos_recall_at(out[:, col].astype(float), out[:, 1], truth, oos, TARGET_IN_SCOPE)
    return {
        "threshold": t,
        "in_scope_accuracy": acc,
        "oos_recall": rec,
        "best_oos_recall_at_target": {
            "in_scope_floor": TARGET_IN_SCOPE,
            "oos_recall": best,
            "threshold": at,
            "meets_target": best >= TARGET_OOS_RECALL,
        },
        "curve": [[float(g), a, r] for g, (a, r) in zip(grid, curve, strict=True)],
    }


def _scores(out: np.ndarray, truth: np.ndarray, t: float, oos: str) -> tuple[float, float]:
    conf, pred = out[:, 0].astype(float), out[:, 1]
    accepted = (conf >= t) & (pred != oos)
    is_oos = truth == oos
    return float(((pred == truth) & accepted)[~is_oos].mean()), float((~accepted)[is_oos].mean())


def _clean_and_typos(
    model: IntentModel, texts: list[str], truth: np.ndarray
) -> tuple[dict[str, object], np.ndarray]:
    """The bundle at its own threshold on the split, clean and with the eval's typos; and its
    predicted labels on the clean rows."""
    oos = model.manifest.oos_label
    out = _probs(model, texts)
    acc, rec = _scores(out, truth, model.threshold, oos)
    t_acc, t_rec = _scores(
        _probs(model, perturb_typos(texts, 0.3, seed=13)), truth, model.threshold, oos
    )
    return {
        "bundle_version": model.version,
        "build_seconds": model.manifest.training.seconds,
        "training": model.manifest.training.train_source,
        "threshold": model.threshold,
        "in_scope_accuracy": acc,
        "oos_recall": rec,
        "typos_in_scope_accuracy": t_acc,
        "typos_oos_recall": t_rec,
        "in_scope_drop_points": round(100 * (acc - t_acc), 2),
        "label_accuracy": float((out[:, 1] == truth)[truth != oos].mean()),
    }, out[:, 1]


def _best_line(summary: dict[str, object]) -> str:
    best = summary["best_oos_recall_at_target"]
    assert isinstance(best, dict)
    return f"best oos recall at in-scope >= {TARGET_IN_SCOPE}: {best['oos_recall']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a second bundle evaluated side by side (e.g. built with --augment-ratio 0)",
    )
    ap.add_argument(
        "--baseline-artifacts",
        type=Path,
        default=None,
        help="the baseline's --keep-artifacts: adds the paired top-1 comparison (fp32 and int8)",
    )
    ap.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="CLINC150 split (choose recipes on val; test once, for the chosen one)",
    )
    ap.add_argument(
        "--no-spelling",
        action="store_true",
        help="classify the queries as written (no edge spelling correction): the classifier alone",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="ORT intra-op threads (default: all cores)"
    )
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "intent_tradeoff.png")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "intent_quality.json"
    )
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.baseline_artifacts is not None and args.baseline is None:
        ap.error("--baseline-artifacts needs --baseline")
    rows = load_examples(f"{clinc150_path()}#{args.split}")
    texts = [e.text for e in rows]
    truth = np.array([e.label for e in rows], dtype=object)
    spelling = not args.no_spelling
    report: dict[str, object] = {
        "split": args.split,
        "load_average_start": os.getloadavg(),
        "spelling_correction": spelling,
    }
    labels: dict[str, np.ndarray] = {}  # name -> predicted label per row
    fig, ax = plt.subplots(figsize=(6, 4.5))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = fp32_twin(args.bundle, args.artifacts, Path(tmp) / "fp32")
        for name, path in (("int8", args.bundle), ("fp32", fp32)):
            model = IntentModel.load(path, intra_op_threads=args.threads, spelling=spelling)
            oos = model.manifest.oos_label
            out = _probs(model, texts)
            acc, rec = _scores(out, truth, model.threshold, oos)
            summary = _summary(out, truth, model.threshold, oos, 0)
            curve = [(a, r) for _, a, r in summary["curve"]]  # type: ignore[attr-defined]
            top1 = float((out[:, 1] == truth)[truth != oos].mean())
            labels[name] = out[:, 1]
            summary["label_accuracy"] = top1
            summary["oos_score"] = "msp" if model.manifest.ood is None else model.manifest.ood.score
            print(
                f"{name}: threshold={model.threshold:.3f} in-scope={acc:.4f} oos-recall={rec:.4f}"
                f" top-1={top1:.4f}; {_best_line(summary)}"
            )
            if model.ood is not None:
                msp = _summary(out, truth, model.manifest.threshold, oos, 2)
                summary["msp"] = msp
                print(
                    f"{name} MSP alone: threshold={model.manifest.threshold:.3f}"
                    f" in-scope={msp['in_scope_accuracy']:.4f}"
                    f" oos-recall={msp['oos_recall']:.4f}; {_best_line(msp)}"
                )
            report[name] = summary
            if name == "int8":
                noisy = _probs(model, perturb_typos(texts, 0.3, seed=13))
                t_acc, t_rec = _scores(noisy, truth, model.threshold, oos)
                report["int8_typos"] = {
                    "in_scope_accuracy": t_acc,
                    "oos_recall": t_rec,
                    "in_scope_drop_points": round(100 * (acc - t_acc), 2),
                }
                report["training"] = model.manifest.training.train_source
                report["bundle_version"] = model.version
                report["build_seconds"] = model.manifest.training.seconds
                print(f"int8 with typos: in-scope={t_acc:.4f} oos-recall={t_rec:.4f}")
            ax.plot([r for _, r in curve], [a for a, _ in curve], label=name)
            ax.scatter([rec], [acc], marker="o", zorder=3)
    if args.baseline is not None:
        with_aug = report["int8_typos"]  # type: ignore[index]
        base_model = IntentModel.load(
            args.baseline, intra_op_threads=args.threads, spelling=spelling
        )
        base, base_labels = _clean_and_typos(base_model, texts, truth)
        report["baseline_int8"] = base
        report["typos_drop_points_bundle_vs_baseline"] = [
            with_aug["in_scope_drop_points"],  # type: ignore[index]
            base["in_scope_drop_points"],
        ]
        print(
            f"baseline {base['bundle_version']}: in-scope={base['in_scope_accuracy']:.4f} "
            f"oos-recall={base['oos_recall']:.4f} with typos "
            f"in-scope={base['typos_in_scope_accuracy']:.4f} "
            f"(drop {base['in_scope_drop_points']} points)"
        )
        if args.baseline_artifacts is not None:
            ins = truth != base_model.manifest.oos_label
            with tempfile.TemporaryDirectory() as tmp:
                twin = fp32_twin(args.baseline, args.baseline_artifacts, Path(tmp) / "fp32")
                base_fp32 = _probs(
                    IntentModel.load(twin, intra_op_threads=args.threads, spelling=spelling), texts
                )[:, 1]
            comparison = {
                "rows": int(ins.sum()),
                "fp32": paired((labels["fp32"] == truth)[ins], (base_fp32 == truth)[ins]),
                "int8": paired((labels["int8"] == truth)[ins], (base_labels == truth)[ins]),
            }
            report["paired_vs_baseline"] = comparison
            for name in ("fp32", "int8"):
                c = comparison[name]
                assert isinstance(c, dict)
                print(
                    f"paired top-1 {name}: {c['top1']:.4f} vs {c['baseline_top1']:.4f}"
                    f" ({c['gain_points']:+.2f} pt), won {c['won']} lost {c['lost']},"
                    f" McNemar p={c['mcnemar_exact_p']}"
                )
    report["load_average_end"] = os.getloadavg()
    ax.axhline(0.965, color="grey", ls="--", lw=0.8)
    ax.axvline(0.65, color="grey", ls="--", lw=0.8)
    ax.set_xlabel(f"out-of-scope recall (CLINC150 {args.split})")
    ax.set_ylabel(f"in-scope accuracy (CLINC150 {args.split})")
    ax.set_title("Threshold sweep; dots = threshold calibrated on val")
    ax.set_ylim(0.85, 1.0)
    ax.legend()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120, bbox_inches="tight")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.plot} and {args.out}")


if __name__ == "__main__":
    main()
