"""The live model and its knowledge index, and the work a batch worker does with them:
classify a batch of queries, then retrieve passages for each with its embedding.

(model, index) is held as one value: a batch worker reads both at once, so a model swap
can never pair a query embedded by one model with an index embedded by another.

With feedback in use (`use_feedback`), a few more candidates than `top_k` are retrieved and
re-ranked by the votes of similar queries and of the predicted intent (edge/feedback.py) before
the top `top_k` are kept; without votes the order is the index's.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgspec

from aivos.edge.intent.runtime import IntentModel, Prediction
from aivos.edge.knowledge.index import KnowledgeIndex
from aivos.edge.results import Passage

__all__ = ["Classified", "Reranker", "Serving"]


class Reranker(Protocol):
    def has_votes(self, intent: str, embedding_version: str) -> bool: ...
    def rerank(
        self, intent: str, embedding: Any, embedding_version: str, passages: list[Passage], k: int
    ) -> list[Passage]: ...


class Classified(msgspec.Struct):
    """One query through the batch worker: the model's prediction and the passages retrieved
    with its embedding (retrieval runs in the worker thread, off the event loop)."""

    prediction: Prediction
    model_version: str
    passages: list[Passage]
    retrieval_ns: tuple[int, int]  # wall-clock start and end, for the edge.retrieval span


class Serving:
    def __init__(
        self, model: IntentModel, index: KnowledgeIndex, *, top_k: int, min_score: float
    ) -> None:
        self._pair = (model, index)
        self.top_k = top_k
        self.min_score = min_score
        self.reranker: Reranker | None = None

    def use_feedback(self, reranker: Reranker) -> None:
        """Re-rank retrieved passages per predicted intent from now on."""
        self.reranker = reranker

    @property
    def model(self) -> IntentModel:
        return self._pair[0]

    @property
    def index(self) -> KnowledgeIndex:
        return self._pair[1]

    def swap(self, model: IntentModel, index: KnowledgeIndex) -> None:
        self._pair = (model, index)

    def classify_batch(self, texts: list[str]) -> list[Classified]:
        """Runs in a batch worker thread: classify, then retrieve for each query."""
        model, index = self._pair  # one model and its index per batch, even mid-swap
        k = self.top_k
        reranker = self.reranker
        space = model.embedding_version if reranker is not None else ""
        out = []
        for prediction in model.classify_batch(texts):
            started = time.time_ns()
            if reranker is not None and reranker.has_votes(prediction.intent, space):
                found = self.retrieve(index, prediction.embedding, k + max(k, 4))
                passages = reranker.rerank(prediction.intent, prediction.embedding, space, found, k)
            else:
                passages = self.retrieve(index, prediction.embedding, k)
            out.append(Classified(prediction, model.version, passages, (started, time.time_ns())))
        return out

    def retrieve(self, index: KnowledgeIndex, vector: Any, k: int) -> list[Passage]:
        # no len(index) check: it costs a SQLite count, and an empty index answers []
        if k <= 0:
            return []
        # the index's rows, made into passages once (not the index's own `Passage` first);
        # the score is the index's (6 places), then rounded to the 4 that answers carry
        floor = self.min_score
        return [
            Passage(row.text, row.source, round(score, 4), row.doc_id, key)
            for key, score, row in index.nearest(vector, k)
            if score >= floor
        ]
