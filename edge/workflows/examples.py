"""Workflows a site starts from its own example utterances, without retraining the model.

A workflow may declare `[trigger] examples = [...]`: a few everyday phrasings of the request
it serves. At load (and again whenever the live model's embedding changes) the examples are
embedded with the live model; a request whose sentence embedding, the one the pipeline
already computes, has cosine similarity >= the workflow's threshold with its nearest example
starts that workflow, whatever the intent model predicted. No second model call per request.

Calibration (per workflow, at load): the threshold must keep other requests out. Negatives are
CLINC150 *train* rows (never the test split), the first `NEGATIVES_PER_INTENT` of every
in-scope intent the workflow is not bound to by `trigger.intents`, plus as many
out-of-scope train rows. Each negative's score is its best cosine to the examples; the
threshold is the `NEGATIVE_QUANTILE` quantile of those scores plus `MARGIN`, clamped to
[`MIN_THRESHOLD`, `MAX_THRESHOLD`]. `trigger.min_similarity` overrides it. The examples'
leave-one-out scores (each example against the others) are kept as a sanity figure: when
the threshold is above most of them the examples are too unlike each other and a warning
is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec
import numpy as np

from aivos.edge.workflows.spec import Workflow
from aivos.shared.paths import clinc150_path

__all__ = [
    "Embedder",
    "ExampleMatch",
    "ExampleMatcher",
    "ExampleTrigger",
    "calibration_rows",
    "NEGATIVES_PER_INTENT",
    "NEGATIVE_QUANTILE",
    "MARGIN",
    "MIN_THRESHOLD",
    "MAX_THRESHOLD",
]

log = logging.getLogger(__name__)

NEGATIVES_PER_INTENT = 4
NEGATIVE_QUANTILE = 0.995
MARGIN = 0.02
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 0.95


class Embedder(Protocol):
    """What the matcher needs from the live model (`IntentModel` is one)."""

    @property
    def embedding_version(self) -> str: ...

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray: ...


class ExampleTrigger(msgspec.Struct, frozen=True):
    """One workflow's embedded examples and its calibrated threshold."""

    workflow: str
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    threshold: float
    calibrated: bool  # False when trigger.min_similarity set it
    negative_max: float  # the highest negative score seen in calibration
    leave_one_out: float  # median score of an example against the others


class ExampleMatch(msgspec.Struct, frozen=True):
    workflow: str
    score: float


def calibration_rows(per_intent: int = NEGATIVES_PER_INTENT) -> list[tuple[str, str]]:
    """(text, intent) rows of CLINC150's train split: the first `per_intent` of each intent,
    and `per_intent` x 10 out-of-scope rows (intent "oos"). Deterministic."""
    data = json.loads(clinc150_path().read_bytes())
    counts: dict[str, int] = {}
    rows: list[tuple[str, str]] = []
    for text, intent in data["train"]:
        if counts.get(intent, 0) < per_intent:
            counts[intent] = counts.get(intent, 0) + 1
            rows.append((str(text), str(intent)))
    rows += [(str(text), "oos") for text, _ in data["oos_train"][: per_intent * 10]]
    return rows


class ExampleMatcher:
    """The example-triggered workflows for one embedding space."""

    def __init__(self, triggers: Sequence[ExampleTrigger], embedding_version: str) -> None:
        self.triggers = {t.workflow: t for t in triggers}
        self.embedding_version = embedding_version

    def __len__(self) -> int:
        return len(self.triggers)

    @classmethod
    def build(
        cls,
        workflows: Iterable[Workflow],
        model: Embedder,
        negatives: Sequence[tuple[str, str]] | None = None,
    ) -> ExampleMatcher:
        """Embed every workflow's examples with `model` and calibrate their thresholds
        (negatives default to `calibration_rows()`; read only when a workflow needs them)."""
        with_examples = [wf for wf in workflows if wf.trigger.examples]
        if not with_examples:
            return cls([], model.embedding_version)
        neg_vectors = np.zeros((0, 0), dtype=np.float32)
        neg_intents: list[str] = []
        if any(wf.trigger.min_similarity is None for wf in with_examples):
            rows = calibration_rows() if negatives is None else list(negatives)
            neg_vectors = model.embed_batch([text for text, _ in rows])
            neg_intents = [intent for _, intent in rows]
        triggers = []
        for wf in with_examples:
            vectors = np.asarray(model.embed_batch(list(wf.trigger.examples)), dtype=np.float32)
            triggers.append(_calibrate(wf, vectors, neg_vectors, neg_intents))
        return cls(triggers, model.embedding_version)

    def scores(self, embedding: np.ndarray) -> dict[str, float]:
        """Each example-triggered workflow's best cosine to `embedding` (L2-normalised)."""
        return {name: float(np.max(t.vectors @ embedding)) for name, t in self.triggers.items()}

    def match(self, embedding: np.ndarray) -> ExampleMatch | None:
        """The workflow whose examples `embedding` is closest to, when at or above its
        threshold (the best margin over threshold wins between several)."""
        best: ExampleMatch | None = None
        best_margin = 0.0
        for name, score in self.scores(embedding).items():
            margin = score - self.triggers[name].threshold
            if margin >= 0 and (best is None or margin > best_margin):
                best, best_margin = ExampleMatch(name, round(score, 4)), margin
        return best


def _calibrate(
    wf: Workflow, vectors: np.ndarray, neg_vectors: np.ndarray, neg_intents: list[str]
) -> ExampleTrigger:
    sims = vectors @ vectors.T
    n = len(vectors)
    loo = float(np.median(np.max(sims - 2 * np.eye(n), axis=1))) if n > 1 else 1.0
    bound = set(wf.trigger.intents)
    keep = [i for i, intent in enumerate(neg_intents) if intent not in bound]
    negative_max = 0.0
    if keep:
        neg_scores = np.max(neg_vectors[keep] @ vectors.T, axis=1)
        negative_max = float(np.max(neg_scores))
    if wf.trigger.min_similarity is not None:
        return ExampleTrigger(wf.name, vectors, wf.trigger.min_similarity, False, negative_max, loo)
    quantile = float(np.quantile(neg_scores, NEGATIVE_QUANTILE)) if keep else MIN_THRESHOLD
    threshold = min(MAX_THRESHOLD, max(MIN_THRESHOLD, quantile + MARGIN))
    if threshold > loo:
        log.warning(
            "workflow %s: example threshold %.3f is above its examples' own similarity %.3f;"
            " add examples closer to each other or set trigger.min_similarity",
            wf.name,
            threshold,
            loo,
        )
    log.info("workflow %s: %d examples, threshold %.3f", wf.name, n, threshold)
    return ExampleTrigger(wf.name, vectors, round(threshold, 4), True, negative_max, loo)
