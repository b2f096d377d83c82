"""The contrastive stage: its batches, its loss, and that it pulls same-intent rows together
on the real MiniLM encoder (two layers kept, so it stays quick)."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from aivos.cloud.modelbuild.contrastive import (
    ContrastiveConfig,
    contrastive_tune,
    pair_batches,
    supcon_loss,
)
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path

_INTENTS = ("balance", "weather", "alarm", "translate", "timer", "jump_start")


def test_pair_batches_take_distinct_classes_and_skip_what_cannot_pair() -> None:
    # class 0..4 with 5 rows each, class 5 a single row, class 9 skipped (the oos class)
    labels = [c for c in range(5) for _ in range(5)] + [5] + [9] * 6
    config = ContrastiveConfig(steps=40, classes_per_batch=3, rows_per_class=2, seed=3)
    batches = pair_batches(labels, config, skip_label=9)
    assert len(batches) == 40
    seen: Counter[int] = Counter()
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(batch) == len(set(batch)) == 6  # distinct rows
        assert sorted(Counter(classes).values()) == [2, 2, 2]  # 3 classes x 2 rows
        seen.update(set(classes))
    assert set(seen) == {0, 1, 2, 3, 4}  # no singleton, no skipped class
    assert max(seen.values()) - min(seen.values()) <= 1  # round-robin: evenly seen
    assert batches == pair_batches(labels, config, skip_label=9)  # seeded
    assert pair_batches([0, 1, 2], config) == []  # nothing can pair


def test_supcon_loss_rewards_same_class_neighbours() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    aligned = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=-1)
    crossed = aligned[[0, 2, 1, 3]]  # same points, wrong pairs
    good = supcon_loss(aligned, labels, 0.1)
    bad = supcon_loss(crossed, labels, 0.1)
    assert good < 0.05 < bad
    # two rows per class: each row's only positive, softmax over the other three rows
    sim = aligned @ aligned.T / 0.1
    expected = -torch.stack(
        [
            sim[i, j] - torch.logsumexp(sim[i][torch.arange(4) != i], 0)
            for i, j in ((0, 1), (1, 0), (2, 3), (3, 2))
        ]
    ).mean()
    assert torch.isclose(good, expected, atol=1e-5)


def _margin(
    encoder: torch.nn.Module, tokenizer: object, texts: list[str], labels: list[int]
) -> float:
    """Mean same-class cosine minus mean different-class cosine."""
    encoder.eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")  # type: ignore[operator]
        hidden = encoder(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        emb = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb @ emb.T
    same = torch.tensor(labels)[:, None] == torch.tensor(labels)[None, :]
    off_diag = ~torch.eye(len(texts), dtype=torch.bool)
    return float(sim[same & off_diag].mean() - sim[~same].mean())


@pytest.mark.filterwarnings("ignore")
def test_contrastive_tune_pulls_intents_apart_and_is_deterministic() -> None:
    from aivos.cloud.modelbuild.finetune import keep_bottom_layers, load_base

    by_label: dict[str, list[str]] = defaultdict(list)
    for e in load_examples(f"{clinc150_path()}#train"):
        if e.label in _INTENTS and len(by_label[e.label]) < 6:
            by_label[e.label].append(e.text)
    texts = [t for label in _INTENTS for t in by_label[label]]
    labels = [i for i, label in enumerate(_INTENTS) for _ in by_label[label]]
    config = ContrastiveConfig(steps=12, classes_per_batch=4, lr=1e-4, seed=7)

    def tuned(config: ContrastiveConfig) -> tuple[Any, object, float]:
        encoder, tokenizer = load_base()
        keep_bottom_layers(encoder, 2)
        loss = contrastive_tune(encoder, tokenizer, texts, labels, config)
        return encoder, tokenizer, loss

    base, tokenizer = load_base()
    keep_bottom_layers(base, 2)
    before = _margin(base, tokenizer, texts, labels)
    encoder_a, _, loss_a = tuned(config)
    encoder_b, _, loss_b = tuned(config)
    assert loss_a == loss_b > 0
    for pa, pb in zip(encoder_a.parameters(), encoder_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert _margin(encoder_a, tokenizer, texts, labels) > before + 0.02
    # embeddings stay frozen; with frozen_layers=1 the bottom layer does too
    frozen, _, _ = tuned(dataclasses.replace(config, frozen_layers=1))
    assert torch.equal(
        frozen.encoder.layer[0].output.dense.weight, base.encoder.layer[0].output.dense.weight
    )
    assert torch.equal(
        encoder_a.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight
    )
    assert not torch.equal(
        encoder_a.encoder.layer[0].output.dense.weight, base.encoder.layer[0].output.dense.weight
    )
