"""Retrieval that learns from feedback: `POST /v1/feedback` votes re-rank passages, each vote
weighted by how similar the rated query is to the new one.

A caller rates an answered request (`request_id` from `/v1/infer`): helpful or not, and
optionally which passage (`doc_id`, `chunk_id`) the rating is about. The vote is stored with
the intent the audit row recorded for that request (one vote per request; a second one
replaces it) and, when the agent still remembers the request (`remember`, a bounded
in-memory map filled when a request is served with passages), with the rated query's
embedding and the embedding version it was made in. A passage's votes move it:

    adjusted = score + weight * sum_v k(q, e_v) * s_v / (sum_v k(q, e_v) + prior)
    k(q, e) = max(0, (cos(q, e) - tau) / (1 - tau))

`s_v` is +1 for helpful, -1 for not. A vote with an embedding of the current version counts
for any query, by the similarity `k` of its query `e_v` to the new one `q` (a vote about
"opening hours" does not move a question about transfers, even when both were filed under
the same intent). A vote without a usable embedding (the request was forgotten, or it was
made under another encoder, whose vectors are not comparable) counts as before the
embeddings: `k = 1`, and only for queries of the intent it was recorded with; with only
such votes the formula is the per-intent one, `(up - down) / (up + down + prior)`.

`score` is the cosine similarity from the index. The passage's own `score` stays what the
index said (answerability and the `min_score` floor use it); only the order changes. With no
votes nothing moves: cold-start ranking is the index's. The boost is bounded by `weight`, so
feedback reorders close candidates but cannot lift an unrelated passage over a clearly
better one. Only the `MAX_EMBEDDED_VOTES` most recent embedded votes of a passage are kept
in memory, so re-ranking stays cheap in the batch worker.

Re-ranking runs in the batch worker thread (`Serving.classify_batch`); votes are read from an
immutable snapshot that `record` replaces as a whole, so no lock is needed.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import msgspec
import numpy as np

from aivos.edge.store import AuditRow, Store
from aivos.edge.store import feedback as _table
from aivos.shared.errors import InvalidInput, NotFound

__all__ = [
    "FeedbackBook",
    "FeedbackRecorded",
    "PassageRefInvalid",
    "RequestNotFound",
    "boost",
    "kernel",
]


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
Key = tuple[str, int]  # (doc_id, chunk_id)

REMEMBERED_REQUESTS = 10_000  # ~7.7 MB of float16 384-d embeddings
MAX_EMBEDDED_VOTES = 256  # per passage and embedding version, the most recent


def kernel(similarities: np.ndarray, tau: float) -> np.ndarray:
    """How much a vote counts for a query at cosine similarity `similarities`: 1 for the
    same query, falling linearly to 0 at `tau` and below."""
    return np.maximum(0.0, (similarities - tau) / (1.0 - tau))


class _Bank(msgspec.Struct, frozen=True):
    """A passage's embedded votes of one embedding version."""

    vectors: np.ndarray  # (n, dim) float32, L2-normalised rated queries
    signs: np.ndarray  # (n,) float32, +1 helpful, -1 not


class _Snapshot(msgspec.Struct, frozen=True):
    # intent -> passage -> embedding version (None: no embedding) -> (up, down)
    counts: dict[str, dict[Key, _table.VersionCounts]]
    # embedding version -> passage -> its most recent embedded votes
    banks: dict[str, dict[Key, _Bank]]


def _bank(votes: Sequence[_table.EmbeddedVote]) -> _Bank | None:
    if not votes:
        return None
    vectors = np.stack([np.frombuffer(v.embedding, dtype=np.float16) for v in votes])
    vectors = vectors.astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    signs = np.array([1.0 if v.helpful else -1.0 for v in votes], dtype=np.float32)
    return _Bank(vectors, signs)


def _other_versions(counts: _table.VersionCounts | None, version: str) -> tuple[int, int]:
    """The (up, down) votes that have no embedding comparable with `version`."""
    up = down = 0
    for v, (u, d) in (counts or {}).items():
        if v != version:
            up, down = up + u, down + d
    return up, down


def boost(
    query: np.ndarray,
    bank: _Bank | None,
    plain: tuple[int, int],
    *,
    weight: float,
    tau: float,
    prior: float,
) -> float:
    """The feedback boost of one passage: its embedded votes weighted by similarity to
    `query`, its `plain` (up, down) votes with weight 1. |boost| < weight."""
    up, down = plain
    num, den = float(up - down), float(up + down)
    if bank is not None:
        k = kernel(bank.vectors @ query, tau)
        num += float(k @ bank.signs)
        den += float(k.sum())
    return weight * num / (den + prior)


class FeedbackBook:
    """The votes in force: loaded from the store at start, updated by `record`."""

    def __init__(
        self,
        store: Store,
        *,
        weight: float = 0.1,
        tau: float = 0.7,  # knowledge.feedback_tau (benchmarks/feedback_rerank.py chose it)
        prior: float = 1.0,
        remembered: int = REMEMBERED_REQUESTS,
        max_embedded_votes: int = MAX_EMBEDDED_VOTES,
    ) -> None:
        if not 0 <= tau < 1:
            raise ValueError("tau is in [0, 1)")
        self.store = store
        self.weight = weight
        self.tau = tau
        self.prior = prior
        self.capacity = remembered
        self.max_embedded_votes = max_embedded_votes
        self.generation = 0  # bumped by every recorded vote (the result cache's scope)
        # request id -> (embedding version, float16 embedding), oldest first (FIFO)
        self._remembered: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._snap = self._load(store.readers.get())
        # called inside the vote's transaction (the recorder queues a rated hard example's
        # rating for the cloud, edge/candidates.py)
        self.on_vote: Callable[[sqlite3.Connection, AuditRow, bool], None] | None = None

    def _load(self, conn: sqlite3.Connection) -> _Snapshot:
        banks: dict[str, dict[Key, _Bank]] = {}
        group: list[_table.EmbeddedVote] = []
        for vote in _table.all_embedded_votes(conn):  # by passage and version, newest first
            if group and (vote.doc_id, vote.chunk_id, vote.embedding_version) != (
                group[0].doc_id,
                group[0].chunk_id,
                group[0].embedding_version,
            ):
                self._keep(banks, group)
                group = []
            if len(group) < self.max_embedded_votes:
                group.append(vote)
        self._keep(banks, group)
        return _Snapshot(_table.all_counts(conn), banks)

    @staticmethod
    def _keep(banks: dict[str, dict[Key, _Bank]], group: list[_table.EmbeddedVote]) -> None:
        bank = _bank(group)
        if bank is not None:
            first = group[0]
            banks.setdefault(first.embedding_version, {})[(first.doc_id, first.chunk_id)] = bank

    def reload(self) -> None:
        """Read the votes again (retention deleted old ones): a new snapshot, and cached
        results re-ranked by the old votes are dropped."""
        self._snap = self._load(self.store.readers.get())
        self.generation += 1

    def remember(self, request_id: str, embedding: np.ndarray, embedding_version: str) -> None:
        """Keep a served request's query embedding until it is rated (or forgotten: the
        oldest go first beyond `capacity`)."""
        self._remembered[request_id] = (embedding_version, embedding.astype(np.float16))
        if len(self._remembered) > self.capacity:
            self._remembered.popitem(last=False)

    def has_votes(self, intent: str, embedding_version: str) -> bool:
        """Whether any vote could move a query of `intent` embedded in `embedding_version`."""
        snap = self._snap
        return bool(snap.banks.get(embedding_version)) or bool(snap.counts.get(intent))

    def rerank(
        self,
        intent: str,
        embedding: np.ndarray,
        embedding_version: str,
        passages: Sequence[P],
        k: int,
    ) -> list[P]:
        """The top `k` of `passages` for a query classified as `intent`, embedded as
        `embedding` (L2-normalised) in `embedding_version`."""
        snap = self._snap
        banks = snap.banks.get(embedding_version, {})
        counts = snap.counts.get(intent, {})
        if self.weight == 0 or not (banks or counts):
            return list(passages[:k])
        query = np.asarray(embedding, dtype=np.float32)
        boosts = [
            boost(
                query,
                banks.get((p.doc_id, p.chunk_id)),
                _other_versions(counts.get((p.doc_id, p.chunk_id)), embedding_version),
                weight=self.weight,
                tau=self.tau,
                prior=self.prior,
            )
            for p in passages
        ]
        if not any(boosts):
            return list(passages[:k])
        order = sorted(
            range(len(passages)), key=lambda i: passages[i].score + boosts[i], reverse=True
        )
        return [passages[i] for i in order[:k]]

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
        remembered = self._remembered.get(request_id)
        version, blob = (remembered[0], remembered[1].tobytes()) if remembered else (None, None)

        def write(conn: sqlite3.Connection) -> tuple[Key | None, str | None] | None:
            before = _table.previous(conn, request_id)
            _table.upsert(conn, request_id, intent, helpful, doc_id, chunk_id, blob, version)
            if on_vote is not None:
                on_vote(conn, row, helpful)
            return before

        before = await self.store.transact(write)
        key = (doc_id, chunk_id) if doc_id is not None and chunk_id is not None else None
        if version is None and before is not None:
            version = before[1]  # a replacing vote keeps the request's stored embedding
        self._snap = self._refresh(intent, [before or (None, None), (key, version)])
        self.generation += 1
        mine = self._snap.counts.get(intent, {}).get(key) if key is not None else None
        up = sum(u for u, _ in (mine or {}).values())
        down = sum(d for _, d in (mine or {}).values())
        return FeedbackRecorded(request_id, intent, helpful, doc_id, chunk_id, up, down)

    def _refresh(self, intent: str, changed: list[tuple[Key | None, str | None]]) -> _Snapshot:
        """A new snapshot (readers never see a mix) with `intent`'s counts and the changed
        passages' embedded votes read again from the store."""
        conn = self.store.readers.get()
        old = self._snap
        counts = {**old.counts, intent: _table.counts_for_intent(conn, intent)}
        banks = dict(old.banks)
        for key, version in changed:
            if key is None or version is None:
                continue
            votes = _table.embedded_votes(conn, key, version, self.max_embedded_votes)
            bank = _bank(votes)
            of_version = {k: b for k, b in banks.get(version, {}).items() if k != key}
            if bank is not None:
                of_version[key] = bank
            banks[version] = of_version
        return _Snapshot(counts, banks)
