"""Hard-negative batches of the contrastive stage: confusable intents share a batch."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

import pytest
import torch
import torch.nn.functional as F

from aivos.cloud.modelbuild.contrastive import (
    ContrastiveConfig,
    class_neighbours,
    contrastive_tune,
    pair_batches,
)
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path


def test_class_neighbours_orders_classes_by_centroid_cosine() -> None:
    # classes 0 and 1 point the same way, 2 is orthogonal, 3 is opposite to 0
    directions = {0: [1.0, 0.0], 1: [0.9, 0.1], 2: [0.0, 1.0], 3: [-1.0, 0.1]}
    labels = torch.tensor([c for c in directions for _ in range(3)])
    emb = F.normalize(torch.tensor([directions[c] for c in labels.tolist()]), dim=-1)
    near = class_neighbours(emb, labels)
    assert set(near) == {0, 1, 2, 3}
    assert near[0] == [1, 2, 3]
    assert near[1][0] == 0 and near[3][-1] == 0
    assert all(c not in others for c, others in near.items())  # never itself


def test_hard_batches_pair_each_anchor_with_a_near_class() -> None:
    n = 60
    labels = [c for c in range(n) for _ in range(4)]
    # class c's nearest classes: c+1, c+2, c+3, then the rest
    neighbours = {c: [(c + k) % n for k in range(1, n)] for c in range(n)}
    config = ContrastiveConfig(
        steps=90, classes_per_batch=4, rows_per_class=2, seed=4, hard_negative_share=0.5
    )
    batches = pair_batches(labels, config, neighbours=neighbours)
    uniform = pair_batches(labels, dataclasses.replace(config, hard_negative_share=0.0))
    assert batches == pair_batches(labels, config, neighbours=neighbours)  # seeded
    assert uniform == pair_batches(labels, config)  # no neighbours: the uniform batches

    def near_links(batch: list[int]) -> int:
        classes = {labels[i] for i in batch}
        return sum(1 for a in classes for b in classes if (b - a) % n in (1, 2, 3))

    seen: Counter[int] = Counter()
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(batch) == len(set(batch)) == 8  # distinct rows
        assert sorted(Counter(classes).values()) == [2] * 4  # 4 distinct classes x 2 rows
        seen.update(set(classes))
    assert set(seen) == set(range(n))
    # both anchors bring one of their three nearest classes; uniform batches rarely do
    assert all(near_links(b) >= 2 for b in batches)
    assert sum(map(near_links, batches)) > 2 * sum(map(near_links, uniform))


@pytest.mark.filterwarnings("ignore")
def test_hard_negative_tuning_is_deterministic_and_differs_from_uniform() -> None:
    from aivos.cloud.modelbuild.finetune import keep_bottom_layers, load_base

    intents = ("balance", "transfer", "weather", "alarm", "timer", "translate")
    by_label: dict[str, list[str]] = defaultdict(list)
    for e in load_examples(f"{clinc150_path()}#train"):
        if e.label in intents and len(by_label[e.label]) < 4:
            by_label[e.label].append(e.text)
    texts = [t for label in intents for t in by_label[label]]
    labels = [i for i, label in enumerate(intents) for _ in by_label[label]]
    config = ContrastiveConfig(
        steps=6, classes_per_batch=4, seed=2, hard_negative_share=0.5, refresh_every=3
    )

    def top_weight(config: ContrastiveConfig) -> torch.Tensor:
        encoder, tokenizer = load_base()
        keep_bottom_layers(encoder, 2)
        assert contrastive_tune(encoder, tokenizer, texts, labels, config) > 0
        return encoder.encoder.layer[-1].output.dense.weight.detach().clone()

    hard = top_weight(config)
    assert torch.equal(hard, top_weight(config))
    assert not torch.equal(hard, top_weight(dataclasses.replace(config, hard_negative_share=0)))
