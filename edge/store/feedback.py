"""The `passage_feedback` table: one vote per answered request (`POST /v1/feedback`), keyed
by the request id, with the intent the request was classified as and, when the caller named
one, the passage the vote is about. A second vote for the same request replaces the first.

A vote also keeps the rated query's embedding (float16 bytes) and its embedding version when
the agent still remembered the request (NULL otherwise); a replacing vote without one keeps
the request's stored embedding (it is the same query)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import msgspec

from aivos.edge.store._codec import iso_ago

__all__ = [
    "EmbeddedVote",
    "VersionCounts",
    "all_counts",
    "all_embedded_votes",
    "counts_for_intent",
    "embedded_votes",
    "previous",
    "purge_before",
    "upsert",
]

Key = tuple[str, int]  # (doc_id, chunk_id)
# a passage's (helpful, not helpful) votes by the embedding version they carry (None: none)
VersionCounts = dict[str | None, tuple[int, int]]


class EmbeddedVote(msgspec.Struct, frozen=True):
    doc_id: str
    chunk_id: int
    embedding_version: str
    helpful: bool
    embedding: bytes  # float16, the rated query's L2-normalised embedding


def upsert(
    conn: sqlite3.Connection,
    request_id: str,
    intent: str,
    helpful: bool,
    doc_id: str | None,
    chunk_id: int | None,
    embedding: bytes | None = None,
    embedding_version: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO passage_feedback(request_id, ts, intent, helpful, doc_id, chunk_id, "
        "embedding, embedding_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(request_id) DO UPDATE SET ts = excluded.ts, "
        "helpful = excluded.helpful, doc_id = excluded.doc_id, chunk_id = excluded.chunk_id, "
        "embedding_version = CASE WHEN excluded.embedding IS NULL "
        "THEN passage_feedback.embedding_version ELSE excluded.embedding_version END, "
        "embedding = COALESCE(excluded.embedding, passage_feedback.embedding)",
        (
            request_id,
            iso_ago(0),
            intent,
            int(helpful),
            doc_id,
            chunk_id,
            embedding,
            embedding_version if embedding is not None else None,
        ),
    )


def previous(conn: sqlite3.Connection, request_id: str) -> tuple[Key | None, str | None] | None:
    """The request's current vote, if any: the passage it is about (None: none) and the
    embedding version it carries (None: no embedding)."""
    row = conn.execute(
        "SELECT doc_id, chunk_id, "
        "CASE WHEN embedding IS NULL THEN NULL ELSE embedding_version END AS version "
        "FROM passage_feedback WHERE request_id = ?",
        (request_id,),
    ).fetchone()
    if row is None:
        return None
    has_passage = row["doc_id"] is not None and row["chunk_id"] is not None
    return ((row["doc_id"], int(row["chunk_id"])) if has_passage else None), row["version"]


_AGGREGATE = (
    "SELECT intent, doc_id, chunk_id, "
    "CASE WHEN embedding IS NULL THEN NULL ELSE embedding_version END AS version, "
    "SUM(helpful) AS up, SUM(1 - helpful) AS down "
    "FROM passage_feedback WHERE doc_id IS NOT NULL AND chunk_id IS NOT NULL {where} "
    "GROUP BY intent, doc_id, chunk_id, version"
)


def counts_for_intent(conn: sqlite3.Connection, intent: str) -> dict[Key, VersionCounts]:
    return all_counts(conn, intent).get(intent, {})


def all_counts(
    conn: sqlite3.Connection, intent: str | None = None
) -> dict[str, dict[Key, VersionCounts]]:
    """intent -> passage -> embedding version (None: no embedding) -> (up, down)."""
    where, args = ("AND intent = ?", (intent,)) if intent is not None else ("", ())
    out: dict[str, dict[Key, VersionCounts]] = {}
    for r in conn.execute(_AGGREGATE.format(where=where), args):
        key = (r["doc_id"], int(r["chunk_id"]))
        out.setdefault(r["intent"], {}).setdefault(key, {})[r["version"]] = (
            int(r["up"]),
            int(r["down"]),
        )
    return out


_EMBEDDED = (
    "SELECT doc_id, chunk_id, embedding_version, helpful, embedding FROM passage_feedback "
    "WHERE embedding IS NOT NULL AND embedding_version IS NOT NULL "
    "AND doc_id IS NOT NULL AND chunk_id IS NOT NULL {where} "
    "ORDER BY doc_id, chunk_id, embedding_version, ts DESC, rowid DESC"
)


def _embedded(row: sqlite3.Row) -> EmbeddedVote:
    return EmbeddedVote(
        row["doc_id"],
        int(row["chunk_id"]),
        row["embedding_version"],
        bool(row["helpful"]),
        bytes(row["embedding"]),
    )


def embedded_votes(
    conn: sqlite3.Connection, key: Key, version: str, limit: int
) -> list[EmbeddedVote]:
    """The passage's `limit` most recent votes with an embedding of `version`."""
    rows = conn.execute(
        _EMBEDDED.format(where="AND doc_id = ? AND chunk_id = ? AND embedding_version = ?")
        + " LIMIT ?",
        (key[0], key[1], version, limit),
    )
    return [_embedded(r) for r in rows]


def all_embedded_votes(conn: sqlite3.Connection) -> Iterator[EmbeddedVote]:
    """Every vote that carries an embedding, by passage, most recent first within one."""
    for r in conn.execute(_EMBEDDED.format(where="")):
        yield _embedded(r)


def purge_before(conn: sqlite3.Connection, before: str) -> int:
    """Delete the votes cast before `before` (ISO time), their rated queries' embeddings
    with them; the number deleted (`retention.feedback_days`)."""
    return conn.execute("DELETE FROM passage_feedback WHERE ts < ?", (before,)).rowcount
