"""The site's knowledge documents as the API sees them: add, list, delete, and search with
the live model's embedding (through the batch worker, like a query)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from aivos.edge.batcher import MicroBatcher
from aivos.edge.knowledge.types import DocumentInfo
from aivos.edge.pipeline import check_text
from aivos.edge.results import Passage
from aivos.edge.serving import Classified, Serving
from aivos.shared.errors import DocumentNotFound, EmptyDocument

__all__ = ["Documents", "SearchResult"]


class SearchResult(msgspec.Struct, frozen=True):
    query: str
    passages: list[Passage]
    embedding_version: str


class Documents:
    def __init__(
        self,
        serving: Serving,
        batcher: MicroBatcher[Classified],
        *,
        max_text_chars: int,
        on_added: Callable[[], None] | None = None,
    ) -> None:
        """`on_added`: called after a document was added (the agent warms the masker's span
        cache with its passages)."""
        self.serving = serving
        self.batcher = batcher
        self._max_text = max_text_chars
        self._on_added = on_added

    async def add(self, source: str, text: str, title: str | None = None) -> DocumentInfo:
        if not text.strip():
            raise EmptyDocument()
        index = self.serving.index
        info = await asyncio.to_thread(index.add_document, source, text, title)
        if self._on_added is not None:
            self._on_added()
        return info

    async def list(self) -> list[DocumentInfo]:
        return await asyncio.to_thread(self.serving.index.list_documents)

    async def delete(self, doc_id: str) -> None:
        if not await asyncio.to_thread(self.serving.index.delete_document, doc_id):
            raise DocumentNotFound(doc_id)

    async def search(self, query: str, k: int) -> SearchResult:
        check_text(query, self._max_text)
        done = await self.batcher.submit(query)
        serving = self.serving
        passages = (
            done.passages
            if k == serving.top_k
            else serving.retrieve(serving.index, done.prediction.embedding, k)
        )
        return SearchResult(
            query=query, passages=passages, embedding_version=serving.model.embedding_version
        )
