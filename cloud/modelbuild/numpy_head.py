"""The cosine intent head trained on frozen embeddings, in numpy (the quick build has no torch).

The same model and recipe as the head-only epochs of `finetune.train_intent_model`:
logits = `scale * emb @ normalize(W).T + b`, W started at the normalised class centroids, then
AdamW (torch's defaults: betas 0.9/0.999, eps 1e-8, weight decay 0.01) on shuffled 512-row
batches of cross-entropy. The gradient through the row normalisation is written out by hand.
The result folds into one MatMul + Add exactly as `IntentNet.folded_head` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["HeadRecipe", "train_cosine_head"]


@dataclass(frozen=True)
class HeadRecipe:
    """The head-only settings of `finetune.TrainConfig` (that module imports torch)."""

    epochs: int = 20  # what the quick bundle has always trained its head for
    batch_size: int = 512  # finetune.HEAD_ONLY_BATCH
    lr: float = 5e-3  # TrainConfig.head_lr
    scale: float = 24.0  # TrainConfig.scale
    seed: int = 13


@dataclass
class _AdamW:
    """torch.optim.AdamW's update for one parameter array (bias-corrected moments,
    decoupled weight decay applied before the step)."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    _m: np.ndarray | None = None
    _v: np.ndarray | None = None
    _t: int = 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> None:
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(param), np.zeros_like(param)
        self._t += 1
        b1, b2 = self.betas
        param *= 1 - self.lr * self.weight_decay
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad * grad
        m_hat = self._m / (1 - b1**self._t)
        v_hat = self._v / (1 - b2**self._t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def _normalise_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x / norms, norms


def train_cosine_head(
    embeddings: np.ndarray,
    label_ids: Sequence[int],
    n_labels: int,
    recipe: HeadRecipe,
) -> tuple[np.ndarray, np.ndarray]:
    """Train on (n, dim) L2-normalised `embeddings`; returns the folded head
    (weight (n_labels, dim) = scale * normalize(W), bias (n_labels,)), float32."""
    emb = np.asarray(embeddings, dtype=np.float64)  # a few MB; float64 keeps the sums exact
    labels = np.asarray(label_ids, dtype=np.int64)
    n, dim = emb.shape
    centroids = np.zeros((n_labels, dim))
    np.add.at(centroids, labels, emb)
    weight, _ = _normalise_rows(centroids)
    bias = np.zeros(n_labels)
    opt_w, opt_b = _AdamW(recipe.lr), _AdamW(recipe.lr)
    rng = np.random.default_rng(recipe.seed)
    for _ in range(recipe.epochs):
        perm = rng.permutation(n)
        for start in range(0, n, recipe.batch_size):
            sel = perm[start : start + recipe.batch_size]
            x, y = emb[sel], labels[sel]
            w_unit, norms = _normalise_rows(weight)
            logits = recipe.scale * x @ w_unit.T + bias
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(sel)), y] -= 1.0  # d(mean cross-entropy)/d(logits), times n
            d_logits = probs / len(sel)
            d_unit = recipe.scale * d_logits.T @ x  # (n_labels, dim)
            # through w / |w|: project out the radial part, divide by the norm
            d_weight = (d_unit - w_unit * (d_unit * w_unit).sum(1, keepdims=True)) / norms
            opt_w.step(weight, d_weight)
            opt_b.step(bias, d_logits.sum(0))
    w_unit, _ = _normalise_rows(weight)
    return (recipe.scale * w_unit).astype(np.float32), bias.astype(np.float32)
