"""`meta.sqlite`: the durable truth of the knowledge index.

Documents, their chunks (text, heading path) and each chunk's vector (float32 blob) live
here, so the usearch file is a cache that can always be rebuilt from this database without
re-embedding. `state.generation` is bumped by every committed mutation; the index manifest
records the generation its file was saved at, which is how a stale file is detected.

A mutation takes a `stage` callback, run inside its transaction just before COMMIT with
(removed keys, new keys, new generation): the index writes its new file there, so a full
disk (`DiskFull`, from `shared.sqlite.immediate` or from the stage) rolls back both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aivos.edge.knowledge.types import DocumentInfo
from aivos.shared.sqlite import (
    Closing,
    Readers,
    decode_row,
    decode_rows,
    immediate,
    open_writer,
    row_dict,
)

__all__ = ["MetaStore", "ChunkRow", "Stage"]

Stage = Callable[[list[int], list[int], int], None]
"""Runs inside a mutation's transaction before COMMIT: (removed keys, new keys, generation)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    title TEXT,
    sha256 TEXT NOT NULL,
    added_at REAL NOT NULL,
    n_chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_BUSY_TIMEOUT_MS = 30_000


class ChunkRow(NamedTuple):
    """One stored chunk with its document's source, as a search result needs it."""

    key: int
    text: str
    heading: str
    doc_id: str
    source: str


class MetaStore(Closing):
    """One writer connection (callers serialise writes) plus one reader per searching thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = open_writer(
            path, synchronous="FULL", busy_timeout_ms=_BUSY_TIMEOUT_MS, mode=None
        )
        try:
            self._writer.executescript(_SCHEMA)
        except BaseException:
            self._writer.close()
            raise
        self._readers = Readers(path, busy_timeout_ms=_BUSY_TIMEOUT_MS, foreign_keys=True)

    def close(self) -> None:
        self._readers.close()
        self._writer.close()

    def _reader(self) -> sqlite3.Connection:
        return self._readers.get()

    # -- state ------------------------------------------------------------------------------
    def get_state(self, name: str) -> str | None:
        row = self._writer.execute("SELECT value FROM state WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row["value"])

    def generation(self) -> int:
        return int(self.get_state("generation") or 0)

    def _bump(self, conn: sqlite3.Connection) -> int:
        gen = int(self.get_state("generation") or 0) + 1
        conn.execute("INSERT OR REPLACE INTO state VALUES ('generation', ?)", (str(gen),))
        return gen

    # -- reads ------------------------------------------------------------------------------
    def count_chunks(self) -> int:
        row = self._reader().execute("SELECT count(*) AS n FROM chunks").fetchone()
        return int(row["n"])

    def documents(self) -> list[DocumentInfo]:
        rows = self._reader().execute(
            "SELECT doc_id, source, title, sha256, added_at, n_chunks FROM documents "
            "ORDER BY added_at, doc_id"
        )
        return decode_rows(rows, DocumentInfo)

    def document_by_source(self, source: str) -> DocumentInfo | None:
        row = self._writer.execute(
            "SELECT doc_id, source, title, sha256, added_at, n_chunks FROM documents "
            "WHERE source=?",
            (source,),
        ).fetchone()
        return None if row is None else decode_row(row, DocumentInfo)

    def chunk_keys(self, doc_id: str) -> list[int]:
        rows = self._writer.execute("SELECT key FROM chunks WHERE doc_id=?", (doc_id,))
        return [int(r["key"]) for r in rows]

    def lookup(self, keys: Iterable[int]) -> dict[int, ChunkRow]:
        wanted = [int(k) for k in keys]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._reader().execute(
            "SELECT c.key, c.text, c.heading, c.doc_id, d.source FROM chunks c "
            f"JOIN documents d ON d.doc_id = c.doc_id WHERE c.key IN ({marks})",
            wanted,
        )
        return {int(r["key"]): ChunkRow(**row_dict(r)) for r in rows}

    def iter_vectors(self, dim: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) batches of every stored chunk, in key order."""
        cursor = self._writer.execute("SELECT key, vector FROM chunks ORDER BY key")
        while rows := cursor.fetchmany(batch):
            keys = np.fromiter((r["key"] for r in rows), dtype=np.uint64, count=len(rows))
            vecs = np.frombuffer(b"".join(r["vector"] for r in rows), dtype=np.float32)
            yield keys, vecs.reshape(len(rows), dim)

    def passage_texts(self, batch: int = 256) -> Iterator[str]:
        """The text of every stored chunk, as a search returns it in a passage, in key order.
        Read a batch at a time by key (no read transaction held between batches), on the
        calling thread's reader: for a background reader such as the span-cache pre-fill."""
        last = -1
        while True:
            rows = (
                self._reader()
                .execute(
                    "SELECT key, text FROM chunks WHERE key > ? ORDER BY key LIMIT ?", (last, batch)
                )
                .fetchall()
            )
            if not rows:
                return
            yield from (str(r["text"]) for r in rows)
            last = int(rows[-1]["key"])

    def iter_texts(self, batch: int = 64) -> Iterator[list[tuple[int, str]]]:
        """(key, text embedded) batches of every stored chunk, for a re-embed."""
        rows = self._writer.execute("SELECT key, heading, text FROM chunks ORDER BY key").fetchall()
        for start in range(0, len(rows), batch):
            yield [
                (int(r["key"]), f"{r['heading']}\n{r['text']}" if r["heading"] else str(r["text"]))
                for r in rows[start : start + batch]
            ]

    # -- writes (callers hold the index's write lock) -----------------------------------------
    def replace_document(
        self,
        info: DocumentInfo,
        chunks: list[tuple[int, str, str]],
        vectors: np.ndarray,
        embedding_version: str,
        stage: Stage | None = None,
    ) -> tuple[list[int], list[int], int]:
        """Insert `info` with its chunks, dropping any document with the same source.

        Returns (removed keys, new keys, new generation), committed in one transaction
        (after `stage`; nothing is committed when it raises).
        """
        with immediate(self._writer) as conn:
            old = conn.execute("SELECT doc_id FROM documents WHERE source=?", (info.source,))
            removed: list[int] = []
            for row in old.fetchall():
                old_id = row["doc_id"]
                removed += self.chunk_keys(old_id)
                conn.execute("DELETE FROM documents WHERE doc_id=?", (old_id,))
            conn.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                (info.doc_id, info.source, info.title, info.sha256, info.added_at, info.n_chunks),
            )
            added = []
            for (ordinal, text, heading), vec in zip(chunks, vectors, strict=True):
                cur = conn.execute(
                    "INSERT INTO chunks (doc_id, ordinal, text, heading, vector) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (info.doc_id, ordinal, text, heading, np.asarray(vec, np.float32).tobytes()),
                )
                added.append(int(cur.lastrowid or 0))
            conn.execute(
                "INSERT OR REPLACE INTO state VALUES ('embedding_version', ?)",
                (embedding_version,),
            )
            gen = self._bump(conn)
            if stage is not None:
                stage(removed, added, gen)
        return removed, added, gen

    def delete_document(
        self, doc_id: str, stage: Stage | None = None
    ) -> tuple[list[int], int] | None:
        """Drop a document and its chunks; None when there is no such document. `stage` as
        for `replace_document` (not called when there is nothing to delete)."""
        with immediate(self._writer) as conn:
            keys = self.chunk_keys(doc_id)
            cur = conn.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
            if cur.rowcount == 0:
                return None  # nothing changed: the (empty) transaction commits
            gen = self._bump(conn)
            if stage is not None:
                stage(keys, [], gen)
        return keys, gen

    def replace_vectors(
        self, updates: Iterable[tuple[np.ndarray, np.ndarray]], embedding_version: str
    ) -> int:
        """Store re-embedded vectors for every chunk and the version that made them."""
        with immediate(self._writer) as conn:
            for keys, vecs in updates:
                conn.executemany(
                    "UPDATE chunks SET vector=? WHERE key=?",
                    [
                        (np.asarray(v, np.float32).tobytes(), int(k))
                        for k, v in zip(keys, vecs, strict=True)
                    ],
                )
            conn.execute(
                "INSERT OR REPLACE INTO state VALUES ('embedding_version', ?)",
                (embedding_version,),
            )
            gen = self._bump(conn)
        return gen
