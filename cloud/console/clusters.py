"""Group hard examples by meaning so an operator labels a cluster at once, not row by row.

Texts are embedded with the bundle the fleet runs (its int8 graph returns the sentence
embedding next to the intent probabilities) and grouped by leader clustering: in a fixed
order, each text joins the cluster whose centroid is most similar if the cosine is at least
`threshold`, else it starts a new one. One pass, deterministic, no cluster count to choose;
good enough for the hundreds of candidates a review round sees. Without a bundle (none
built on this machine) candidates are grouped by the intent the site's model guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from aivos.cloud.ingest.candidates import Candidate
from aivos.shared.bundle import load_bundle_manifest

__all__ = ["Cluster", "Embedder", "cluster_candidates", "DEFAULT_THRESHOLD"]

# all-MiniLM-style embeddings: paraphrases of one request sit above ~0.7, different
# requests of one domain around 0.3-0.6
DEFAULT_THRESHOLD = 0.7


class Cluster(msgspec.Struct, frozen=True):
    id: int
    members: list[Candidate]
    top_intent: str  # the guess most members got (what to suggest as the label)
    cohesion: float  # mean cosine of the members to the centroid (1.0: one member)


class Embedder:
    """The L2-normalised sentence embeddings of a bundle's graph; `labels` are its intents."""

    def __init__(self, bundle_dir: Path) -> None:
        self.manifest = load_bundle_manifest(bundle_dir)
        self.bundle_dir = bundle_dir
        self.labels = [lb for lb in self.manifest.labels if lb != self.manifest.oos_label]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from aivos.cloud.modelbuild.calibrate import predict_probs

        _, emb = predict_probs(
            self.bundle_dir / "model.onnx", self.bundle_dir / "tokenizer.json", list(texts)
        )
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return np.asarray(emb / np.maximum(norms, 1e-12), dtype=np.float32)


def _top(members: Sequence[Candidate]) -> str:
    counts: dict[str, int] = {}
    for m in members:
        counts[m.intent] = counts.get(m.intent, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k])


def cluster_candidates(
    candidates: Sequence[Candidate],
    embedder: Embedder | None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Cluster]:
    """Clusters, largest first (ties: first seen first)."""
    if not candidates:
        return []
    if embedder is None:
        groups: dict[str, list[Candidate]] = {}
        for c in candidates:
            groups.setdefault(c.intent, []).append(c)
        ordered = sorted(groups.values(), key=len, reverse=True)
        return [Cluster(i + 1, g, _top(g), 1.0) for i, g in enumerate(ordered)]
    vectors = embedder.embed([c.text for c in candidates])
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
    found = []
    for s, idx in zip(sums, members, strict=True):
        centroid = s / np.linalg.norm(s)
        cohesion = float(np.mean(vectors[idx] @ centroid))
        found.append(([candidates[i] for i in idx], round(cohesion, 3)))
    found.sort(key=lambda f: len(f[0]), reverse=True)  # stable: first seen first on ties
    return [Cluster(i + 1, m, _top(m), c) for i, (m, c) in enumerate(found)]
