"""The `passage_feedback` table: one vote per answered request (`POST /v1/feedback`), keyed
by the request id, with the intent the request was classified as and, when the caller named
one, the passage the vote is about. A second vote for the same request replaces the first."""

from __future__ import annotations

import sqlite3

from aivos.edge.store._codec import iso_ago

__all__ = ["upsert", "votes_for_intent", "all_votes"]

Votes = dict[tuple[str, int], tuple[int, int]]  # (doc_id, chunk_id) -> (helpful, not helpful)


def upsert(
    conn: sqlite3.Connection,
    request_id: str,
    intent: str,
    helpful: bool,
    doc_id: str | None,
    chunk_id: int | None,
) -> None:
    conn.execute(
        "INSERT INTO passage_feedback(request_id, ts, intent, helpful, doc_id, chunk_id) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(request_id) DO UPDATE SET ts = excluded.ts, "
        "helpful = excluded.helpful, doc_id = excluded.doc_id, chunk_id = excluded.chunk_id",
        (request_id, iso_ago(0), intent, int(helpful), doc_id, chunk_id),
    )


_AGGREGATE = (
    "SELECT intent, doc_id, chunk_id, SUM(helpful) AS up, SUM(1 - helpful) AS down "
    "FROM passage_feedback WHERE doc_id IS NOT NULL AND chunk_id IS NOT NULL {where} "
    "GROUP BY intent, doc_id, chunk_id"
)


def votes_for_intent(conn: sqlite3.Connection, intent: str) -> Votes:
    rows = conn.execute(_AGGREGATE.format(where="AND intent = ?"), (intent,))
    return {(r["doc_id"], int(r["chunk_id"])): (int(r["up"]), int(r["down"])) for r in rows}


def all_votes(conn: sqlite3.Connection) -> dict[str, Votes]:
    out: dict[str, Votes] = {}
    for r in conn.execute(_AGGREGATE.format(where="")):
        out.setdefault(r["intent"], {})[(r["doc_id"], int(r["chunk_id"]))] = (
            int(r["up"]),
            int(r["down"]),
        )
    return out
