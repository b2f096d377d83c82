"""The site's knowledge index: chunked documents embedded with the intent bundle, searched with
usearch HNSW, metadata in SQLite. See docs/knowledge.md."""

from __future__ import annotations

from aivos.edge.knowledge.chunking import Chunk, chunk_document, decode_document
from aivos.edge.knowledge.index import KnowledgeIndex
from aivos.edge.knowledge.types import DocumentInfo, Embedder, Passage

__all__ = [
    "Chunk",
    "DocumentInfo",
    "Embedder",
    "KnowledgeIndex",
    "Passage",
    "chunk_document",
    "decode_document",
]
