"""The curve reader recipe comparisons are judged by (`benchmarks/intent_quality.py`): the
highest oos recall of any threshold keeping in-scope accuracy at a floor, against a brute
force over every threshold through the benchmark's own `_scores`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from intent_quality import _scores, best_oos_recall_at  # noqa: E402

OOS = "oos"


def _brute(score: np.ndarray, pred: np.ndarray, truth: np.ndarray, floor: float) -> float:
    out = np.stack([score, pred], 1)
    best = 0.0
    for t in [*np.unique(score), float(score.max()) + 1.0]:
        acc, rec = _scores(out, truth, float(t), OOS)
        if acc >= floor:
            best = max(best, rec)
    return best


def test_hand_worked_example() -> None:
    # in-scope: a right at 0.9, b right at 0.4, c wrong at 0.2; oos rows at 0.3 and 0.5,
    # one oos row predicted oos outright (caught at any threshold)
    score = np.array([0.9, 0.4, 0.2, 0.3, 0.5, 0.8])
    pred = np.array(["a", "b", "x", "a", "b", OOS], dtype=object)
    truth = np.array(["a", "b", "c", OOS, OOS, OOS], dtype=object)
    # keeping both right in-scope rows (2/3): reject below 0.4 -> catches the 0.3 oos row
    assert best_oos_recall_at(score, pred, truth, OOS, 2 / 3) == (pytest.approx(2 / 3), 0.4)
    # a floor of 1/3 allows rejecting up to 0.9: all oos rows caught
    rec, t = best_oos_recall_at(score, pred, truth, OOS, 1 / 3)
    assert rec == pytest.approx(1.0)
    assert t is not None
    assert _scores(np.stack([score, pred], 1), truth, t, OOS) == (
        pytest.approx(1 / 3),
        pytest.approx(1.0),
    )
    # unreachable floor (one in-scope row is wrong whatever the threshold)
    assert best_oos_recall_at(score, pred, truth, OOS, 0.9) == (0.0, None)


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b", "c", OOS], dtype=object)
    truth = rng.choice(labels, 200, p=[0.3, 0.3, 0.2, 0.2])
    pred = np.where(rng.random(200) < 0.85, truth, rng.choice(labels, 200))
    score = np.round(rng.random(200), 2)  # many ties: cuts only between distinct scores
    score[truth == OOS] *= 0.7
    floor = float(rng.uniform(0.5, 0.9))
    rec, t = best_oos_recall_at(score, pred, truth, OOS, floor)
    assert rec == pytest.approx(_brute(score, pred, truth, floor))
    if t is not None:  # the threshold it names gives that recall at or above the floor
        acc, at_t = _scores(np.stack([score, pred], 1), truth, t, OOS)
        assert acc >= floor
        assert at_t == pytest.approx(rec)
