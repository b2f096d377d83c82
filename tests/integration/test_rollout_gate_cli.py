"""`aivos rollout start` with the quality gate, as an operator runs it: a bundle whose golden
queries fail starts nothing (the refusal is in the operator log); one that passes starts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from aivos.cloud.fleet.registry import SqliteRegistry
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, load_examples


def bundle_variant(src: Path, dest: Path, version: str, threshold: float | None = None) -> Path:
    """A copy of a real bundle under another version, optionally at another threshold (the
    manifest is not covered by its own file hashes): the same model at another operating
    point, which loses exactly the held-out rows whose confidence it now rejects. The
    threshold is set on the score the bundle serves (its out-of-scope score's too)."""
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["bundle_version"] = version
    if threshold is not None:
        manifest["threshold"] = threshold
        if manifest.get("ood"):
            manifest["ood"]["threshold"] = threshold
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def threshold_losing(bundle: Path, heldout: str, rows: int) -> tuple[float, int]:
    """(threshold, n): at that threshold `bundle` loses exactly n (`rows` or a little more)
    of the in-scope held-out rows it gets right, and gains none (a higher threshold only
    rejects more). On the score the bundle serves, as the gate judges it."""
    from aivos.cloud.fleet.quality_gate import ServedScorer

    examples = load_examples(heldout)
    got, conf = ServedScorer(bundle).predict([e.text for e in examples])
    right = sorted(
        float(c)
        for c, g, e in zip(conf, got, examples, strict=True)
        if e.label != OOS_LABEL and g == e.label
    )
    # a cut well between two rows (float noise between runs never moves a row across it):
    # at `rows`, else at the next count that has one
    for k in range(rows, min(rows + 3, len(right))):
        if right[k] - right[k - 1] > 1e-4:
            return (right[k - 1] + right[k]) / 2, k
    raise AssertionError(f"no clean cut near {rows} rows")


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
