"""The paired comparison fine-tuning recipe changes are judged by (`benchmarks/intent_quality.py
--baseline-artifacts`): rows won and lost against the baseline and the exact McNemar p,
against hand-worked values and a direct binomial sum."""

from __future__ import annotations

import sys
from math import comb
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from intent_quality import mcnemar_exact_p, paired  # noqa: E402


def test_mcnemar_hand_worked() -> None:
    # 3 won, 0 lost: two-sided p = 2 * (1/2)^3
    assert mcnemar_exact_p(3, 0) == pytest.approx(0.25)
    assert mcnemar_exact_p(0, 3) == pytest.approx(0.25)
    # 1 won, 1 lost: no evidence either way, capped at 1
    assert mcnemar_exact_p(1, 1) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0
    # the recorded label-smoothing comparison: 15 won, 13 lost of 3,000 -> p 0.85
    assert mcnemar_exact_p(15, 13) == pytest.approx(0.8506, abs=1e-4)


@pytest.mark.parametrize(("b", "c"), [(20, 11), (5, 17), (40, 40), (1, 9)])
def test_mcnemar_matches_binomial_tail(b: int, c: int) -> None:
    n = b + c
    k = min(b, c)
    tail = sum(comb(n, i) * 0.5**n for i in range(k + 1))
    assert mcnemar_exact_p(b, c) == pytest.approx(min(1.0, 2 * tail))
    assert mcnemar_exact_p(b, c) == mcnemar_exact_p(c, b)


def test_paired_counts_rows_won_and_lost() -> None:
    new = np.array([True, True, False, True, False, True])
    base = np.array([True, False, True, False, False, True])
    out = paired(new, base)
    assert out["won"] == 2  # rows 1 and 3
    assert out["lost"] == 1  # row 2
    assert out["top1"] == pytest.approx(4 / 6)
    assert out["baseline_top1"] == pytest.approx(3 / 6)
    assert out["gain_points"] == pytest.approx(16.67)
    assert out["mcnemar_exact_p"] == pytest.approx(1.0)
