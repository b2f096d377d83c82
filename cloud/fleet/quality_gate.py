"""The quality gate a retrained bundle passes before a rollout may start.

The candidate bundle is compared with the bundle the fleet runs now, on the same held-out
set, each as the edge serves it and with the project's counting rules (an in-scope row is
right only with the right label at or above the threshold; an ``oos`` row is recalled when
rejected). "As served" means each bundle's own in-scope score against that score's own
threshold (`ServedScorer`): the out-of-scope score of `shared/ood.py` (MSP x sqrt(
typicality)) against ``manifest.ood.threshold`` for a bundle that carries one, else the max
softmax probability (MSP) against ``manifest.threshold``, as `edge/intent/runtime.py` picks
them. A gate between an MSP bundle and an ``ood`` one so compares what each fleet would
answer, not two numbers on different scales. The score is computed by the runtime's own
code (`shared.ood.OodScorer.score` on the graph's ``probs`` and ``sentence_embedding``);
what the gate leaves out is the edge's spelling correction (an edge dependency), so it
judges the text as written, as `aivos intents eval --no-spelling` does. Each row runs alone
(`ServedScorer.predict`), as the edge runs a lone query: the int8 graph's activation
quantization is per run, so in a batch a row's score would depend on its batch-mates.

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

from aivos.shared.as_served import ROWS_PER_RUN
from aivos.shared.bundle import Manifest, load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, Example, load_examples
from aivos.shared.errors import AivosError, BundleError, DataError
from aivos.shared.ood import SCORE as OOD_SCORE
from aivos.shared.ood import OodScorer, OodStats

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
    "ServedScorer",
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


MSP_SCORE = "msp"  # the max softmax probability: a bundle without `ood` (the runtime's name)


class BundleScore(msgspec.Struct, frozen=True):
    bundle_version: str
    in_scope_accuracy: float
    oos_recall: float
    n_in_scope: int
    n_oos: int
    score: str = MSP_SCORE  # the in-scope score the bundle is served (and judged) with
    threshold: float = 0.0  # that score's threshold


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


class ServedScorer:
    """A bundle's in-scope decision as the edge serves it: the score `edge/intent/runtime.py`
    serves (`shared/ood.py`'s score when the manifest carries ``ood``, else MSP) against
    that score's threshold. A score this code does not compute is refused, as the runtime
    refuses it, rather than judged as MSP against a threshold chosen for another score."""

    def __init__(self, bundle: Path, manifest: Manifest | None = None) -> None:
        self.bundle = bundle
        self.manifest = manifest or load_bundle_manifest(bundle)
        self.ood: OodScorer | None = None
        ood = self.manifest.ood
        if ood is not None:
            if ood.score != OOD_SCORE:
                raise BundleError(str(bundle), f"unknown out-of-scope score {ood.score!r}")
            try:
                self.ood = OodScorer(OodStats.load(bundle / ood.file))
            except (OSError, KeyError, ValueError) as exc:
                raise BundleError(str(bundle), f"cannot load {ood.file}: {exc}") from exc

    @property
    def score(self) -> str:
        """The served score's name: "msp" or the manifest's ``ood.score``."""
        return MSP_SCORE if self.ood is None else OOD_SCORE

    @property
    def threshold(self) -> float:
        """The threshold on the served score (the runtime's `IntentModel.threshold`)."""
        if self.ood is not None and self.manifest.ood is not None:
            return self.manifest.ood.threshold
        return self.manifest.threshold

    def predict(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(accepted label or "oos", served score) per text."""
        from aivos.cloud.modelbuild.calibrate import predict_probs

        bundle = self.bundle
        # as served (`ROWS_PER_RUN`, one row per run): the int8 graph quantizes its activations
        # per run, so a row's score moves with the rows padded into its batch (up to 0.1 of MSP
        # on the test bundles); alone, it is what the edge serves a lone query
        probs, emb = predict_probs(
            bundle / "model.onnx", bundle / "tokenizer.json", list(texts), ROWS_PER_RUN
        )
        pred = np.asarray(self.manifest.labels)[probs.argmax(1)]
        msp = probs.max(1)
        conf = msp if self.ood is None else self.ood.score(msp, emb)  # as the runtime does
        accepted = (conf >= self.threshold) & (pred != self.manifest.oos_label)
        return [str(p) if a else OOS_LABEL for p, a in zip(pred, accepted, strict=True)], conf


def _outcomes(served: ServedScorer, heldout: Sequence[Example]) -> tuple[list[bool], list[bool]]:
    """(right per in-scope row, recalled per oos row), in the held-out order."""
    got, _ = served.predict([e.text for e in heldout])
    pairs = list(zip(got, (e.label for e in heldout), strict=True))
    return [g == t for g, t in pairs if t != OOS_LABEL], [
        g == OOS_LABEL for g, t in pairs if t == OOS_LABEL
    ]


def _rate(hits: Sequence[bool]) -> float:
    return round(sum(hits) / len(hits), 4) if hits else 0.0


def _score(served: ServedScorer, ins: Sequence[bool], oos: Sequence[bool]) -> BundleScore:
    return BundleScore(
        bundle_version=served.manifest.bundle_version,
        in_scope_accuracy=_rate(ins),
        oos_recall=_rate(oos),
        n_in_scope=len(ins),
        n_oos=len(oos),
        score=served.score,
        threshold=round(float(served.threshold), 6),
    )


def score_bundle(bundle: Path, heldout: Sequence[Example]) -> BundleScore:
    served = ServedScorer(bundle)
    ins, oos = _outcomes(served, heldout)
    return _score(served, ins, oos)


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
    new_served, old_served = ServedScorer(candidate), ServedScorer(baseline)
    new_ins, new_oos = _outcomes(new_served, heldout)
    old_ins, old_oos = _outcomes(old_served, heldout)
    new = _score(new_served, new_ins, new_oos)
    old = _score(old_served, old_ins, old_oos)
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
        got, conf = new_served.predict([g.text for g in golden])
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
