"""Evaluate a bundle on labelled data with the project's counting rules.

In-scope query: correct only with the right label AND confidence >= threshold.
Out-of-scope query (label `oos`): recalled when below the threshold or predicted `oos`.

The report also carries the bundle's *expected* oos recall, from its build: the recall on
held-out generic negatives the model never trained on (a bundle trained without `oos` rows),
or on the validation data's `oos` rows. It is the figure to go by when the test data has no
`oos` rows of its own.

A bundle served with an embedding-distance out-of-scope score (`manifest.ood`) is scored with
it; the report names the score and gives the MSP-alone figures (against the manifest's MSP
threshold) beside it.

Each query runs alone by default (`batch_size` = `aivos.shared.as_served.ROWS_PER_RUN`, 1), as
the edge runs a lone query: the int8 graph quantizes its activations per run, so a query
classified together with others gets scores that depend on them. `batch_size` N > 1 hands
length-sorted groups of N to `classify_batch` (which runs them 4 at a time, as under load):
faster, and not the lone-query figures.

`perturb_typos` makes the typo-perturbed twin of a test set (`aivos intents eval --perturb
typos`): in about `rate` of the words of 4+ letters one keyboard slip, seeded and so
repeatable: a neighbouring key instead of a letter, a letter dropped, a neighbouring key
added, or two letters swapped.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence

import msgspec
import numpy as np

from aivos.edge.intent.runtime import IntentModel
from aivos.shared.as_served import ROWS_PER_RUN
from aivos.shared.bundle import Manifest
from aivos.shared.datasets import Example
from aivos.shared.ood import SCORE as OOD_SCORE

__all__ = ["EvalReport", "evaluate", "expected_oos_recall", "perturb_typos"]

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        _near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        _near += [_ROWS[r][_c] for r in (_r - 1, _r + 1) if 0 <= r < 3 and _c < len(_ROWS[r])]
        _NEIGHBOURS[_ch] = "".join(_near)
_WORD = re.compile(r"[A-Za-z]{4,}")


def _slip(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    ch = word[i]
    near = _NEIGHBOURS.get(ch.lower(), ch)
    kind = rng.randrange(4)
    if kind == 0:  # a neighbouring key instead
        return word[:i] + rng.choice(near) + word[i + 1 :]
    if kind == 1:  # a letter dropped
        return word[:i] + word[i + 1 :]
    if kind == 2:  # a neighbouring key as well
        return word[: i + 1] + rng.choice(near) + word[i + 1 :]
    j = min(i + 1, len(word) - 1) if i < len(word) - 1 else i - 1  # two letters swapped
    a, b = sorted((i, j))
    return word[:a] + word[b] + word[a] + word[b + 1 :]


def perturb_typos(texts: Sequence[str], rate: float = 0.3, seed: int = 13) -> list[str]:
    """`texts` with one keyboard slip in about `rate` of the words of 4+ letters."""
    rng = random.Random(seed)

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        return _slip(word, rng) if rng.random() < rate else word

    return [_WORD.sub(one, text) for text in texts]


class EvalReport(msgspec.Struct, frozen=True):
    bundle_version: str
    threshold: float
    provider: str
    n_in_scope: int
    n_oos: int
    in_scope_accuracy: float
    oos_recall: float
    label_accuracy: float  # right label regardless of threshold (in-scope rows)
    n_truncated: int
    latency_ms_p50: float  # single-query classify(), tokenization included
    latency_ms_p99: float
    expected_oos_recall: float | None = None  # from the build; None: not recorded
    expected_oos_recall_basis: str = ""  # what it was measured on
    spelling_correction: bool = False  # queries were spelling-corrected (edge/intent/spelling.py)
    oos_score: str = "msp"  # the in-scope score thresholded (shared/ood.py names the other)
    msp_in_scope_accuracy: float | None = None  # MSP alone, when `oos_score` is another
    msp_oos_recall: float | None = None
    batch_size: int = ROWS_PER_RUN  # queries per classify call: 1 = each alone, as served


def expected_oos_recall(manifest: Manifest) -> tuple[float | None, str]:
    """The build's oos recall estimate and what it was measured on (see the module doc)."""
    metrics = manifest.metrics
    n = int(metrics.get("expected_oos_recall_n", 0))
    if "expected_oos_recall" in metrics and metrics.get("n_generic_negatives", 0) > 0:
        basis = f"{n} held-out generic negatives (CLINC150 train), never trained on"
        return metrics["expected_oos_recall"], basis
    if "expected_oos_recall" in metrics:
        return metrics["expected_oos_recall"], f"{n} oos rows of the validation data"
    if metrics.get("val_n_oos", 0) > 0 and "val_oos_recall" in metrics:  # older bundles
        n = int(metrics["val_n_oos"])
        return metrics["val_oos_recall"], f"{n} oos rows of the validation data"
    return None, "not recorded: the build had no oos rows to measure it on"


def evaluate(
    model: IntentModel,
    examples: Sequence[Example],
    batch_size: int = ROWS_PER_RUN,
    latency_samples: int = 200,
) -> EvalReport:
    """The bundle's figures on `examples` (module doc); `batch_size` queries per classify call
    (1: each alone, as the edge serves a lone query)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    oos = model.manifest.oos_label
    texts = [e.text for e in examples]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    preds = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, p in zip(idx, model.classify_batch([texts[i] for i in idx]), strict=True):
            preds[i] = p  # type: ignore[call-overload]
    n_in = n_oos = ok_in = ok_label = ok_oos = n_trunc = msp_in = msp_oos = 0
    msp_t = model.manifest.threshold
    for example, pred in zip(examples, preds, strict=True):
        assert pred is not None
        n_trunc += pred.truncated
        msp_accepts = pred.intent != oos and (pred.msp or 0.0) >= msp_t
        if example.label == oos:
            n_oos += 1
            ok_oos += not pred.in_scope
            msp_oos += not msp_accepts
        else:
            n_in += 1
            ok_label += pred.intent == example.label
            ok_in += pred.intent == example.label and pred.in_scope
            msp_in += pred.intent == example.label and msp_accepts
    timings = []
    for text in texts[: max(0, latency_samples)]:
        t0 = time.perf_counter()
        model.classify(text)
        timings.append((time.perf_counter() - t0) * 1000)
    lat = np.asarray(timings) if timings else np.zeros(1)
    expected, basis = expected_oos_recall(model.manifest)
    return EvalReport(
        bundle_version=model.version,
        threshold=model.threshold,
        provider=model.provider,
        n_in_scope=n_in,
        n_oos=n_oos,
        in_scope_accuracy=ok_in / n_in if n_in else 0.0,
        oos_recall=ok_oos / n_oos if n_oos else 0.0,
        label_accuracy=ok_label / n_in if n_in else 0.0,
        n_truncated=n_trunc,
        latency_ms_p50=float(np.percentile(lat, 50)),
        latency_ms_p99=float(np.percentile(lat, 99)),
        expected_oos_recall=expected,
        expected_oos_recall_basis=basis,
        spelling_correction=model.speller is not None,
        oos_score="msp" if model.ood is None else OOD_SCORE,
        msp_in_scope_accuracy=None if model.ood is None else (msp_in / n_in if n_in else 0.0),
        msp_oos_recall=None if model.ood is None else (msp_oos / n_oos if n_oos else 0.0),
        batch_size=batch_size,
    )
