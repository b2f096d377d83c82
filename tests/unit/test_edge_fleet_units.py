"""Edge fleet pure logic: health-guard verdicts, remote config resolution, bundle pointer."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivos.edge.fleet import ActivePointer, FleetPaths, GuardOptions, active_bundle_dir, judge
from aivos.edge.fleet.config_apply import resolve_config
from aivos.edge.router import RouterPolicy
from aivos.edge.stats import StatsSnapshot
from aivos.shared.errors import ConfigError
from aivos.shared.residency import ResidencyPolicy, recommended_policy

LABELS = ["balance", "transfer", "oos"]


def snap(local: int = 0, escalate: int = 0, errors: int = 0) -> StatsSnapshot:
    decisions = {k: v for k, v in (("local", local), ("escalate", escalate)) if v}
    return StatsSnapshot(60.0, local + escalate, 1.0, errors, decisions, 1.0, 2.0)


def resolve(merged: dict) -> object:
    return resolve_config(
        merged,
        labels=LABELS,
        oos_label="oos",
        base_router=RouterPolicy(),
        base_residency=recommended_policy(),
    )


def test_guard_waits_for_enough_requests() -> None:
    verdict = judge(GuardOptions(min_requests=10), snap(local=20), snap(escalate=9))
    assert not verdict.breached and verdict.requests == 9


def test_guard_trips_on_error_rate() -> None:
    verdict = judge(GuardOptions(min_requests=10, max_error_rate=0.1), snap(), snap(8, 0, 3))
    assert verdict.breached and "error rate" in verdict.reason


def test_guard_compares_escalation_with_the_previous_bundle() -> None:
    opts = GuardOptions(min_requests=10, max_escalation_ratio=2.0, min_escalation_delta=0.1)
    baseline = snap(local=80, escalate=20)  # 0.2
    assert not judge(opts, baseline, snap(local=65, escalate=35)).breached  # 0.35 <= 0.4
    verdict = judge(opts, baseline, snap(local=50, escalate=50))  # 0.5 > 0.4
    assert verdict.breached and "previous bundle 0.200" in verdict.reason
    # without a baseline only the absolute cap applies
    assert not judge(opts, snap(local=3), snap(escalate=50)).breached
    capped = GuardOptions(min_requests=10, max_escalation_rate=0.9)
    assert judge(capped, snap(local=3), snap(escalate=50)).breached


def test_config_thresholds_and_router_resolution() -> None:
    r = resolve(
        {
            "version": 4,
            "router": {"intents": {"transfer": {"decision": "escalate", "threshold": 0.3}}},
            "thresholds": {"*": 0.5, "transfer": 0.9},
            "bundle_version": "v9",
        }
    )
    assert r.version == 4 and r.bundle_version == "v9"  # type: ignore[attr-defined]
    intents = r.router.intents  # type: ignore[attr-defined]
    assert intents["balance"].threshold == 0.5 and "oos" not in intents
    assert intents["transfer"].threshold == 0.9 and intents["transfer"].decision == "escalate"
    assert r.heartbeat_interval_s is None  # type: ignore[attr-defined]
    assert r.residency == recommended_policy()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("merged", "path"),
    [
        ({"router": {"intents": {"nope": {"decision": "local"}}}}, "router.intents.nope"),
        ({"thresholds": {"balance": 1.5}}, "thresholds.balance"),
        ({"thresholds": {"nope": 0.5}}, "thresholds.nope"),
        ({"residency": {"classes": {"audit": "sometimes"}}}, "residency.classes.audit"),
        ({"heartbeat_interval_s": 0}, "heartbeat_interval_s"),
        ({"bundle_version": "../x"}, "bundle_version"),
        ({"surprise": 1}, "config"),
    ],
)
def test_invalid_configs_name_the_key(merged: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(merged)
    assert err.value.path == path


def test_residency_override_replaces_the_site_policy() -> None:
    r = resolve({"residency": {"region": "eu", "classes": {"telemetry": "local-only"}}})
    assert r.residency == ResidencyPolicy(region="eu", classes={"telemetry": "local-only"})  # type: ignore[attr-defined]


def test_active_pointer_round_trip(tmp_path: Path) -> None:
    paths = FleetPaths(tmp_path)
    assert active_bundle_dir(tmp_path) is None
    bundle = paths.bundle_dir("v2")
    paths.write_active(ActivePointer(str(bundle), "v2", "/old"))
    assert active_bundle_dir(tmp_path) is None  # pointer to a missing bundle is ignored
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    assert active_bundle_dir(tmp_path) == bundle
    assert paths.read_active() == ActivePointer(str(bundle), "v2", "/old")
    paths.active.write_text("garbage")
    assert paths.read_active() is None
