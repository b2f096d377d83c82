"""Per-intent threshold overrides against the score the bundle serves (edge/router.py): a
policy written for the MSP is never rescaled, but a bundle serving the out-of-scope score
of shared/ood.py makes the router warn, and the policy can say which score its overrides
were re-derived for."""

from __future__ import annotations

import logging

import pytest

from aivos.edge.fleet.config_apply import resolve_config
from aivos.edge.router import (
    MSP_SCORE,
    IntentRule,
    RouterPolicy,
    rederive_threshold,
    route,
    threshold_scale_warning,
    warn_threshold_scale,
)
from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError
from aivos.shared.ood import SCORE as OOD_SCORE
from aivos.shared.residency import ResidencyPolicy

LABELS = ["balance", "transfer", "oos"]


def _policy(**intents: float) -> RouterPolicy:
    return RouterPolicy(intents={k: IntentRule(threshold=v) for k, v in intents.items()})


def test_msp_overrides_on_an_ood_bundle_are_named_and_left_as_written() -> None:
    policy = _policy(balance=0.8)
    warning = threshold_scale_warning(policy, OOD_SCORE)
    assert warning is not None
    assert "balance=0.8" in warning and "'msp'" in warning and repr(OOD_SCORE) in warning
    assert "stricter" in warning and "docs/models.md" in warning
    # not rescaled: the override still decides, on the served score
    assert route(policy, "balance", 0.5, 0.07, "oos").reason == "out_of_scope"
    assert route(policy, "balance", 0.85, 0.07, "oos").threshold == 0.8


def test_no_warning_without_overrides_or_on_the_score_they_were_written_for() -> None:
    assert threshold_scale_warning(RouterPolicy(), OOD_SCORE) is None
    assert threshold_scale_warning(_policy(balance=0.8), MSP_SCORE) is None
    rederived = RouterPolicy(
        intents={"balance": IntentRule(threshold=0.3)}, threshold_score=OOD_SCORE
    )
    assert threshold_scale_warning(rederived, OOD_SCORE) is None
    # and the other way: overrides re-derived for the ood score on an MSP bundle
    reverse = threshold_scale_warning(rederived, MSP_SCORE)
    assert reverse is not None and "looser" in reverse


def test_a_policy_declares_its_score_in_toml_and_an_unknown_one_is_refused() -> None:
    policy = decode_config(
        {"threshold_score": OOD_SCORE, "intents": {"balance": {"threshold": 0.3}}},
        RouterPolicy,
        "router",
    )
    policy.validate_against(LABELS)
    assert policy.threshold_overrides() == {"balance": 0.3}
    with pytest.raises(ConfigError, match="threshold_score"):
        RouterPolicy(threshold_score="softmax").validate_against(LABELS)


def test_fleet_thresholds_are_overrides_too() -> None:
    resolved = resolve_config(
        {"version": 1, "thresholds": {"*": 0.6}},
        labels=LABELS,
        oos_label="oos",
        base_router=RouterPolicy(),
        base_residency=ResidencyPolicy(),
    )
    warning = threshold_scale_warning(resolved.router, OOD_SCORE)
    assert warning is not None and warning.startswith("2 per-intent threshold override(s)")


def test_the_warning_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aivos.edge.router"):
        said = warn_threshold_scale(_policy(balance=0.8, transfer=0.7), OOD_SCORE, "swap")
    assert said is not None
    assert [r.getMessage() for r in caplog.records] == [f"router thresholds (swap): {said}"]
    caplog.clear()
    assert warn_threshold_scale(_policy(balance=0.8), MSP_SCORE, "swap") is None
    assert not caplog.records


def test_rederive_keeps_the_share_of_queries_the_override_accepted() -> None:
    msp = [0.99, 0.95, 0.9, 0.85, 0.7, 0.6]
    served = [0.9, 0.4, 0.8, 0.2, 0.5, 0.1]  # another order and scale
    t = rederive_threshold(0.8, msp, served)  # the MSP override accepted 4 of 6
    assert t == 0.4
    assert sum(s >= t for s in served) == 4
    assert rederive_threshold(0.995, msp, served) == 1.0  # accepted none
    assert rederive_threshold(0.0, msp, served) == 0.1  # accepted all
    with pytest.raises(ValueError):
        rederive_threshold(0.5, msp, served[:3])
