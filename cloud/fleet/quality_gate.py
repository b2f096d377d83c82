"""The quality gate a retrained bundle passes before a rollout may start.

The candidate bundle is compared with the bundle the fleet runs now, on the same held-out
set, each at its own calibrated threshold and with the project's counting rules (an
in-scope row is right only with the right label at or above the threshold; an ``oos`` row
is recalled when rejected):

* held-out in-scope accuracy may not drop, nor may held-out OOS recall;
* every golden query (a file of text -> expected intent, ``oos`` for "must be rejected")
  must come out as expected.

"May not drop" is judged on rows, not on a fixed margin: both bundles answer the same rows,
so what matters is how many rows the candidate *lost* (the baseline right, the candidate
wrong) against how many it *gained*. A rebuild flips a few rows either way by chance; on a
small held-out set a few rows are whole points (3 rows of 240 = 1.25 points). A drop is
refused when it is

1. larger than `tolerance` (absolute, default 1 point: smaller drops are never worth a
   refusal), and
2. more than noise: the exact one-sided sign test (McNemar's test) on the lost and gained
   rows, P(at least `lost` of `lost + gained` | each flip a fair coin), is below `alpha`
   (default 0.05). With nothing gained that takes at least 5 lost rows (p = 1/32).

The test cannot see what the held-out set is too small to resolve: with 40 ``oos`` rows a
2-row drop (5 points) passes. Use a held-out set of a few hundred rows per metric; the
report names the lost and gained rows and the p-value of each metric.

`start_rollout(..., quality_gate=BundleQualityGate(...))` refuses a failing bundle with
`QualityGateFailed`, naming every reason, and the refusal is in the operator log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.errors import AivosError, DataError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TOLERANCE",
    "BundleQualityGate",
    "BundleScore",
    "GateReport",
    "GoldenMiss",
    "MetricCheck",
    "QualityGate",
    "QualityGateFailed",
    "drop_p_value",
    "evaluate_gate",
    "judge_metric",
    "score_bundle",
]

# A drop of at most one point is never refused, however significant (a practical margin).
DEFAULT_TOLERANCE = 0.01
# A larger drop is refused only when the rows lost against the rows gained are this unlikely
# under "the rebuild flips rows at random" (one-sided exact sign test).
DEFAULT_ALPHA = 0.05


class BundleScore(msgspec.Struct, frozen=True):
    bundle_version: str
    in_scope_accuracy: float
    oos_recall: float
    n_in_scope: int
    n_oos: int


class GoldenMiss(msgspec.Struct, frozen=True):
    text: str
    expected: str
    got: str  # the predicted intent, or "oos" when rejected
    confidence: float


class MetricCheck(msgspec.Struct, frozen=True):
    """One held-out metric of the candidate against the baseline, row by row."""

    metric: str  # in_scope_accuracy | oos_recall
    baseline: float
    candidate: float
    n: int  # rows the metric counts
    lost: int  # rows the baseline got right and the candidate gets wrong
    gained: int  # rows the candidate got right and the baseline wrong
    p_value: float  # of a drop at least this large by chance (1.0 when nothing dropped)
    refused: bool


class GateReport(msgspec.Struct, frozen=True):
    passed: bool
    reasons: list[str]
    candidate: BundleScore
    baseline: BundleScore
    golden_total: int
    golden_misses: list[GoldenMiss]
    tolerance: float
    alpha: float = DEFAULT_ALPHA
    checks: list[MetricCheck] = []


class QualityGateFailed(AivosError):
    """The bundle may not be rolled out: its quality report names why."""

    code = "quality_gate_failed"

    def __init__(self, bundle_version: str, reasons: Sequence[str]) -> None:
        super().__init__(f"bundle {bundle_version} failed the quality gate: {'; '.join(reasons)}")
        self.bundle_version = bundle_version
        self.reasons = list(reasons)


class QualityGate(Protocol):
    """What `start_rollout` asks before it creates a rollout of `bundle_version`."""

    def check(self, bundle_version: str) -> GateReport: ...


def _predict(bundle: Path, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(accepted label or "oos", confidence) per text, at the bundle's own threshold."""
    from aivos.cloud.modelbuild.calibrate import predict_probs

    manifest = load_bundle_manifest(bundle)
    probs, _ = predict_probs(bundle / "model.onnx", bundle / "tokenizer.json", list(texts))
    labels = np.asarray(manifest.labels)
    pred = labels[probs.argmax(1)]
    conf = probs.max(1)
    accepted = (conf >= manifest.threshold) & (pred != manifest.oos_label)
    return [str(p) if a else OOS_LABEL for p, a in zip(pred, accepted, strict=True)], conf


def _row_outcomes(bundle: Path, heldout: Sequence[Example]) -> tuple[list[bool], list[bool]]:
    """(right per in-scope row, recalled per oos row), in the held-out order."""
    got, _ = _predict(bundle, [e.text for e in heldout])
    pairs = list(zip(got, (e.label for e in heldout), strict=True))
    return [g == t for g, t in pairs if t != OOS_LABEL], [
        g == OOS_LABEL for g, t in pairs if t == OOS_LABEL
    ]


def _rate(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else 0.0


def _score(version: str, ins: Sequence[bool], oos: Sequence[bool]) -> BundleScore:
    return BundleScore(
        bundle_version=version,
        in_scope_accuracy=_rate(ins),
        oos_recall=_rate(oos),
        n_in_scope=len(ins),
        n_oos=len(oos),
    )


def score_bundle(bundle: Path, heldout: Sequence[Example]) -> BundleScore:
    ins, oos = _row_outcomes(bundle, heldout)
    return _score(load_bundle_manifest(bundle).bundle_version, ins, oos)


def drop_p_value(lost: int, gained: int) -> float:
    """P(at least `lost` of the `lost + gained` flipped rows go against the candidate) when
    each flip is a fair coin: the exact one-sided sign test (McNemar's test, exact form)."""
    n = lost + gained
    if lost <= gained:
        return 1.0
    # exact integers: comb(n, k) / 2**n stays exact for any held-out size
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n


def judge_metric(
    metric: str,
    baseline: Sequence[bool],
    candidate: Sequence[bool],
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
) -> MetricCheck:
    """The candidate's per-row outcomes against the baseline's on the same rows: refused when
    the drop is larger than `tolerance` *and* significant at `alpha`."""
    if len(baseline) != len(candidate):
        raise ValueError("both bundles must be judged on the same rows")
    lost = sum(1 for b, c in zip(baseline, candidate, strict=True) if b and not c)
    gained = sum(1 for b, c in zip(baseline, candidate, strict=True) if c and not b)
    n = len(baseline)
    p = drop_p_value(lost, gained)
    # counted in rows, so rounding of the rates never decides
    beyond = n > 0 and (lost - gained) > tolerance * n + 1e-9
    return MetricCheck(
        metric=metric,
        baseline=_rate(baseline),
        candidate=_rate(candidate),
        n=n,
        lost=lost,
        gained=gained,
        p_value=round(p, 6),
        refused=bool(beyond and p < alpha),
    )


_METRIC_NAMES = {
    "in_scope_accuracy": "held-out in-scope accuracy",
    "oos_recall": "held-out OOS recall",
}


def _reason(check: MetricCheck, baseline_version: str, tolerance: float, alpha: float) -> str:
    return (
        f"{_METRIC_NAMES[check.metric]} {check.candidate:.2%} < {check.baseline:.2%} of "
        f"{baseline_version}: {check.lost} of {check.n} rows lost, {check.gained} gained "
        f"(p = {check.p_value:.3g} < {alpha}; tolerance {tolerance:.1%})"
    )


def evaluate_gate(
    candidate: Path,
    baseline: Path,
    heldout: Sequence[Example],
    golden: Sequence[Example] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
) -> GateReport:
    if not heldout:
        raise DataError("heldout", "the quality gate needs a non-empty held-out set")
    new_ins, new_oos = _row_outcomes(candidate, heldout)
    old_ins, old_oos = _row_outcomes(baseline, heldout)
    new = _score(load_bundle_manifest(candidate).bundle_version, new_ins, new_oos)
    old = _score(load_bundle_manifest(baseline).bundle_version, old_ins, old_oos)
    checks = [
        judge_metric(metric, o, c, tolerance, alpha)
        for metric, o, c in (
            ("in_scope_accuracy", old_ins, new_ins),
            ("oos_recall", old_oos, new_oos),
        )
        if o
    ]
    reasons = [_reason(c, old.bundle_version, tolerance, alpha) for c in checks if c.refused]
    misses: list[GoldenMiss] = []
    if golden:
        got, conf = _predict(candidate, [g.text for g in golden])
        for g, label, c in zip(golden, got, conf, strict=True):
            if label != g.label:
                misses.append(GoldenMiss(g.text, g.label, label, round(float(c), 4)))
        if misses:
            shown = ", ".join(f"{m.text!r} -> {m.got} (expected {m.expected})" for m in misses[:3])
            reasons.append(f"{len(misses)} of {len(golden)} golden queries fail: {shown}")
    return GateReport(
        passed=not reasons,
        reasons=reasons,
        candidate=new,
        baseline=old,
        golden_total=len(golden),
        golden_misses=misses,
        tolerance=tolerance,
        alpha=alpha,
        checks=checks,
    )


class BundleQualityGate:
    """The gate over bundle directories: `candidate` must be the bundle being rolled out.
    `heldout` and `golden` are data specs (CSV / JSONL / CLINC150 JSON ``PATH#test``)."""

    def __init__(
        self,
        candidate: Path,
        baseline: Path,
        heldout: str | Path,
        golden: str | Path | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        if not 0 <= tolerance < 1 or not 0 < alpha < 1:
            raise DataError("quality gate", "tolerance must be in [0, 1) and alpha in (0, 1)")
        self.candidate = candidate
        self.baseline = baseline
        self.heldout = load_examples(heldout)
        self.golden = load_examples(golden) if golden is not None else []
        self.tolerance = tolerance
        self.alpha = alpha

    def check(self, bundle_version: str) -> GateReport:
        found = load_bundle_manifest(self.candidate).bundle_version
        if found != bundle_version:
            raise DataError(
                str(self.candidate), f"holds bundle {found}, not the {bundle_version} to roll out"
            )
        return evaluate_gate(
            self.candidate, self.baseline, self.heldout, self.golden, self.tolerance, self.alpha
        )
