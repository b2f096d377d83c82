"""Fine-tune MiniLM with a cosine intent head (torch). The result is what gets exported.

The model is: encoder -> mean pooling over real tokens -> L2 normalisation -> logits =
`scale * emb @ normalize(W).T + b`. The head therefore folds into one MatMul + Add with
`W_eff = scale * normalize(W)`, which is what `onnxgraph.fold_head` appends to the graph.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from aivos.cloud.modelbuild.source import base_model_dir, offline

__all__ = [
    "TrainConfig",
    "TrainedHead",
    "IntentNet",
    "train_intent_model",
    "load_base",
    "planned_epochs",
]

log = logging.getLogger(__name__)

HEAD_ONLY_BATCH = 512  # rows per step when only the head trains (embeddings precomputed)
# Distillation's pseudo-passages (3-5 training rows joined): the token window they are cut to,
# and how many rows each joins. Knowledge passages are longer than queries.
DISTILL_PASSAGE_MAX_LENGTH = 128
DISTILL_PASSAGE_ROWS = (3, 5)

ProgressFn = Callable[[int], None]
# An extra term for each fine-tuning batch: (the batch's row indices into `texts`, its logits)
RowLoss = Callable[[list[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    encoder_lr: float = 8e-5
    head_lr: float = 5e-3
    scale: float = 24.0
    max_length: int = 64  # training window; CLINC queries are far shorter
    seed: int = 13
    head_only_epochs: int = 0  # extra epochs training the head on frozen embeddings
    # Bottom transformer layers kept frozen (embeddings always are). 0 on all of CLINC150
    # train measured fp32 val top-1 96.93 -> 97.13 % (16 rows won, 10 lost of 3,000; McNemar
    # p = 0.33) for ~25 % more build CPU (docs/models.md): below the bar, so it stays 2.
    frozen_layers: int = 2
    layers: int = 0  # keep only the bottom N transformer layers (0 = all): a faster encoder
    # Few-shot knobs (cloud/modelbuild/fewshot.py turns them on for small data):
    min_steps: int = 0  # raise the epoch count until fine-tuning takes at least this many steps
    max_epochs: int = 20  # ... but no further than this on tiny data
    # 0.1 on all of CLINC150 train (2 epochs, otherwise the default build) measured no gain
    # on val: fp32 top-1 96.93 -> 97.00 % (15 rows won, 13 lost of 3,000; McNemar p = 0.85),
    # int8 +0.0 to +0.3 points depending on batching alone (docs/models.md). It stays off.
    label_smoothing: float = 0.0
    # Blend the trained head towards the fine-tuned class centroids (`_mix_centroids`). The
    # few-shot recipe uses 0.5. With all of CLINC150 train, 0.25 measured +0.27 points top-1
    # on val but -0.07 on test (docs/models.md): not a gain, so it stays off by default.
    centroid_mix: float = 0.0
    contrastive_steps: int = 0  # SetFit-style pair stage on the encoder first (contrastive.py)
    # Keep the pooled embedding close to the stock full-depth encoder's (the teacher, run once
    # before `layers` drops the top layers): the fine-tuning loss gains
    # `distill_weight * (1 - cos(student, teacher))` on each batch's rows and on
    # `distill_passages` pseudo-passages per step (`DISTILL_PASSAGE_ROWS` training rows
    # joined: retrieval embeds passages, not only queries). For `layers` < 6, whose embedding
    # otherwise retrieves much worse (docs/models.md, "Encoder depth"). 0 = off.
    distill_weight: float = 0.0
    distill_passages: int = 4


def planned_epochs(config: TrainConfig, n_rows: int) -> int:
    """Fine-tuning epochs for `n_rows`: `config.epochs`, raised towards `config.min_steps`
    steps (at most `config.max_epochs`). 0 stays 0: a frozen encoder."""
    if not config.epochs:
        return 0
    steps_per_epoch = max(1, -(-n_rows // config.batch_size))
    to_min_steps = min(config.max_epochs, -(-config.min_steps // steps_per_epoch))
    return max(config.epochs, to_min_steps)


@dataclass(frozen=True)
class TrainedHead:
    """The folded head: logits = emb @ weight.T + bias."""

    weight: np.ndarray  # (n_labels, dim) float32
    bias: np.ndarray  # (n_labels,) float32


class IntentNet(nn.Module):
    def __init__(self, encoder: nn.Module, n_labels: int, dim: int, scale: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.weight = nn.Parameter(torch.randn(n_labels, dim) * 0.01)
        self.bias = nn.Parameter(torch.zeros(n_labels))
        self.scale = scale

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return pooled_embedding(self.encoder, input_ids, attention_mask)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * emb @ F.normalize(self.weight, dim=-1).T + self.bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.logits(self.embed(input_ids, attention_mask))

    def folded_head(self) -> TrainedHead:
        with torch.no_grad():
            w = (self.scale * F.normalize(self.weight, dim=-1)).float().numpy()
            b = self.bias.float().numpy()
        return TrainedHead(weight=w.astype(np.float32), bias=b.astype(np.float32))


def pooled_embedding(
    encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over real tokens, L2-normalised: the embedding the head (and retrieval) sees."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(mean, dim=-1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cos` between rows of two embedding batches (0 when they point the same way)."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def load_base() -> tuple[Any, Any]:
    offline()
    path = base_model_dir()
    encoder = AutoModel.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return encoder, tokenizer


def keep_bottom_layers(encoder: Any, n: int) -> None:
    """Drop the top transformer layers in place (the saved config says so too)."""
    total = len(encoder.encoder.layer)
    if not 0 < n <= total:
        raise ValueError(f"layers must be between 1 and {total}, got {n}")
    encoder.encoder.layer = encoder.encoder.layer[:n]
    encoder.config.num_hidden_layers = n


def _batches(
    tokenizer: object, texts: Sequence[str], max_length: int, batch_size: int, order: list[int]
) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out.append((idx, _tokenize(tokenizer, [texts[i] for i in idx], max_length)))
    return out


def _tokenize(tokenizer: object, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """One padded batch: input ids and attention mask."""
    enc = tokenizer(  # type: ignore[operator]
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _embed_all(
    net: IntentNet, tokenizer: object, texts: Sequence[str], max_length: int
) -> torch.Tensor:
    """The embeddings the head sees, of `texts` (no grad), in the order given."""
    return _encode_texts(net.encoder, tokenizer, texts, max_length)


def _encode_texts(
    encoder: Any, tokenizer: object, texts: Sequence[str], max_length: int
) -> torch.Tensor:
    """Pooled embeddings of `texts` (no grad, eval mode), in the order given."""
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embs = torch.empty(len(texts), int(encoder.config.hidden_size))
    with torch.no_grad():
        for idx, batch in _batches(tokenizer, texts, max_length, 128, order):
            embs[idx] = pooled_embedding(encoder, batch["input_ids"], batch["attention_mask"])
    encoder.train(was_training)
    return embs


def pseudo_passages(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` passage-like texts, each `DISTILL_PASSAGE_ROWS` random training rows joined."""
    rng = random.Random(seed)
    lo, hi = DISTILL_PASSAGE_ROWS
    out = []
    for _ in range(n):
        rows = rng.sample(range(len(texts)), min(len(texts), rng.randint(lo, hi)))
        out.append(" ".join(texts[i].strip().rstrip(".?!") + "." for i in rows))
    return out


def train_intent_model(
    texts: Sequence[str],
    label_ids: Sequence[int],
    n_labels: int,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    *,
    row_loss: RowLoss | None = None,
) -> tuple[IntentNet, object]:
    """Train and return (net, tokenizer). `progress(n)` is called after each optimizer step.
    `row_loss`, if given, is added to each fine-tuning batch's loss (an experiment's extra
    term, such as benchmarks/kd_teacher.py's distillation from a teacher's logits)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder, tokenizer = load_base()
    steps_per_epoch = (len(texts) + config.batch_size - 1) // config.batch_size
    distill = config.distill_weight > 0 and planned_epochs(config, len(texts)) > 0
    if distill:
        # the teacher: the stock encoder at full depth, before any layer is dropped
        n_passages = steps_per_epoch * config.distill_passages
        passages = pseudo_passages(texts, n_passages, config.seed + 1)
        teacher_rows = _encode_texts(encoder, tokenizer, texts, config.max_length)
        teacher_passages = _encode_texts(encoder, tokenizer, passages, DISTILL_PASSAGE_MAX_LENGTH)
        log.info("distillation: teacher embedded %d rows, %d passages", len(texts), n_passages)
    if config.layers:
        keep_bottom_layers(encoder, config.layers)
    if config.contrastive_steps:
        from aivos.cloud.modelbuild.contrastive import ContrastiveConfig, contrastive_tune

        contrastive_tune(
            encoder,
            tokenizer,
            texts,
            label_ids,
            ContrastiveConfig(steps=config.contrastive_steps, seed=config.seed),
            progress=progress,
        )
    dim = int(encoder.config.hidden_size)
    net = IntentNet(encoder, n_labels, dim, config.scale)
    # Word embeddings + the bottom layers stay frozen: a third of the step time, and the
    # general-purpose geometry of the embedding space (used for retrieval too) moves less.
    frozen = [encoder.embeddings, *encoder.encoder.layer[: config.frozen_layers]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    labels = torch.tensor(list(label_ids), dtype=torch.long)

    # Start the head at the class centroids of the frozen embeddings: training then only
    # refines, which is what makes one or two epochs enough.
    embs = _embed_all(net, tokenizer, texts, config.max_length)
    with torch.no_grad():
        centroids = torch.zeros(n_labels, dim).index_add_(0, labels, embs)
        net.weight.copy_(F.normalize(centroids, dim=-1))

    if config.head_only_epochs:
        # the embeddings are computed once above; a linear head on them needs no small
        # batches, and tiny steps were what made the quick first bundle slow (~10 steps/s
        # on a busy 2-core box: thread start-up per step, not arithmetic)
        head_batch = max(config.batch_size, HEAD_ONLY_BATCH)
        head_opt = torch.optim.AdamW([net.weight, net.bias], lr=config.head_lr)
        for _ in range(config.head_only_epochs):
            perm = torch.randperm(len(texts))
            for start in range(0, len(texts), head_batch):
                sel = perm[start : start + head_batch]
                loss = F.cross_entropy(net.logits(embs[sel]), labels[sel])
                head_opt.zero_grad()
                loss.backward()
                head_opt.step()
                if progress:
                    progress(1)

    epochs = planned_epochs(config, len(texts))
    if epochs:
        total = steps_per_epoch * epochs
        opt = torch.optim.AdamW(
            [
                {
                    "params": [p for p in net.encoder.parameters() if p.requires_grad],
                    "lr": config.encoder_lr,
                },
                {"params": [net.weight, net.bias], "lr": config.head_lr},
            ],
            weight_decay=0.01,
        )
        warmup = max(1, total // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup + 1)))
        )
        for epoch in range(epochs):
            net.train()
            # Bucket by length (less padding), then shuffle the buckets.
            order = list(range(len(texts)))
            rng.shuffle(order)
            chunks = [
                order[i : i + config.batch_size * 20]
                for i in range(0, len(order), config.batch_size * 20)
            ]
            order = [i for chunk in chunks for i in sorted(chunk, key=lambda j: len(texts[j]))]
            batches = _batches(tokenizer, texts, config.max_length, config.batch_size, order)
            rng.shuffle(batches)
            if distill:  # its own generator: the row batches stay those of a plain build
                passage_order = list(range(len(passages)))
                random.Random(config.seed + 2 + epoch).shuffle(passage_order)
            running = 0.0
            for step, (idx, batch) in enumerate(batches):
                emb = net.embed(batch["input_ids"], batch["attention_mask"])
                logits = net.logits(emb)
                loss = F.cross_entropy(logits, labels[idx], label_smoothing=config.label_smoothing)
                if row_loss is not None:
                    loss = loss + row_loss(idx, logits)
                if distill:
                    take = passage_order[
                        step * config.distill_passages : (step + 1) * config.distill_passages
                    ]
                    student = emb
                    teacher = teacher_rows[idx]
                    if take:
                        enc = _tokenize(
                            tokenizer, [passages[i] for i in take], DISTILL_PASSAGE_MAX_LENGTH
                        )
                        student = torch.cat(
                            [student, net.embed(enc["input_ids"], enc["attention_mask"])]
                        )
                        teacher = torch.cat([teacher, teacher_passages[take]])
                    loss = loss + config.distill_weight * distill_loss(student, teacher)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                running += loss.item()
                if progress:
                    progress(1)
            log.info("epoch %d: mean loss %.4f", epoch + 1, running / max(1, len(batches)))
    if config.centroid_mix:
        _mix_centroids(net, tokenizer, texts, labels, config)
    net.eval()
    return net, tokenizer


def _mix_centroids(
    net: IntentNet,
    tokenizer: object,
    texts: Sequence[str],
    labels: torch.Tensor,
    config: TrainConfig,
) -> None:
    """Blend each head row with its class centroid in the fine-tuned embedding space.

    With a handful of rows per class the trained head fits those rows; the centroid of the
    (now fine-tuned) embeddings is a prototype classifier that depends less on any one of
    them, and the blend keeps what the head learnt about confusable classes. Same graph.
    """
    embs = _embed_all(net, tokenizer, texts, config.max_length)
    with torch.no_grad():
        centroids = torch.zeros_like(net.weight).index_add_(0, labels, embs)
        mixed = (1 - config.centroid_mix) * F.normalize(net.weight, dim=-1)
        mixed += config.centroid_mix * F.normalize(centroids, dim=-1)
        net.weight.copy_(mixed)


def save_encoder(net: IntentNet, tokenizer: object, out: Path) -> None:
    """Save the (fine-tuned) encoder as a transformers model directory, for export."""
    out.mkdir(parents=True, exist_ok=True)
    net.encoder.save_pretrained(str(out))  # type: ignore[operator]
    tokenizer.save_pretrained(str(out))  # type: ignore[attr-defined]
