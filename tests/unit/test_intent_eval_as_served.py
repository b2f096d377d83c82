"""`aivos intents eval` classifies each query alone by default, as the edge serves a lone
query (shared/as_served.py); batching is an option. Real small bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aivos.edge.intent.cli import eval_cmd
from aivos.edge.intent.evaluate import evaluate
from aivos.edge.intent.runtime import IntentModel
from aivos.shared.datasets import OOS_LABEL, load_examples
from tests.unit.test_calibrate_as_served import count_runs

pytestmark = pytest.mark.slow  # builds the session's small bundle


def test_eval_classifies_each_query_alone(
    small_bundle: Path, small_clinc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = IntentModel.load(small_bundle, spelling=False)
    assert model.ood is not None  # scored on the served ood score, the batch-sensitive one
    val = load_examples(f"{small_clinc}#val")
    alone = [model.classify(e.text) for e in val]

    rows = count_runs(monkeypatch)
    report = evaluate(model, val, latency_samples=0)
    assert rows == [1] * len(val)
    assert report.batch_size == 1
    # and so its figures are the lone queries' decisions
    pairs = list(zip(val, alone, strict=True))
    ins = [p.intent == e.label and p.in_scope for e, p in pairs if e.label != OOS_LABEL]
    oos = [not p.in_scope for e, p in pairs if e.label == OOS_LABEL]
    assert (report.n_in_scope, report.n_oos) == (len(ins), len(oos))
    assert report.in_scope_accuracy == sum(ins) / len(ins)
    assert report.oos_recall == sum(oos) / len(oos)

    rows.clear()
    batched = evaluate(model, val, batch_size=64, latency_samples=0)
    assert batched.batch_size == 64 and max(rows) > 1 and sum(rows) == len(val)


def test_cli_batch_size_option(
    small_bundle: Path, small_clinc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = f"{small_clinc}#val"
    n = len(load_examples(data))
    rows = count_runs(monkeypatch)
    base = ["--model", str(small_bundle), "--data", data, "--json", "--no-spelling"]
    result = CliRunner().invoke(eval_cmd, base)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["batch_size"] == 1
    # the start-up probe, one run per query, then the latency sample: all single rows
    assert rows == [1] * (1 + n + min(n, 200))
    rows.clear()
    result = CliRunner().invoke(eval_cmd, [*base, "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["batch_size"] == 16
    assert max(rows) > 1
    result = CliRunner().invoke(eval_cmd, [*base, "--batch-size", "0"])
    assert result.exit_code == 2
