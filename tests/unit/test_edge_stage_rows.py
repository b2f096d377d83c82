"""KnowledgeIndex's remembered chunk rows (issue 16): a search reads a chunk's row from
meta.sqlite once, later searches take it from memory, and every change of the searched view
(a document added, replaced or deleted, here or by another handle) drops what is remembered.
Real usearch and SQLite files, a deterministic bag-of-words embedder."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aivos.edge.knowledge import KnowledgeIndex
from aivos.edge.knowledge import index as index_module

DIM = 32


class _WordEmbedder:
    embedding_version = "words-v1"
    embedding_dim = DIM

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                out[row] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


class _CountingMeta:
    """The index's MetaStore, counting the keys each `lookup` asks SQLite for."""

    def __init__(self, meta: Any) -> None:
        self._meta = meta
        self.asked: list[list[int]] = []

    def lookup(self, keys: Iterable[int]) -> Any:
        wanted = list(keys)
        self.asked.append(wanted)
        return self._meta.lookup(wanted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._meta, name)


CARDS = "# Cards\n\n## Lost card\n\nFreeze a lost or stolen card in the app.\n\n## Fees\n\nPayments abroad cost extra fees."
HOURS = "# Branch\n\nThe branch opening hours are nine to five on weekdays."


@pytest.fixture
def kb(tmp_path: Path) -> Any:
    index = KnowledgeIndex.open(tmp_path / "kb", _WordEmbedder())
    index.add_document("cards.md", CARDS)
    index.add_document("hours.txt", HOURS)
    counting = _CountingMeta(index._meta)
    index._meta = counting  # type: ignore[assignment]
    yield index, counting
    index._meta = counting._meta
    index.close()


def _fields(passages: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.source, p.doc_id, p.chunk_id, p.score, p.text, p.heading) for p in passages]


def test_rows_are_read_once_and_passages_stay_the_same(kb: Any) -> None:
    index, meta = kb
    first = index.search("I lost my card", k=3)
    assert (
        len(first) == 3
        and meta.asked
        and sorted(meta.asked[0]) == sorted(p.chunk_id for p in first)
    )
    asked = len(meta.asked)
    again = [index.search("I lost my card", k=3) for _ in range(3)]
    assert len(meta.asked) == asked  # all from memory
    assert all(_fields(a) == _fields(first) for a in again)
    # a query reaching a chunk not yet read asks SQLite for that chunk only
    index.search("branch opening hours", k=1)
    assert all(len(keys) <= 1 for keys in meta.asked[asked:])


def test_a_change_of_the_view_drops_remembered_rows(kb: Any, tmp_path: Path) -> None:
    index, meta = kb
    before = index.search("lost card fees", k=3)
    cards = next(d for d in index.list_documents() if d.source == "cards.md")
    assert index.delete_document(cards.doc_id) is True
    asked = len(meta.asked)
    after = index.search("lost card fees", k=3)
    assert {p.source for p in after} == {"hours.txt"}
    assert len(meta.asked) == asked + 1  # read again for the new view
    assert {p.source for p in before} >= {"cards.md"}

    # a document replaced by another handle (as `aivos kb add` would) is seen as changed
    with KnowledgeIndex.open(tmp_path / "kb", _WordEmbedder()) as other:
        other.add_document("hours.txt", "# Branch\n\nThe branch is open on Saturdays too.")
    replaced = index.search("branch open", k=1)
    assert "Saturdays" in replaced[0].text


def test_remembered_rows_are_bounded(kb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    index, meta = kb
    monkeypatch.setattr(index_module, "_ROW_CACHE", 2)
    queries = ["stolen card freeze", "payments abroad extra fees", "branch opening hours"]
    tops = [index.search(q, k=1)[0].chunk_id for q in queries]
    assert len(set(tops)) == 3  # three chunks, one per query
    assert len(index._rows) <= 2  # the third row dropped the two remembered before it
    asked = len(meta.asked)
    assert index.search(queries[0], k=1)[0].chunk_id == tops[0]
    assert len(meta.asked) == asked + 1  # forgotten, so read again
