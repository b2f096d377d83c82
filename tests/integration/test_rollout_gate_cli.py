"""`aivos rollout start` with the quality gate, as an operator runs it: a bundle whose golden
queries fail starts nothing (the refusal is in the operator log); one that passes starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.shared.bundle import load_bundle_manifest


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rollout_start_refuses_a_bundle_that_fails_the_gate(
    tmp_path: Path, small_bundle: Path, small_clinc: Path
) -> None:
    data = tmp_path / "cloud"
    assert aivos("fleet", "add", "gate-a", "--data-dir", str(data)).returncode == 0
    version = load_bundle_manifest(small_bundle).bundle_version
    golden = tmp_path / "golden.jsonl"
    gate = [
        "--gate-heldout",
        f"{small_clinc}#test",
        "--gate-bundle",
        str(small_bundle),
        "--gate-baseline",
        str(small_bundle),
        "--gate-golden",
        str(golden),
    ]
    start = ["rollout", "start", "--bundle", version, "--all", "--data-dir", str(data)]

    # a golden query the bundle cannot satisfy: a balance question expected as a transfer
    question = "how much money is in my checking account"
    golden.write_text(json.dumps({"text": question, "label": "transfer"}))
    refused = aivos(*start, *gate)
    assert refused.returncode != 0
    assert "quality gate" in refused.stdout + refused.stderr
    assert "golden" in refused.stdout + refused.stderr

    # the same bundle with the golden query it really answers passes and starts
    golden.write_text(json.dumps({"text": question, "label": "balance"}))
    started = aivos(*start, *gate)
    assert started.returncode == 0, started.stderr

    reg = SqliteRegistry.open(data)
    try:
        actions = [a.action for a in reg.actions(20)]
        assert "rollout.refused" in actions
        assert [r.bundle_version for r in reg.rollouts()] == [version]
    finally:
        reg.close()

    # half a gate is a usage error, not a silent ungated rollout
    partial = aivos(*start, "--gate-heldout", f"{small_clinc}#test")
    assert partial.returncode == 2
    assert "--gate-bundle" in partial.stderr
