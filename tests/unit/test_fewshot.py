"""The few-shot recipe: chosen for small data, deterministic, and its bundle works (real torch)."""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from aivos.cloud.modelbuild import fewshot
from aivos.cloud.modelbuild.fewshot import (
    CENTROID_MIX,
    CONTRASTIVE_STEPS,
    MAX_ROWS_PER_INTENT,
    few_shot_config,
    is_few_shot,
    rows_per_intent,
)
from aivos.shared.datasets import Example, load_examples
from aivos.shared.paths import clinc150_path

_INTENTS = ("balance", "weather", "alarm", "translate")
_ROWS = 8


def _few_rows(split: str = "train", n: int = _ROWS) -> list[Example]:
    """`n` CLINC150 rows of `split` for each of four unrelated intents."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for e in load_examples(f"{clinc150_path()}#{split}"):
        if e.label in _INTENTS and len(by_label[e.label]) < n:
            by_label[e.label].append(e)
    return [e for label in _INTENTS for e in by_label[label]]


def _write_csv(rows: list[Example], path: Path) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *((e.text, e.label) for e in rows)])
    return path


def test_rows_per_intent_counts_in_scope_rows_only() -> None:
    labels = ["a"] * 10 + ["b"] * 12 + ["c"] * 40 + ["oos"] * 500
    assert rows_per_intent(labels) == 12
    assert is_few_shot(labels)
    assert not is_few_shot(["a"] * (MAX_ROWS_PER_INTENT + 1) + ["b"] * 50 + ["oos"] * 3)
    assert not is_few_shot(["oos"] * 5)


def test_planned_epochs_reach_min_steps_within_the_cap() -> None:
    from aivos.cloud.modelbuild.finetune import TrainConfig, planned_epochs

    config = TrainConfig(epochs=2, batch_size=32, min_steps=240, max_epochs=20)
    assert planned_epochs(TrainConfig(epochs=2), 1500) == 2  # no minimum: as asked
    steps_per_epoch = 1500 // 32 + 1
    epochs = planned_epochs(config, 1500)
    assert epochs * steps_per_epoch >= config.min_steps > (epochs - 1) * steps_per_epoch
    assert planned_epochs(config, 10) == config.max_epochs  # tiny data: capped
    assert planned_epochs(dataclasses.replace(config, epochs=0), 1500) == 0  # frozen stays


def test_few_shot_config_turns_on_the_contrastive_stage_and_the_blend() -> None:
    from aivos.cloud.modelbuild.finetune import TrainConfig

    config = few_shot_config(TrainConfig(epochs=2, seed=3))
    assert (config.contrastive_steps, config.centroid_mix) == (CONTRASTIVE_STEPS, CENTROID_MIX)
    assert CONTRASTIVE_STEPS > 0 and 0 < CENTROID_MIX <= 1
    assert (config.epochs, config.seed) == (2, 3)  # the rest as asked


def test_few_shot_training_is_deterministic_and_mixes_the_head() -> None:
    from aivos.cloud.modelbuild.finetune import TrainConfig, train_intent_model

    rows = _few_rows()
    texts = [e.text for e in rows]
    ids = [_INTENTS.index(e.label) for e in rows]
    # Two layers and a few steps keep it quick; the recipe is what is under test.
    config = dataclasses.replace(
        few_shot_config(TrainConfig(epochs=1, batch_size=16, seed=5, layers=2)),
        contrastive_steps=4,
    )

    def train(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
        net, _ = train_intent_model(texts, ids, len(_INTENTS), config)
        top = net.encoder.encoder.layer[-1].output.dense.weight.detach().numpy().copy()
        return net.folded_head().weight, top

    head_a, top_a = train(config)
    head_b, top_b = train(config)
    np.testing.assert_array_equal(head_a, head_b)
    np.testing.assert_array_equal(top_a, top_b)
    head_plain, top_plain = train(dataclasses.replace(config, centroid_mix=0.0))
    np.testing.assert_array_equal(top_a, top_plain)  # the same fine-tuning ...
    assert not np.allclose(head_a, head_plain)  # ... and a different, blended head
    _, top_no_pairs = train(dataclasses.replace(config, contrastive_steps=0))
    assert not np.allclose(top_a, top_no_pairs)  # the contrastive stage moved the encoder


@pytest.mark.filterwarnings("ignore")
def test_small_data_build_uses_the_recipe_and_knows_its_examples(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aivos.cloud.modelbuild.build import build_bundle
    from aivos.edge.intent import IntentModel

    monkeypatch.setattr(fewshot, "CONTRASTIVE_STEPS", 20)  # 4 intents pair up quickly
    rows = _few_rows()
    with caplog.at_level(logging.INFO, logger="aivos.cloud.modelbuild.build"):
        manifest = build_bundle(
            _write_csv(rows, tmp_path / "train.csv"),
            tmp_path / "bundle",
            _write_csv(_few_rows("val", 3), tmp_path / "val.csv"),
            epochs=2,
            layers=2,  # a shallower encoder keeps the build quick; the recipe is the same
            augment_ratio=0,
            generic_negatives=False,
            console=Console(quiet=True),
        )

    assert f"few-shot recipe: {_ROWS} rows per intent" in caplog.text
    assert manifest.training.n_train == len(rows)
    model = IntentModel.load(tmp_path / "bundle")
    assert sorted(model.labels) == sorted(_INTENTS)
    predicted = [p.intent for p in model.classify_batch([e.text for e in rows])]
    correct = sum(p == e.label for p, e in zip(predicted, rows, strict=True))
    assert correct >= 0.9 * len(rows), list(zip(predicted, [e.label for e in rows], strict=True))
