"""Threshold calibration and the counting rules, on hand-made probabilities."""

from __future__ import annotations

import numpy as np

from aivos.cloud.modelbuild.calibrate import choose_threshold, scores_at
from aivos.edge.intent.evaluate import expected_oos_recall
from aivos.shared.bundle import FORMAT_VERSION, Manifest, TrainingSummary

LABELS = ["a", "b", "oos"]


def _probs(rows: list[tuple[int, float]]) -> np.ndarray:
    out = np.zeros((len(rows), 3))
    for i, (k, p) in enumerate(rows):
        out[i] = (1 - p) / 2
        out[i, k] = p
    return out


def test_counting_rules() -> None:
    probs = _probs([(0, 0.9), (1, 0.4), (0, 0.9), (0, 0.3), (2, 0.9)])
    truth = ["a", "b", "b", "oos", "oos"]
    # a: right+confident; b: right but below threshold; b: wrong label.
    # oos 1: below threshold -> recalled; oos 2: predicted oos -> recalled.
    assert scores_at(probs, truth, LABELS, 0.5, "oos") == (1 / 3, 1.0)
    assert scores_at(probs, truth, LABELS, 0.0, "oos") == (2 / 3, 0.5)


def test_threshold_stays_within_in_scope_budget() -> None:
    # 200 in-scope rows, confident except 2 at 0.45; oos rows spread up to 0.8.
    rows = [(0, 0.95)] * 198 + [(0, 0.45)] * 2 + [(1, c) for c in (0.3, 0.5, 0.6, 0.8)]
    truth = ["a"] * 200 + ["oos"] * 4
    t = choose_threshold(_probs(rows), truth, LABELS, "oos", max_in_scope_drop=0.005)
    # Dropping both 0.45 rows costs 1% > 0.5% budget, so the threshold stops at 0.45.
    assert t == 0.45
    t = choose_threshold(_probs(rows), truth, LABELS, "oos", max_in_scope_drop=0.02)
    assert t == 0.95


def _manifest(metrics: dict[str, float]) -> Manifest:
    return Manifest(
        format_version=FORMAT_VERSION,
        bundle_version="v1",
        labels=LABELS,
        threshold=0.5,
        embedding_model_id="m",
        embedding_dim=4,
        max_length=8,
        quantization="int8-dynamic-per-channel",
        training=TrainingSummary("t", "v", 4, 2, 3, 1, True, 1.0),
        metrics=metrics,
        files={},
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_expected_oos_recall_says_what_it_was_measured_on() -> None:
    generic = _manifest(
        {"expected_oos_recall": 0.81, "expected_oos_recall_n": 320, "n_generic_negatives": 421}
    )
    assert expected_oos_recall(generic) == (
        0.81,
        "320 held-out generic negatives (CLINC150 train), never trained on",
    )
    user = _manifest(
        {"expected_oos_recall": 0.9, "expected_oos_recall_n": 40, "n_generic_negatives": 0}
    )
    assert expected_oos_recall(user) == (0.9, "40 oos rows of the validation data")
    older = _manifest({"val_oos_recall": 0.7, "val_n_oos": 100.0})
    assert expected_oos_recall(older) == (0.7, "100 oos rows of the validation data")
    value, basis = expected_oos_recall(_manifest({"val_oos_recall": 0.0, "val_n_oos": 0.0}))
    assert value is None and basis.startswith("not recorded")
