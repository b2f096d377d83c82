"""SetFit-style contrastive stage: pull same-intent rows together in the encoder's space.

With ~10 rows per intent a cross-entropy head learns those rows, while the encoder barely
moves in the few steps there are. A contrastive stage uses the rows as *pairs* instead:
10 rows give 45 positive pairs per intent, and every other intent in the batch is a
negative. Each step takes `classes_per_batch` distinct intents with `rows_per_class` rows
each and minimises the supervised contrastive loss (Khosla et al. 2020; with two rows per
class it is the in-batch-negatives / MultipleNegativesRanking loss SetFit offers) over the
mean-pooled, L2-normalised embeddings: the geometry the bundle's head and retrieval use.
The head is trained afterwards, on the moved encoder (`finetune.train_intent_model`).

`skip_label` can leave one class out of the pairs (an `oos` class is a bag of unrelated
requests). The few-shot recipe does not use it: on CLINC150 val, pairing the generic
negatives too measured the same or better (93.2% vs 93.1%, docs/models.md).

`hard_negative_share` fills part of each batch with the nearest classes (by centroid cosine
in the encoder being tuned, re-measured every `refresh_every` steps) of the round-robin
ones, so the in-batch negatives are the confusable intents. Off by default: on CLINC150 val
(10 shots) it helped the trained head but not the prototype head the recipe ships
(docs/models.md, "Few-shot training").
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ContrastiveConfig",
    "class_neighbours",
    "contrastive_tune",
    "pair_batches",
    "supcon_loss",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastiveConfig:
    steps: int = 200
    classes_per_batch: int = 32
    rows_per_class: int = 2
    lr: float = 3e-5
    temperature: float = 0.05  # SetFit / sentence-transformers' MNRL use scale 20
    frozen_layers: int = 0  # bottom transformer layers kept frozen (embeddings always are)
    max_length: int = 64
    seed: int = 13
    # Share of each batch's classes that are the nearest classes (by centroid cosine in the
    # current encoder) of the others, so in-batch negatives are the confusable intents
    # rather than random ones; re-measured every `refresh_every` steps. 0 = uniform batches.
    hard_negative_share: float = 0.0
    refresh_every: int = 100


class _BatchPlan:
    """Draws the row indices of each step (see `pair_batches`); keeps its random state and
    round-robin queue across calls, so batches can be drawn a segment at a time."""

    def __init__(
        self, label_ids: Sequence[int], config: ContrastiveConfig, skip_label: int | None
    ) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(label_ids):
            if label != skip_label:
                by_class[label].append(i)
        self.by_class = by_class
        self.classes = sorted(c for c, rows in by_class.items() if len(rows) >= 2)
        self.per_batch = min(config.classes_per_batch, len(self.classes))
        self.queue: list[int] = []

    def _next_class(self, chosen: list[int]) -> int:
        while True:
            if not self.queue:  # a new round: every class once, this batch's classes last
                rest = [c for c in self.classes if c not in chosen]
                self.rng.shuffle(rest)
                self.queue = [*chosen, *rest]
            c = self.queue.pop()
            if c not in chosen:
                return c

    def batch(self, neighbours: dict[int, list[int]] | None = None) -> list[int]:
        chosen: list[int] = []
        n_hard = round(self.config.hard_negative_share * self.per_batch) if neighbours else 0
        n_anchor = self.per_batch - n_hard
        while len(chosen) < n_anchor:
            chosen.append(self._next_class(chosen))
        if neighbours:
            for anchor in list(chosen):
                if len(chosen) >= self.per_batch:
                    break
                # one of the anchor's three nearest classes not in the batch yet
                near = [c for c in neighbours.get(anchor, []) if c not in chosen][:3]
                if near:
                    chosen.append(self.rng.choice(near))
            while len(chosen) < self.per_batch:
                chosen.append(self._next_class(chosen))
        rows = []
        for c in chosen:
            own = self.by_class[c]
            rows.extend(self.rng.sample(own, min(self.config.rows_per_class, len(own))))
        return rows


def pair_batches(
    label_ids: Sequence[int],
    config: ContrastiveConfig,
    skip_label: int | None = None,
    neighbours: dict[int, list[int]] | None = None,
) -> list[list[int]]:
    """Row indices for each step: `classes_per_batch` distinct classes, `rows_per_class`
    distinct rows of each. Classes are drawn round-robin from a reshuffled order so every
    class is seen equally often; classes with a single row cannot form a pair and sit out.
    With `neighbours` (class -> classes, nearest first) and a `hard_negative_share`, that
    share of each batch is one of the three nearest classes of a round-robin class."""
    plan = _BatchPlan(label_ids, config, skip_label)
    if len(plan.classes) < 2:
        return []
    return [plan.batch(neighbours) for _ in range(config.steps)]


def class_neighbours(emb: torch.Tensor, labels: torch.Tensor) -> dict[int, list[int]]:
    """For each class present in `labels`: the other classes, nearest centroid first
    (cosine of the L2-normalised mean of the class's normalised embeddings)."""
    classes = sorted(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    rows = torch.tensor([index[c] for c in labels.tolist()])
    centroids = torch.zeros(len(classes), emb.shape[1]).index_add_(0, rows, emb)
    centroids = F.normalize(centroids, dim=-1)
    sim = centroids @ centroids.T
    sim.fill_diagonal_(float("-inf"))
    order = sim.argsort(dim=1, descending=True)
    return {c: [classes[j] for j in order[i, :-1].tolist()] for i, c in enumerate(classes)}


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss over normalised `emb`: for each row, the mean
    log-probability of its same-class rows among all other rows of the batch."""
    sim = emb @ emb.T / temperature
    n = emb.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positive.sum(1)
    has_pos = n_pos > 0
    pos_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def _mean_pool(encoder: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


def _embed(encoder: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """Mean-pooled, normalised embeddings of `texts` (eval mode, no gradient), in order."""
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), int(encoder.config.hidden_size))
    with torch.no_grad():
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out[idx] = _mean_pool(
                encoder, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
            )
    return out


def contrastive_tune(
    encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    label_ids: Sequence[int],
    config: ContrastiveConfig,
    skip_label: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Fine-tune `encoder` (a transformers BERT-style model) in place; returns the mean loss
    of the last tenth of the steps (0.0 when there were no pairs to train on)."""
    torch.manual_seed(config.seed)
    plan = _BatchPlan(label_ids, config, skip_label)
    if len(plan.classes) < 2 or config.steps <= 0:
        return 0.0
    hard = config.hard_negative_share > 0
    labels = torch.tensor(list(label_ids), dtype=torch.long)
    in_pairs = set(plan.classes)
    paired = [i for i, label in enumerate(label_ids) if label in in_pairs]
    frozen = [encoder.embeddings, *encoder.encoder.layer[: config.frozen_layers]]
    frozen_ids = {id(p) for module in frozen for p in module.parameters()}
    params = [p for p in encoder.parameters() if id(p) not in frozen_ids]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    total = config.steps
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup + 1)))
    )
    losses: list[float] = []
    was_training = encoder.training
    neighbours: dict[int, list[int]] | None = None
    for step in range(total):
        if hard and step % max(1, config.refresh_every) == 0:
            emb = _embed(encoder, tokenizer, [texts[i] for i in paired], config.max_length)
            neighbours = class_neighbours(emb, labels[paired])
        encoder.train()
        idx = plan.batch(neighbours)
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=config.max_length,
            return_tensors="pt",
        )
        emb = _mean_pool(
            encoder, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        )
        loss = supcon_loss(emb, labels[idx], config.temperature)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(1)
        if (step + 1) % 50 == 0:
            log.info("contrastive step %d/%d: loss %.4f", step + 1, total, losses[-1])
    encoder.train(was_training)
    tail = losses[-max(1, total // 10) :]
    return sum(tail) / len(tail)
