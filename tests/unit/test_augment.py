"""Train-time augmentation: seeded, label-preserving noisy copies (cloud/modelbuild/augment)."""

from __future__ import annotations

import random

import pytest

from aivos.cloud.modelbuild.augment import augment_examples, noisy_text
from aivos.edge.intent.evaluate import perturb_typos
from aivos.shared.datasets import Example, load_examples
from aivos.shared.paths import clinc150_path

ROWS = [e for e in load_examples(clinc150_path()) if e.label != "oos"][:600]


def test_same_seed_same_copies_other_seed_other_copies() -> None:
    first = augment_examples(ROWS, 0.5, seed=13)
    assert first == augment_examples(ROWS, 0.5, seed=13)
    assert first != augment_examples(ROWS, 0.5, seed=14)


def test_copies_keep_labels_and_differ_from_their_source() -> None:
    sources = {e.text: e.label for e in ROWS}
    copies = augment_examples(ROWS, 1.0, seed=3)
    # Every row gets a copy unless noise could not change it (no word of 3+ letters).
    assert len(copies) >= 0.98 * len(ROWS)
    assert all(c.text not in sources for c in copies[:50])
    by_label = {e.label for e in ROWS}
    assert {c.label for c in copies} <= by_label


def test_ratio_sets_the_share_of_rows_copied() -> None:
    assert augment_examples(ROWS, 0.0) == []
    share = len(augment_examples(ROWS, 0.5, seed=5)) / len(ROWS)
    assert 0.4 < share < 0.6


def test_bad_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match="ratio"):
        augment_examples(ROWS, 1.5)


def test_noise_covers_each_kind_of_slip() -> None:
    rng = random.Random(0)
    text = "What is the weather in Paris? I do not know."
    outputs = [noisy_text(text, rng) for _ in range(300)]
    assert any("what's" in o.lower() for o in outputs)  # contraction
    assert any("don't" in o.lower() or "dont" in o.lower() for o in outputs)
    assert any("?" not in o and "." not in o for o in outputs)  # punctuation dropped
    assert any(o.isupper() for o in outputs)  # casing
    assert any(w not in text.lower() for o in outputs for w in o.lower().split())  # typos


def test_training_noise_is_not_the_evaluation_noise() -> None:
    texts = [e.text for e in ROWS[:200]]
    evaluation = perturb_typos(texts, 0.3, seed=13)
    training = [e.text for e in augment_examples([Example(t, "x") for t in texts], 1.0, 13)]
    assert not set(evaluation) & set(training) - set(texts)
