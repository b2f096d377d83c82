"""Public value types of the knowledge index and the `Embedder` it needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np

__all__ = ["Embedder", "DocumentInfo", "Passage"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. `edge.intent.runtime.IntentModel` is the built-in one.

    Equal `embedding_version` strings promise interchangeable vectors; the index records it
    and re-embeds everything when an embedder with another version opens it.
    """

    @property
    def embedding_version(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embedding_dim) float32, each row L2-normalised."""
        ...


class DocumentInfo(msgspec.Struct, frozen=True):
    doc_id: str
    source: str
    title: str | None
    sha256: str
    added_at: float  # unix seconds
    n_chunks: int


class Passage(msgspec.Struct, frozen=True):
    text: str
    source: str
    doc_id: str
    chunk_id: int  # the chunk's key in the index (stable while its document is unchanged)
    score: float  # cosine similarity, 1.0 = same direction
    heading: str
