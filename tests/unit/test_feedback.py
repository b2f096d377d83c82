"""Feedback votes weighted by the similarity of the rated query to the new one
(edge/feedback.py), over a real SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aivos.edge.feedback import FeedbackBook, boost, kernel
from aivos.edge.results import Passage
from aivos.edge.store import AuditRecord, Store, migrations
from aivos.edge.store.db import db_path, open_writer

V1, V2 = "enc@v1", "enc@v2"
DIM = 8


def unit(*coords: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(coords)] = coords
    return v / np.linalg.norm(v)


HOURS = unit(1, 0)  # "when are you open"
HOURS_AGAIN = unit(0.95, 0.3)  # "what time do you open" (cos 0.95 with HOURS)
TRANSFER = unit(0, 1)  # "how long does a transfer take" (cos 0 with HOURS)

# the index's order for every query below: A first, B close behind, C far
PASSAGES = [
    Passage("a", "a.md", 0.62, "A", 0),
    Passage("b", "b.md", 0.60, "B", 0),
    Passage("c", "c.md", 0.30, "C", 0),
]


def keys(passages: list[Passage]) -> list[str]:
    return [p.doc_id for p in passages]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


async def served(store: Store, request_id: str, intent: str = "oos") -> None:
    await store.append_audit(
        AuditRecord(
            id=request_id,
            kind="decision",
            intent=intent,
            confidence=None,
            decision="local",
            model_version="m1",
            latency_ms=0.0,
            pii_counts={},
            trace_id=None,
            detail={},
        ),
        sync=False,
    )


async def vote(
    book: FeedbackBook,
    request_id: str,
    embedding: np.ndarray | None,
    doc_id: str = "B",
    helpful: bool = True,
    *,
    intent: str = "oos",
    version: str = V1,
) -> None:
    """A request served (and remembered, unless `embedding` is None), then rated."""
    await served(book.store, request_id, intent)
    if embedding is not None:
        book.remember(request_id, embedding, version)
    await book.record(request_id, helpful, doc_id, 0)


def test_the_kernel_is_one_for_the_same_query_and_zero_at_tau_and_below() -> None:
    sims = np.array([1.0, 0.85, 0.7, 0.3, -1.0])
    assert kernel(sims, 0.7).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0, 0.0])
    assert kernel(sims, 0.0).tolist() == pytest.approx([1.0, 0.85, 0.7, 0.3, 0.0])


async def test_the_boost_is_bounded_by_the_weight(store: Store) -> None:
    book = FeedbackBook(store, weight=0.1, tau=0.5)
    for i in range(30):
        await vote(book, f"r{i}", HOURS, "C")
    bank = book._snap.banks[V1][("C", 0)]
    b = boost(HOURS, bank, (0, 0), weight=0.1, tau=0.5, prior=1.0)
    assert 0.09 < b < 0.1
    b_down = boost(HOURS, bank, (0, 50), weight=0.1, tau=0.5, prior=1.0)  # plain votes: k = 1
    assert -0.1 < b_down < 0
    # a clearly better passage stays on top whatever the votes
    ranked = book.rerank("oos", HOURS, V1, PASSAGES, 3)
    assert keys(ranked) == ["A", "B", "C"]
    assert [p.score for p in ranked] == [0.62, 0.60, 0.30]  # reported scores are the index's


async def test_cold_start_is_the_index_ranking(store: Store) -> None:
    book = FeedbackBook(store, weight=1.0)
    unsorted = [PASSAGES[1], PASSAGES[0], PASSAGES[2]]  # whatever order the index gave
    assert not book.has_votes("oos", V1)
    assert book.rerank("oos", HOURS, V1, unsorted, 3) == unsorted
    assert book.rerank("oos", HOURS, V1, unsorted, 2) == unsorted[:2]


async def test_a_vote_moves_similar_queries_and_not_dissimilar_ones_of_the_same_intent(
    store: Store,
) -> None:
    book = FeedbackBook(store, weight=0.1, tau=0.5)
    await vote(book, "r1", HOURS, "B")  # helpful: B answered "when are you open"
    assert book.has_votes("balance", V1)  # an embedded vote may apply to any intent
    assert keys(book.rerank("oos", HOURS_AGAIN, V1, PASSAGES, 3)) == ["B", "A", "C"]
    # same `oos` bucket, unrelated question: the vote does not apply (per intent, it did)
    assert keys(book.rerank("oos", TRANSFER, V1, PASSAGES, 3)) == ["A", "B", "C"]
    # and the similar question moves whatever intent it was classified as
    assert keys(book.rerank("balance", HOURS_AGAIN, V1, PASSAGES, 3)) == ["B", "A", "C"]


async def test_a_vote_of_another_embedding_version_counts_per_intent(store: Store) -> None:
    book = FeedbackBook(store, weight=0.1, tau=0.5)
    await vote(book, "r1", HOURS, "B", version=V1)
    # under encoder v2, v1's vector is not comparable: it counts as a plain `oos` vote
    assert book.has_votes("oos", V2)
    assert not book.has_votes("balance", V2)
    assert keys(book.rerank("oos", TRANSFER, V2, PASSAGES, 3)) == ["B", "A", "C"]
    assert keys(book.rerank("balance", HOURS, V2, PASSAGES, 3)) == ["A", "B", "C"]


async def test_a_forgotten_request_votes_per_intent(store: Store) -> None:
    book = FeedbackBook(store, weight=0.1, tau=0.5, remembered=1)
    await served(store, "old")
    book.remember("old", HOURS, V1)
    book.remember("newer", TRANSFER, V1)  # capacity 1: "old" is forgotten
    recorded = await book.record("old", True, "B", 0)
    assert (recorded.votes_up, recorded.votes_down) == (1, 0)
    assert stored(store, "old") == (None, None)
    assert keys(book.rerank("oos", TRANSFER, V1, PASSAGES, 3)) == ["B", "A", "C"]
    assert keys(book.rerank("balance", HOURS, V1, PASSAGES, 3)) == ["A", "B", "C"]


def stored(store: Store, request_id: str) -> tuple[bytes | None, str | None]:
    row = (
        store.readers.get()
        .execute(
            "SELECT embedding, embedding_version FROM passage_feedback WHERE request_id = ?",
            (request_id,),
        )
        .fetchone()
    )
    return (None if row[0] is None else bytes(row[0])), row[1]


async def test_votes_load_from_the_store_with_their_embeddings(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        book = FeedbackBook(store, weight=0.1, tau=0.5)
        await vote(book, "r1", HOURS, "B")
        await vote(book, "r2", TRANSFER, "C", helpful=False)
        blob, version = stored(store, "r1")
        assert version == V1 and blob is not None
        assert np.frombuffer(blob, dtype=np.float16).tolist() == HOURS.astype(np.float16).tolist()
        before = [keys(book.rerank("oos", q, V1, PASSAGES, 3)) for q in (HOURS_AGAIN, TRANSFER)]
    with Store.open(tmp_path) as store:  # a restart: nothing remembered, votes from the store
        book = FeedbackBook(store, weight=0.1, tau=0.5)
        after = [keys(book.rerank("oos", q, V1, PASSAGES, 3)) for q in (HOURS_AGAIN, TRANSFER)]
        assert after == before == [["B", "A", "C"], ["A", "B", "C"]]
        # the unrelated question is still not moved by the hours vote
        assert keys(book.rerank("balance", TRANSFER, V1, PASSAGES[:2], 2)) == ["A", "B"]


async def test_a_replacing_vote_keeps_the_request_embedding_and_moves_its_passage(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path) as store:
        book = FeedbackBook(store, weight=0.1, tau=0.5)
        await vote(book, "r1", HOURS, "B")
    with Store.open(tmp_path) as store:  # forgotten after the restart
        book = FeedbackBook(store, weight=0.1, tau=0.5)
        recorded = await book.record("r1", True, "C", 0)  # now about C
        assert (recorded.votes_up, recorded.votes_down) == (1, 0)
        assert stored(store, "r1")[1] == V1
        assert ("B", 0) not in book._snap.banks[V1]
        ranked = book.rerank(
            "oos", HOURS, V1, [*PASSAGES[1:], Passage("a", "a.md", 0.3, "A", 0)], 3
        )
        assert keys(ranked) == ["B", "C", "A"]  # C at 0.30 + 0.05 passes A at 0.30, not B


async def test_only_the_most_recent_embedded_votes_of_a_passage_are_kept(store: Store) -> None:
    book = FeedbackBook(store, weight=0.1, tau=0.5, max_embedded_votes=2)
    await vote(book, "r1", HOURS, "B", helpful=True)
    await vote(book, "r2", HOURS, "B", helpful=False)
    await vote(book, "r3", HOURS, "B", helpful=False)
    bank = book._snap.banks[V1][("B", 0)]
    assert bank.signs.tolist() == [-1.0, -1.0]
    assert len(FeedbackBook(store, max_embedded_votes=2)._snap.banks[V1][("B", 0)].signs) == 2


async def test_votes_from_before_the_embedding_migration_count_per_intent(tmp_path: Path) -> None:
    conn = open_writer(db_path(tmp_path))
    migrations.apply(conn, [m for m in migrations.MIGRATIONS if m[0] < "0013"])
    conn.execute(
        "INSERT INTO passage_feedback(request_id, ts, intent, helpful, doc_id, chunk_id) "
        "VALUES ('old', '2026-01-01T00:00:00+00:00', 'oos', 1, 'B', 0)"
    )
    conn.close()
    with Store.open(tmp_path) as store:
        assert stored(store, "old") == (None, None)
        book = FeedbackBook(store, weight=0.1, tau=0.5)
        assert keys(book.rerank("oos", TRANSFER, V1, PASSAGES, 3)) == ["B", "A", "C"]
        assert not book.has_votes("balance", V1)


def test_the_schema_has_the_embedding_columns(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with sqlite3.connect(db_path(tmp_path)) as conn:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(passage_feedback)")}
    assert {"embedding", "embedding_version"} <= cols
