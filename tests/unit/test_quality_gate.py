"""The quality gate's rule on held-out rows: a drop is refused only when it is over the
tolerance *and* the rows the candidate lost against those it gained are unlikely by chance
(exact one-sided sign test), so a rebuild's few flipped rows on a small set pass and a real
drop does not."""

from __future__ import annotations

import pytest

from aivos.cloud.fleet.quality_gate import DEFAULT_TOLERANCE, drop_p_value, judge_metric


def _rows(n: int, baseline_right: int, lost: int, gained: int) -> tuple[list[bool], list[bool]]:
    """Per-row outcomes of two bundles on `n` rows: the baseline gets `baseline_right`; the
    candidate loses `lost` of those and gains `gained` of the others."""
    base = [i < baseline_right for i in range(n)]
    cand = list(base)
    for i in range(lost):
        cand[i] = False
    for i in range(gained):
        cand[baseline_right + i] = True
    return base, cand


def test_p_value_is_the_exact_sign_test() -> None:
    assert drop_p_value(3, 0) == 0.125  # 1/8
    assert drop_p_value(5, 0) == 1 / 32
    assert drop_p_value(10, 2) == pytest.approx(79 / 4096)
    assert drop_p_value(2, 2) == 1.0 and drop_p_value(0, 4) == 1.0
    assert 0 < drop_p_value(2600, 2400) < 0.01  # exact on big sets too (no float overflow)


def test_a_rebuilds_noise_on_a_small_held_out_set_passes() -> None:
    # the e2e test's rebuilt bundle: 3 of 240 in-scope rows lost = -1.25 points, which a
    # fixed 1-point margin refused
    base, cand = _rows(240, 220, lost=3, gained=0)
    check = judge_metric("in_scope_accuracy", base, cand)
    assert check.baseline - check.candidate == pytest.approx(0.0125, abs=1e-4)
    assert (check.lost, check.gained, check.p_value) == (3, 0, 0.125)
    assert not check.refused
    # rows flipping both ways: 8 lost, 5 gained is a coin's doing
    assert not judge_metric("in_scope_accuracy", *_rows(240, 220, lost=8, gained=5)).refused
    # one oos row of 40 is 2.5 points, two are 5: still within what 40 rows resolve
    assert not judge_metric("oos_recall", *_rows(40, 30, lost=2, gained=0)).refused


def test_a_real_drop_is_refused() -> None:
    check = judge_metric("in_scope_accuracy", *_rows(240, 220, lost=30, gained=4))
    assert check.refused and check.p_value < 1e-4
    # five rows lost and none gained on a small set: over a point and p = 1/32
    assert judge_metric("in_scope_accuracy", *_rows(240, 220, lost=5, gained=0)).refused
    # a collapsed oos recall on 40 rows
    assert judge_metric("oos_recall", *_rows(40, 30, lost=12, gained=1)).refused


def test_a_significant_drop_within_the_tolerance_passes() -> None:
    # CLINC150-sized: 20 rows of 4500 lost, none gained: significant, but under a point
    check = judge_metric("in_scope_accuracy", *_rows(4500, 4300, lost=20, gained=0))
    assert check.p_value < 1e-5
    assert not check.refused
    assert judge_metric("in_scope_accuracy", *_rows(4500, 4300, lost=20, gained=0), 0.0).refused
    assert DEFAULT_TOLERANCE == 0.01


def test_the_rows_must_be_the_same() -> None:
    with pytest.raises(ValueError):
        judge_metric("oos_recall", [True, False], [True])
