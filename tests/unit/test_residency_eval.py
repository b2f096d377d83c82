"""The PII benchmark scripts run end to end and meet the recall target on a small set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generator_and_evaluator_meet_recall_target(tmp_path: Path) -> None:
    data, out = tmp_path / "set.jsonl", tmp_path / "eval.json"
    gen = [
        sys.executable,
        "benchmarks/pii_dataset.py",
        "--n",
        "400",
        "--seed",
        "11",
        "--out",
        str(data),
    ]
    subprocess.run(gen, cwd=ROOT, check=True, capture_output=True)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(records) == 400
    rec = next(r for r in records if r["spans"])
    span = rec["spans"][0]
    assert rec["text"][span["start"] : span["end"]] == span["value"]
    ev = [
        sys.executable,
        "benchmarks/pii_eval.py",
        "--data",
        str(data),
        "--no-perf",
        "--json-out",
        str(out),
    ]
    subprocess.run(ev, cwd=ROOT, check=True, capture_output=True)
    quality = json.loads(out.read_text())["quality"]
    for entity, stats in quality["per_entity"].items():
        assert stats["support"] > 0, entity
        assert stats["recall"] >= 0.98, (entity, stats)
        assert stats["leaks"] == 0, (entity, stats)
    assert quality["distractors_masked"] == 0


def test_generator_is_deterministic(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        cmd = [
            sys.executable,
            "benchmarks/pii_dataset.py",
            "--n",
            "50",
            "--seed",
            "3",
            "--out",
            str(path),
        ]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        outs.append(path.read_text())
    assert outs[0] == outs[1]
