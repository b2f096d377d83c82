"""Generic negatives for in-scope-only training data (cloud/modelbuild/negatives).

The embedding here is a bag of hashed words, a real if crude sentence embedding, so the
centroid rule is exercised without loading MiniLM; the real encoder runs in
tests/integration/test_intents_byo.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from aivos.cloud.modelbuild.negatives import generic_negatives
from aivos.shared.datasets import Example, load_examples
from aivos.shared.paths import clinc150_path

POOL = load_examples(clinc150_path())


def _bag_of_words(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(texts), 512), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.encode()) % 512] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-9)


def _rows(label: str, rename: str | None = None, n: int = 30) -> list[Example]:
    return [Example(e.text, rename or label) for e in POOL if e.label == label][:n]


USER = _rows("balance", "how_much_money") + _rows("weather") + _rows("alarm", "wake_me")


def test_covered_intents_are_skipped_by_name_and_by_centroid() -> None:
    neg = generic_negatives(USER, embed=_bag_of_words)
    # `weather` by name; `balance` and `alarm` under other names by their centroids.
    assert neg.skipped["weather"] == 1.0
    assert neg.skipped["balance"] >= 0.75 and neg.skipped["alarm"] >= 0.75
    used = set(neg.intents) | set(neg.heldout_intents)
    assert not used & {"weather", "balance", "alarm"}
    user_texts = {e.text for e in USER}
    assert not user_texts & {e.text for e in neg.train}


def test_held_out_negatives_are_never_trained_on() -> None:
    neg = generic_negatives(USER, embed=_bag_of_words)
    assert all(e.label == "oos" for e in neg.train + neg.heldout)
    assert not {e.text for e in neg.train} & {e.text for e in neg.heldout}
    assert not set(neg.intents) & set(neg.heldout_intents)
    assert neg.heldout_intents and neg.n_heldout_oos_rows == 30  # 30% of CLINC150's 100
    assert neg.n_oos_rows == 70
    assert 400 <= len(neg.train) <= 600  # the floor of the budget for 90 user rows


def test_excluded_intents_stay_out_of_the_pool() -> None:
    banking = ["transfer", "pin_change", "freeze_account"]
    neg = generic_negatives(USER, embed=_bag_of_words, exclude=banking)
    assert neg.excluded == sorted(banking)
    assert not set(banking) & (set(neg.intents) | set(neg.heldout_intents))
    banking_texts = {e.text for e in POOL if e.label in banking}
    assert not banking_texts & {e.text for e in neg.train + neg.heldout}


def test_seeded() -> None:
    a = generic_negatives(USER, embed=_bag_of_words, seed=1)
    assert a == generic_negatives(USER, embed=_bag_of_words, seed=1)
    assert a.train != generic_negatives(USER, embed=_bag_of_words, seed=2).train
