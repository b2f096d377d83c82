"""The post-install canary: the bundle's own golden queries must come out right.

A bundle without golden queries fails the canary: there is nothing to show it works. The
queries are classified as the agent serves them, one per run by default: the int8 graph
quantises its activations per run, so in a batch a query's label could depend on its
batch-mates."""

from __future__ import annotations

import msgspec

from aivos.edge.intent.runtime import IntentModel
from aivos.shared.as_served import ROWS_PER_RUN

__all__ = ["CanaryResult", "run_canary"]


class CanaryResult(msgspec.Struct, frozen=True):
    passed: bool
    accuracy: float
    required: float
    n: int
    misses: list[str]  # "expected->got" per wrong query (intents only, never the text)

    @property
    def reason(self) -> str:
        if self.n == 0:
            return "bundle ships no golden queries"
        return (
            f"canary accuracy {self.accuracy:.3f} < required {self.required:.3f} ({self.n} queries)"
        )


def run_canary(model: IntentModel, batch: int = ROWS_PER_RUN) -> CanaryResult:
    """Blocking (ONNX inference): call from a worker thread."""
    golden = model.manifest.golden
    required = model.manifest.canary_min_accuracy
    if not golden:
        return CanaryResult(False, 0.0, required, 0, [])
    misses: list[str] = []
    for start in range(0, len(golden), batch):
        chunk = golden[start : start + batch]
        predictions = model.classify_batch([g.text for g in chunk])
        for g, p in zip(chunk, predictions, strict=True):
            if p.intent != g.intent:
                misses.append(f"{g.intent}->{p.intent}")
    accuracy = 1.0 - len(misses) / len(golden)
    return CanaryResult(accuracy >= required, round(accuracy, 4), required, len(golden), misses)
