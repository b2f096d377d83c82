"""The fault campaign of issue 12 in CI size (benchmarks/fault_campaign.py runs it at full
size: 200 SIGKILL rounds, minutes of link flapping; figures in docs/faults.md).

Real `aivos edge serve` processes under the mixed load of tests/fixtures/mixed_load.py:
plain and streamed infer, async jobs, knowledge writes, session facts, signed webhook
events that start a workflow. What a client was acknowledged must survive every fault."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fault_campaign import disk_campaign, flap_campaign, kill_campaign

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("FAULT_ROUNDS", "10"))


def assert_nothing_lost(result: dict[str, Any]) -> None:
    for kind in ("audit", "jobs", "runs", "facts", "docs"):
        assert result[f"lost_{kind}"] == [], f"acknowledged {kind} lost: {result}"
    assert result["stuck_jobs"] == [] and result["stuck_runs"] == [], result
    assert result["integrity_check"] == "ok"
    assert result["audit_verify_ok"], result["audit_verify"]
    assert result["audit_rows"] >= result["acknowledged"]["infer"]
    assert result["server_errors"] == 0, (result["statuses"], result["log_errors"])


def test_sigkill_rounds_under_mixed_load_lose_nothing(tmp_path: Path, small_bundle: Path) -> None:
    result = kill_campaign(tmp_path, small_bundle, ROUNDS, log=lambda _: None)
    acked = result["acknowledged"]
    # the load really was mixed (every kind acknowledged at least once over the rounds)
    assert acked["infer"] >= ROUNDS and acked["sse"] > 0 and acked["jobs"] > 0, acked
    assert acked["facts"] > 0 and acked["docs"] > 0 and acked["runs"] > 0, acked
    assert_nothing_lost(result)


def test_a_full_disk_under_load_answers_507_and_recovers_without_restart(
    tmp_path: Path, small_bundle: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        result = disk_campaign(tmp_path, small_bundle, full_507s=10)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"mount -t tmpfs is not permitted here: {exc}")
    full = result["statuses_while_full"]
    assert sum(n for k, n in full.items() if k.endswith(" 507")) >= 10, full
    assert result["readyz_when_full"] == 503
    assert result["restarted"] is False and result["readyz_after"] == 200
    # a stream never ends silently: `done`, or an `error` event when it cannot be recorded
    assert result["statuses"].get("sse cut", 0) == 0, result["statuses"]
    assert_nothing_lost(result)


def test_a_flapping_uplink_loses_and_duplicates_nothing(tmp_path: Path, small_bundle: Path) -> None:
    result = flap_campaign(tmp_path, small_bundle, flap_s=20, period_s=2)
    assert result["link_cuts"] >= 3, result
    assert result["cloud_lost"] == [] and result["cloud_unexpected"] == [], result
    assert result["cloud_duplicated"] == 0 and result["cloud_duplicated_requests"] == 0
    assert result["acked_not_in_cloud"] == []
    assert result["cloud_records"] == result["outbox_records"] > 0
    assert_nothing_lost(result)
