"""Group hard examples by meaning so an operator labels a cluster at once, not row by row.

Texts are embedded with the bundle the fleet runs (its int8 graph returns the sentence
embedding next to the intent probabilities) and grouped by leader clustering
(`aivos.shared.clustering`, which a site's own `aivos candidates list` uses too). Without a
bundle (none built on this machine) candidates are grouped by the intent the site's model
guessed.

Embedding is the cost of a review page (a forward pass per candidate), so `ClusterCache`
keeps the last few groupings, keyed by a digest of the open candidate set (each example's
key, text and guess) and of the bundle and threshold: a new candidate, a label (which takes
examples out of the open set) or another bundle is a new key; ratings and late answers are
read fresh, since only the grouping is cached, not the members' fields.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from aivos.cloud.ingest.candidates import Candidate
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.clustering import DEFAULT_THRESHOLD, leader_clusters, top_label

__all__ = ["Cluster", "ClusterCache", "Embedder", "cluster_candidates", "DEFAULT_THRESHOLD"]


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
        return [
            Cluster(i + 1, g, top_label(x.intent for x in g), 1.0) for i, g in enumerate(ordered)
        ]
    vectors = embedder.embed([c.text for c in candidates])
    found = [
        ([candidates[i] for i in g.members], g.cohesion)
        for g in leader_clusters(vectors, threshold)
    ]
    found.sort(key=lambda f: len(f[0]), reverse=True)  # stable: first seen first on ties
    return [Cluster(i + 1, m, top_label(x.intent for x in m), c) for i, (m, c) in enumerate(found)]


_Grouping = list[tuple[list[tuple[str, str]], float]]  # (member keys, cohesion) per cluster


class ClusterCache:
    """The clusters of the last `max_entries` candidate sets (least recently used out)."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, _Grouping] = OrderedDict()
        self._lock = threading.Lock()  # pages render in worker threads

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(candidates: Sequence[Candidate], embedder: Embedder | None, threshold: float) -> str:
        h = hashlib.sha256()
        bundle = embedder.manifest.bundle_version if embedder is not None else ""
        h.update(f"{bundle}\0{threshold!r}\0".encode())
        for c in candidates:
            h.update("\0".join((c.site, c.request_id, c.text, c.intent, "")).encode())
        return h.hexdigest()

    def clusters(
        self,
        candidates: Sequence[Candidate],
        embedder: Embedder | None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> list[Cluster]:
        key = self.key(candidates, embedder, threshold)
        with self._lock:
            grouping = self._entries.get(key)
            if grouping is not None:
                self._entries.move_to_end(key)
                self.hits += 1
        if grouping is None:
            found = cluster_candidates(candidates, embedder, threshold)
            with self._lock:
                self.misses += 1
                self._entries[key] = [([m.key for m in c.members], c.cohesion) for c in found]
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return found
        current = {c.key: c for c in candidates}  # today's fields: ratings, late answers
        out = []
        for i, (keys, cohesion) in enumerate(grouping):
            members = [current[k] for k in keys]
            out.append(Cluster(i + 1, members, top_label(x.intent for x in members), cohesion))
        return out
