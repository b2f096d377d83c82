"""The threshold rule when the validation set is small: a budget under one row."""

from __future__ import annotations

import numpy as np

from aivos.cloud.modelbuild.calibrate import choose_threshold_on, scores_on


def test_a_lowest_score_that_rounds_up_still_gets_a_threshold() -> None:
    # 160 in-scope rows (a budget of 0.5 point is under one row), all right; the lowest
    # in-scope score rounds up to 4 places (0.33486 -> 0.3349); oos rows score higher
    score = np.array([0.33486] + [0.9] * 159 + [0.5, 0.95], dtype=np.float32)
    truth = np.array(["a"] * 160 + ["oos"] * 2)
    pred = np.array(["a"] * 162)
    t = choose_threshold_on(score, pred, truth, "oos", 0.005)
    # the highest threshold that loses no in-scope row: at or below the lowest right score,
    # not "no threshold" (0.0)
    assert 0.3348 <= t <= float(score[0])
    assert scores_on(score, pred, truth, t, "oos") == (1.0, 0.0)


def test_the_lowest_candidate_changes_nothing_above_it() -> None:
    # the lowest score rounds down already; a budget of 2.5 rows: the 0.8 candidate loses 3
    score = np.array([0.33484, 0.6, 0.7, 0.8] + [0.9] * 96 + [0.65], dtype=np.float32)
    truth = np.array(["a"] * 100 + ["oos"])
    pred = np.array(["a"] * 101)
    assert choose_threshold_on(score, pred, truth, "oos", 0.025) == float(np.float32(0.7))
