"""Retrieval that learns from feedback: `POST /v1/feedback` votes, per intent, re-rank passages.

A caller rates an answered request (`request_id` from `/v1/infer`): helpful or not, and
optionally which passage (`doc_id`, `chunk_id`) the rating is about. The vote is stored with
the intent the audit row recorded for that request (one vote per request; a second one
replaces it), and the votes of an intent move its passages up or down:

    adjusted = score + weight * (up - down) / (up + down + prior)

`score` is the cosine similarity from the index, `up`/`down` the intent's votes for that
passage. The passage's own `score` stays what the index said (answerability and the
`min_score` floor use it); only the order changes. With no votes nothing moves: cold-start
ranking is the index's. The boost is bounded by `weight`, so feedback reorders close
candidates but cannot lift an unrelated passage over a clearly better one.

Re-ranking runs in the batch worker thread (`Serving.classify_batch`); votes are read from an
immutable per-intent snapshot that `record` replaces, so no lock is needed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from aivos.edge.store import AuditRow, Store
from aivos.edge.store import feedback as _table
from aivos.shared.errors import InvalidInput, NotFound

__all__ = ["FeedbackBook", "FeedbackRecorded", "RequestNotFound", "PassageRefInvalid", "rerank"]


class RequestNotFound(NotFound):
    """Feedback for a request id this site has no audit row for."""

    code = "request_not_found"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no request {request_id}")
        self.request_id = request_id


class PassageRefInvalid(InvalidInput):
    code = "invalid_passage_ref"

    def __init__(self) -> None:
        super().__init__("doc_id", "doc_id and chunk_id are given together or not at all")


class FeedbackRecorded(msgspec.Struct, frozen=True):
    request_id: str
    intent: str
    helpful: bool
    doc_id: str | None
    chunk_id: int | None
    votes_up: int  # the passage's votes for this intent after this one (0 without a passage)
    votes_down: int


class _Ranked(Protocol):
    @property
    def score(self) -> float: ...
    @property
    def doc_id(self) -> str: ...
    @property
    def chunk_id(self) -> int: ...


P = TypeVar("P", bound=_Ranked)
_Votes = dict[tuple[str, int], tuple[int, int]]


def rerank(passages: Sequence[P], votes: _Votes, weight: float, prior: float = 1.0) -> list[P]:
    """`passages` ordered by score plus the feedback boost (stable for equal values)."""
    if not votes or weight == 0:
        return list(passages)

    def adjusted(p: P) -> float:
        up, down = votes.get((p.doc_id, p.chunk_id), (0, 0))
        return p.score + weight * (up - down) / (up + down + prior)

    return sorted(passages, key=adjusted, reverse=True)


class FeedbackBook:
    """The votes in force: loaded from the store at start, updated by `record`."""

    def __init__(self, store: Store, *, weight: float = 0.1, prior: float = 1.0) -> None:
        self.store = store
        self.weight = weight
        self.prior = prior
        self.generation = 0  # bumped by every recorded vote (the result cache's scope)
        self._votes: dict[str, _Votes] = _table.all_votes(store.readers.get())
        # called inside the vote's transaction (the recorder queues a rated hard example's
        # rating for the cloud, edge/candidates.py)
        self.on_vote: Callable[[sqlite3.Connection, AuditRow, bool], None] | None = None

    def votes(self, intent: str) -> _Votes:
        return self._votes.get(intent, {})

    def has_votes(self, intent: str) -> bool:
        return bool(self._votes.get(intent))

    def rerank(self, intent: str, passages: Sequence[P], k: int) -> list[P]:
        """The top `k` of `passages` for a query classified as `intent`."""
        return rerank(passages, self._votes.get(intent, {}), self.weight, self.prior)[:k]

    async def record(
        self,
        request_id: str,
        helpful: bool,
        doc_id: str | None = None,
        chunk_id: int | None = None,
    ) -> FeedbackRecorded:
        if (doc_id is None) != (chunk_id is None):
            raise PassageRefInvalid()
        row = self.store.get_audit(request_id)
        if row is None or row.kind != "decision" or not row.intent:
            raise RequestNotFound(request_id)
        intent = row.intent
        on_vote = self.on_vote

        def write(conn: sqlite3.Connection) -> None:
            _table.upsert(conn, request_id, intent, helpful, doc_id, chunk_id)
            if on_vote is not None:
                on_vote(conn, row, helpful)

        await self.store.transact(write)
        fresh = _table.votes_for_intent(self.store.readers.get(), intent)
        self._votes = {**self._votes, intent: fresh}  # a new snapshot: readers never see a mix
        self.generation += 1
        up, down = (0, 0)
        if doc_id is not None and chunk_id is not None:
            up, down = fresh.get((doc_id, chunk_id), (0, 0))
        return FeedbackRecorded(request_id, intent, helpful, doc_id, chunk_id, up, down)
