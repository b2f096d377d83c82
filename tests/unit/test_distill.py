"""Distillation towards the full-depth base encoder (`TrainConfig.distill_weight`): its loss,
its pseudo-passages, and that a shallow student trained with it stays closer to the stock
model's embedding than one trained without (real MiniLM, two layers kept, a few steps)."""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from aivos.cloud.modelbuild.finetune import (
    DISTILL_PASSAGE_MAX_LENGTH,
    DISTILL_PASSAGE_ROWS,
    TrainConfig,
    distill_loss,
    pseudo_passages,
)
from aivos.shared.datasets import load_examples
from aivos.shared.paths import clinc150_path

_INTENTS = ("balance", "weather", "alarm", "translate")


def _rows(split: str, n: int) -> tuple[list[str], list[int]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for e in load_examples(f"{clinc150_path()}#{split}"):
        if e.label in _INTENTS and len(by_label[e.label]) < n:
            by_label[e.label].append(e.text)
    texts = [t for label in _INTENTS for t in by_label[label]]
    ids = [i for i, label in enumerate(_INTENTS) for _ in by_label[label]]
    return texts, ids


def test_distill_is_off_by_default() -> None:
    assert TrainConfig().distill_weight == 0.0


def test_distill_loss_is_one_minus_cosine() -> None:
    a = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    assert distill_loss(a, a).item() < 1e-6  # same direction: nothing to pay
    b = torch.tensor([[0.0, 1.0], [-1.0, -1.0]])  # orthogonal (1) and opposite (2)
    assert torch.isclose(distill_loss(a, b), torch.tensor(1.5))
    assert torch.isclose(distill_loss(a, 3 * a), torch.tensor(0.0), atol=1e-6)  # scale-free


def test_pseudo_passages_join_training_rows_and_are_seeded() -> None:
    texts = [f"row {i}" for i in range(20)]
    passages = pseudo_passages(texts, 30, seed=4)
    assert len(passages) == 30
    assert passages == pseudo_passages(texts, 30, seed=4)
    assert passages != pseudo_passages(texts, 30, seed=5)
    lo, hi = DISTILL_PASSAGE_ROWS
    for p in passages:
        parts = p.split(". ")
        assert lo <= len(parts) <= hi
        assert len(set(parts)) == len(parts)  # distinct rows
        assert all(part.rstrip(".") in texts for part in parts)


def _mean_cos_to_teacher(distill_weight: float) -> tuple[float, float]:
    from aivos.cloud.modelbuild.finetune import _encode_texts, load_base, train_intent_model

    texts, ids = _rows("train", 8)
    config = TrainConfig(
        epochs=6,
        batch_size=8,
        layers=2,
        frozen_layers=0,
        seed=5,
        distill_weight=distill_weight,
        distill_passages=2,
    )
    net, tokenizer = train_intent_model(texts, ids, len(_INTENTS), config)
    assert len(net.encoder.encoder.layer) == 2
    # unseen queries and passages: closeness that carries beyond the rows trained on
    held_out, _ = _rows("val", 5)
    passages = pseudo_passages(held_out, 10, seed=99)
    teacher, _ = load_base()  # the stock encoder at full depth
    out = []
    for batch, max_length in ((held_out, 64), (passages, DISTILL_PASSAGE_MAX_LENGTH)):
        student = _encode_texts(net.encoder, tokenizer, batch, max_length)
        stock = _encode_texts(teacher, tokenizer, batch, max_length)
        out.append(F.cosine_similarity(student, stock, dim=-1).mean().item())
    return out[0], out[1]


def test_distillation_keeps_a_shallow_student_close_to_the_full_depth_teacher() -> None:
    plain_queries, plain_passages = _mean_cos_to_teacher(0.0)
    distilled_queries, distilled_passages = _mean_cos_to_teacher(5.0)
    assert distilled_queries > plain_queries + 0.05
    assert distilled_passages > plain_passages + 0.05


def test_row_loss_gets_every_row_once_per_epoch_with_its_batch_logits() -> None:
    from aivos.cloud.modelbuild.finetune import train_intent_model

    texts, ids = _rows("train", 4)
    seen: list[int] = []

    def record(rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        assert logits.shape == (len(rows), len(_INTENTS))
        seen.extend(rows)
        return logits.sum() * 0.0

    config = TrainConfig(epochs=2, batch_size=8, layers=1, frozen_layers=0, seed=5)
    train_intent_model(texts, ids, len(_INTENTS), config, row_loss=record)
    assert sorted(seen) == sorted(list(range(len(texts))) * 2)


def test_row_loss_is_trained_on() -> None:
    from aivos.cloud.modelbuild.finetune import _embed_all, train_intent_model

    texts, ids = _rows("train", 4)

    def towards_the_first_label(rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        return -10.0 * F.log_softmax(logits, dim=-1)[:, 0].mean()

    config = TrainConfig(epochs=10, batch_size=8, layers=1, frozen_layers=0, seed=5)
    net, tokenizer = train_intent_model(
        texts, ids, len(_INTENTS), config, row_loss=towards_the_first_label
    )
    with torch.no_grad():
        predicted = net.logits(_embed_all(net, tokenizer, texts, 64)).argmax(-1).tolist()
    assert predicted.count(0) > len(texts) // 2  # only a quarter of the rows are label 0
