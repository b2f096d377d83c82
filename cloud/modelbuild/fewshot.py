"""The few-shot recipe: what changes when a site brings a handful of rows per intent.

First a SetFit-style contrastive stage (`contrastive.py`, `CONTRASTIVE_STEPS` steps) pulls
the rows of each intent together in the encoder's embedding space: 10 rows make 45 pairs,
and every other intent in a batch is a negative. Then the usual fine-tuning trains the head,
and each head row is blended with its class centroid in the fine-tuned embedding space
(`finetune._mix_centroids`): with ~10 rows per intent the trained head fits those rows, the
centroid is a prototype that depends less on any one of them. The graph is unchanged: same
encoder architecture, same folded head, same int8 bundle and per-query cost.

Also tried, on CLINC150 val (docs/models.md, "Few-shot training"), and left off because each
measured worse or no better: every layer trained, at least 40-240 steps, label smoothing 0.1
(`TrainConfig.frozen_layers`, `min_steps`, `label_smoothing` keep those knobs); in the
contrastive stage, hard-negative batches (`ContrastiveConfig.hard_negative_share`), twice
the learning rate, 16 intents x 4 rows a batch; a logistic-regression head instead of the
prototype head; the prototype over the user's rows only, without the noisy copies (3 seeds:
+0.13 / -0.07 / 0.00 points, benchmarks/results/fewshot_val_round3.json).

Kept free of torch so `build.py` can decide before the training stack is imported.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aivos.shared.datasets import OOS_LABEL

if TYPE_CHECKING:
    from aivos.cloud.modelbuild.finetune import TrainConfig

__all__ = [
    "CENTROID_MIX",
    "CONTRASTIVE_STEPS",
    "MAX_ROWS_PER_INTENT",
    "few_shot_config",
    "is_few_shot",
    "rows_per_intent",
]

# Median in-scope rows per intent at or below this: the few-shot recipe (the few-shot
# literature's 5-20 shots). 30 rows already train well with the default recipe.
MAX_ROWS_PER_INTENT = 20
# SetFit-style pair steps before the head (contrastive.py), 32 intents x 2 rows a step, and
# the blend of head and class centroid: chosen on CLINC150 val, 10 shots, two seeds (300
# steps + blend 1 beat 150 + 0.5 by +0.37 / +0.80 points); then, never tuned on, CLINC150
# test over 3 seeds 92.65 vs 92.52 %, BANKING77 85.75 vs 85.58 %, HWU64 84.20 vs 79.46 %
# top-1 (docs/models.md). Costs 1.65x the training time of 150 steps. 600 steps measured
# val +0.29 points at blend 1 over 3 seeds (+7 / +12 / +7 rows of 3,000) for 1.8x the
# training time: under the 0.3-point bar, so not shipped (fewshot_val_round4.json).
CENTROID_MIX = 1.0
CONTRASTIVE_STEPS = 300


def rows_per_intent(labels: Sequence[str]) -> float:
    """Median number of training rows per in-scope intent (`oos` rows do not count)."""
    counts = Counter(label for label in labels if label != OOS_LABEL)
    return float(statistics.median(counts.values())) if counts else 0.0


def is_few_shot(labels: Sequence[str]) -> bool:
    """Whether training rows with these labels get the few-shot recipe."""
    return 0 < rows_per_intent(labels) <= MAX_ROWS_PER_INTENT


def few_shot_config(config: TrainConfig) -> TrainConfig:
    """`config` with the few-shot recipe switched on."""
    return dataclasses.replace(
        config, centroid_mix=CENTROID_MIX, contrastive_steps=CONTRASTIVE_STEPS
    )
