"""Out-of-scope score from the sentence embedding: Mahalanobis distance to the class means.

The classifier's max softmax probability (MSP) says how sure the head is between the known
intents, not whether the query is like any of them: a query far from every intent can still
land on one side of a boundary with confidence. The distance of the query's embedding to the
nearest intent's mean, under one covariance shared by the intents (Podolskiy et al. 2021,
"Revisiting Mahalanobis Distance for Transformer-Based Out-of-Domain Detection"), measures
the second thing. The build fits the means and a Ledoit-Wolf shrunk covariance on the
training rows' embeddings (`fit`) and stores them in the bundle (`OOD_FILE`); the edge turns
each query's distance into a score with one small matmul (`OodScorer`).

The score served as the query's confidence is `MSP x sqrt(typicality)`, where typicality is
the share of in-scope validation queries lying at least as far from their nearest mean (an
empirical p-value, so the score stays in [0, 1]): a query as close as usual keeps its MSP,
one further out than almost every in-scope query loses it. Chosen on CLINC150 validation
against MSP alone, the distance alone, max cosine to the class centroids, k-NN to the
training rows and other combinations (benchmarks/ood_score.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["OOD_FILE", "SCORE", "OodScorer", "OodStats", "fit", "ledoit_wolf"]

OOD_FILE = "ood.npz"
# The score's name in the manifest (`OodCalibration.score`): what `OodScorer.score` computes.
SCORE = "msp_x_sqrt_typicality"
# Quantiles of the in-scope validation distances kept for the typicality (an empirical CDF).
N_QUANTILES = 201


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """The Ledoit-Wolf shrunk covariance of centred rows `x` (n, d) and its shrinkage:
    (1 - s) * sample covariance + s * (trace / d) * identity (as scikit-learn computes it)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    emp = x.T @ x / n
    mu = float(np.trace(emp)) / d
    x2 = x**2
    beta_ = float(np.sum(x2.T @ x2)) / n
    delta_ = float(np.sum(emp**2))
    beta = (beta_ - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * float(np.trace(emp)) + d * mu**2) / d
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrinkage) * emp
    cov[np.diag_indices(d)] += shrinkage * mu
    return cov, shrinkage


class OodStats:
    """Class means (C, d), the shared precision (d, d), the classes' positions in the
    bundle's labels (C,), and sorted in-scope validation distances (the typicality's CDF)."""

    def __init__(
        self,
        means: np.ndarray,
        precision: np.ndarray,
        label_index: np.ndarray,
        quantiles: np.ndarray | None = None,
    ) -> None:
        self.means = np.asarray(means, dtype=np.float32)
        self.precision = np.asarray(precision, dtype=np.float32)
        self.label_index = np.asarray(label_index, dtype=np.int64)
        self.quantiles = (
            np.zeros(0, dtype=np.float32)
            if quantiles is None
            else np.asarray(quantiles, dtype=np.float32)
        )

    def with_quantiles(self, in_scope_distances: np.ndarray) -> OodStats:
        """These statistics with the typicality's CDF taken from in-scope distances."""
        q = np.quantile(
            np.asarray(in_scope_distances, dtype=np.float64), np.linspace(0, 1, N_QUANTILES)
        )
        return OodStats(self.means, self.precision, self.label_index, q)

    def save(self, path: Path) -> Path:
        with path.open("wb") as fh:  # np.savez would append ".npz" to a name without it
            np.savez(
                fh,
                means=self.means,
                precision=self.precision,
                label_index=self.label_index,
                quantiles=self.quantiles,
            )
        return path

    @classmethod
    def load(cls, path: Path) -> OodStats:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["means"], data["precision"], data["label_index"], data["quantiles"])


def fit(embeddings: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> OodStats:
    """Means and shared precision from training embeddings (n, d) and their label indices
    (n,), for the label indices `classes` (the in-scope intents; rows of other labels, such
    as `oos` and borrowed negatives, are left out)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.asarray(classes, dtype=np.int64)
    means = np.stack([emb[labels == c].mean(0) for c in classes])
    keep = np.isin(labels, classes)
    position = {int(c): i for i, c in enumerate(classes)}
    centred = emb[keep] - means[[position[int(c)] for c in labels[keep]]]
    cov, _ = ledoit_wolf(centred)
    return OodStats(means, np.linalg.inv(cov), classes)


class OodScorer:
    """Per-query distance and score from `OodStats`: (x - m)' P (x - m) for every mean m is
    x'Px - 2 x'Pm + m'Pm, so one (n, d) x (d, d + C) matmul serves a batch."""

    def __init__(self, stats: OodStats) -> None:
        self.stats = stats
        p = stats.precision.astype(np.float64)
        m = stats.means.astype(np.float64)
        pm = p @ m.T  # (d, C)
        self._proj = np.concatenate([p, pm], axis=1).astype(np.float32)  # (d, d + C)
        self._mpm = np.einsum("cd,dc->c", m, pm).astype(np.float32)  # (C,)
        self._d = p.shape[0]
        self._cdf = np.linspace(0.0, 1.0, stats.quantiles.size)

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """(n,) squared Mahalanobis distance of each row to its nearest class mean."""
        x = np.asarray(embeddings, dtype=np.float32)
        y = x @ self._proj
        quad = (y[:, : self._d] * x).sum(1)
        d2 = quad[:, None] - 2.0 * y[:, self._d :] + self._mpm[None, :]
        return np.maximum(d2.min(1), 0.0)

    def typicality(self, distances: np.ndarray) -> np.ndarray:
        """(n,) share of in-scope validation queries at least as far out (1 when the bundle
        recorded no validation distances)."""
        q = self.stats.quantiles
        if q.size == 0:
            return np.ones_like(distances, dtype=np.float32)
        return 1.0 - np.interp(distances, q, self._cdf, left=0.0, right=1.0)

    def score(self, msp: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """(n,) in-scope score in [0, 1]: MSP x sqrt(typicality)."""
        return np.asarray(msp) * np.sqrt(self.typicality(self.distance(embeddings)))
