"""The quality gate a retrained bundle passes before a rollout may start.

The candidate bundle is compared with the bundle the fleet runs now, on the same held-out
set, each at its own calibrated threshold and with the project's counting rules (an
in-scope row is right only with the right label at or above the threshold; an ``oos`` row
is recalled when rejected):

* held-out in-scope accuracy may not drop by more than `tolerance` (absolute);
* held-out OOS recall may not drop by more than `tolerance`;
* every golden query (a file of text -> expected intent, ``oos`` for "must be rejected")
  must come out as expected.

`start_rollout(..., quality_gate=BundleQualityGate(...))` refuses a failing bundle with
`QualityGateFailed`, naming every reason, and the refusal is in the operator log.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.errors import AivosError, DataError

__all__ = [
    "DEFAULT_TOLERANCE",
    "BundleQualityGate",
    "BundleScore",
    "GateReport",
    "GoldenMiss",
    "QualityGate",
    "QualityGateFailed",
    "evaluate_gate",
    "score_bundle",
]

# One point: below the noise of a rebuild on CLINC150-sized held-out sets, above which an
# operator should look before the fleet gets the bundle.
DEFAULT_TOLERANCE = 0.01


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


class GateReport(msgspec.Struct, frozen=True):
    passed: bool
    reasons: list[str]
    candidate: BundleScore
    baseline: BundleScore
    golden_total: int
    golden_misses: list[GoldenMiss]
    tolerance: float


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


def score_bundle(bundle: Path, heldout: Sequence[Example]) -> BundleScore:
    got, _ = _predict(bundle, [e.text for e in heldout])
    truth = [e.label for e in heldout]
    ins = [g == t for g, t in zip(got, truth, strict=True) if t != OOS_LABEL]
    oos = [g == OOS_LABEL for g, t in zip(got, truth, strict=True) if t == OOS_LABEL]
    return BundleScore(
        bundle_version=load_bundle_manifest(bundle).bundle_version,
        in_scope_accuracy=round(sum(ins) / len(ins), 4) if ins else 0.0,
        oos_recall=round(sum(oos) / len(oos), 4) if oos else 0.0,
        n_in_scope=len(ins),
        n_oos=len(oos),
    )


def evaluate_gate(
    candidate: Path,
    baseline: Path,
    heldout: Sequence[Example],
    golden: Sequence[Example] = (),
    tolerance: float = DEFAULT_TOLERANCE,
) -> GateReport:
    if not heldout:
        raise DataError("heldout", "the quality gate needs a non-empty held-out set")
    new, old = score_bundle(candidate, heldout), score_bundle(baseline, heldout)
    reasons: list[str] = []
    if new.n_in_scope and new.in_scope_accuracy < old.in_scope_accuracy - tolerance:
        reasons.append(
            f"held-out in-scope accuracy {new.in_scope_accuracy:.2%} < "
            f"{old.in_scope_accuracy:.2%} of {old.bundle_version} (tolerance {tolerance:.1%})"
        )
    if new.n_oos and new.oos_recall < old.oos_recall - tolerance:
        reasons.append(
            f"held-out OOS recall {new.oos_recall:.2%} < {old.oos_recall:.2%} of "
            f"{old.bundle_version} (tolerance {tolerance:.1%})"
        )
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
    ) -> None:
        self.candidate = candidate
        self.baseline = baseline
        self.heldout = load_examples(heldout)
        self.golden = load_examples(golden) if golden is not None else []
        self.tolerance = tolerance

    def check(self, bundle_version: str) -> GateReport:
        found = load_bundle_manifest(self.candidate).bundle_version
        if found != bundle_version:
            raise DataError(
                str(self.candidate), f"holds bundle {found}, not the {bundle_version} to roll out"
            )
        return evaluate_gate(
            self.candidate, self.baseline, self.heldout, self.golden, self.tolerance
        )
