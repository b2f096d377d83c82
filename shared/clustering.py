"""Leader clustering of L2-normalised embeddings: hard examples grouped by meaning, so an
operator labels a group at once (the console's review page, `aivos candidates` on a site).

In a fixed order, each vector joins the cluster whose centroid is most similar if the cosine
is at least `threshold`, else it starts a new one. One pass, deterministic, no cluster count
to choose; good enough for the hundreds of candidates a review round sees. Appending vectors
never moves an earlier one to another cluster nor reorders the clusters (first-seen order):
it only adds members, or new clusters at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec
import numpy as np

__all__ = ["DEFAULT_THRESHOLD", "Grouping", "leader_clusters", "top_label"]

# all-MiniLM-style embeddings: paraphrases of one request sit above ~0.7, different
# requests of one domain around 0.3-0.6
DEFAULT_THRESHOLD: Final = 0.7


class Grouping(msgspec.Struct, frozen=True):
    members: list[int]  # row indices into the vectors, in their order
    cohesion: float  # mean cosine of the members to the centroid (1.0: one member)


def leader_clusters(vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[Grouping]:
    """The clusters of the rows of `vectors` ((n, dim), L2-normalised), in first-seen order."""
    sums: list[np.ndarray] = []
    members: list[list[int]] = []
    for i, v in enumerate(vectors):
        if sums:
            cents = np.stack([s / np.linalg.norm(s) for s in sums])
            sims = cents @ v
            best = int(sims.argmax())
            if sims[best] >= threshold:
                sums[best] = sums[best] + v
                members[best].append(i)
                continue
        sums.append(v.copy())
        members.append([i])
    out = []
    for s, idx in zip(sums, members, strict=True):
        centroid = s / np.linalg.norm(s)
        out.append(Grouping(idx, round(float(np.mean(vectors[idx] @ centroid)), 3)))
    return out


def top_label(labels: Iterable[str]) -> str:
    """The most frequent of `labels` (ties: the alphabetically first): a cluster's name."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k])
