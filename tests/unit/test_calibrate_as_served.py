"""The build scores validation and training rows as the edge serves a query: one row per
onnxruntime run (shared/as_served.py). The int8 graph quantizes its activations per run, so
in a batch a row's MSP and embedding would depend on its batch-mates. Real small bundle."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from aivos.cloud.modelbuild.calibrate import ood_calibration, predict_probs
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, load_examples

pytestmark = pytest.mark.slow  # builds the session's small bundle


def count_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every onnxruntime run from now on, in order (the real run goes ahead)."""
    rows: list[int] = []
    real: Callable[..., Any] = ort.InferenceSession.run

    def run(self: ort.InferenceSession, names: Any, feed: dict[str, np.ndarray], *a: Any) -> Any:
        rows.append(int(feed["input_ids"].shape[0]))
        return real(self, names, feed, *a)

    monkeypatch.setattr(ort.InferenceSession, "run", run)
    return rows


def test_calibration_scores_each_row_alone_as_the_edge_serves_it(
    small_bundle: Path, small_clinc: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    val = load_examples(f"{small_clinc}#val")
    texts, truth = [e.text for e in val], [e.label for e in val]
    edge = IntentModel.load(small_bundle, spelling=False, ood=False)
    alone = [edge.classify(t) for t in texts]  # the edge's lone-query path
    model, tok = small_bundle / "model.onnx", small_bundle / "tokenizer.json"

    rows = count_runs(monkeypatch)
    probs, emb = predict_probs(model, tok, texts)
    assert rows == [1] * len(texts)
    # so each row's scores are exactly the edge's for that query alone
    np.testing.assert_allclose(probs.max(1), [p.msp for p in alone], rtol=0, atol=1e-6)
    np.testing.assert_allclose(emb, np.stack([p.embedding for p in alone]), rtol=0, atol=1e-6)
    labels = load_bundle_manifest(small_bundle).labels
    assert [labels[i] for i in probs.argmax(1)] == [p.intent for p in alone]

    # the out-of-scope statistics are fitted on the training rows' embeddings, run alone too
    rows.clear()
    train = load_examples(str(small_clinc))
    _, cal = ood_calibration(tmp_path, model, tok, train, labels, probs, emb, truth, 0.005)
    assert rows == [1] * sum(e.label != OOS_LABEL for e in train)
    assert cal.threshold > 0


def test_batching_is_an_explicit_choice(
    small_bundle: Path, small_clinc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [e.text for e in load_examples(f"{small_clinc}#val")]
    rows = count_runs(monkeypatch)
    probs, _ = predict_probs(
        small_bundle / "model.onnx", small_bundle / "tokenizer.json", texts, 64
    )
    assert sum(rows) == len(texts) == len(probs)
    assert len(rows) == math.ceil(len(texts) / 64) and max(rows) == 64
    with pytest.raises(ValueError, match="batch_size"):
        predict_probs(small_bundle / "model.onnx", small_bundle / "tokenizer.json", texts, 0)
