"""KnowledgeIndex with a deterministic bag-of-words embedder: real usearch, real SQLite files."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from aivos.edge.knowledge import Embedder, KnowledgeIndex
from aivos.shared.errors import DataError
from aivos.shared.filelock import exclusive

DIM = 64


class HashEmbedder:
    """Each word adds a fixed pseudo-random direction; texts sharing words end up close."""

    def __init__(self, version: str = "hash-v1") -> None:
        self.embedding_version = version
        self.embedding_dim = DIM
        self.calls = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                out[row] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


CARDS = "# Cards\n\n## Lost card\n\nFreeze a lost or stolen card in the app.\n\n## Fees\n\nPayments abroad cost extra fees."
HOURS = "# Branch\n\nThe branch opening hours are nine to five on weekdays."


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeIndex:
    index = KnowledgeIndex.open(tmp_path / "kb", HashEmbedder())
    yield index
    index.close()


def test_fake_embedder_satisfies_the_protocol() -> None:
    assert isinstance(HashEmbedder(), Embedder)


def test_add_search_delete_round_trip(kb: KnowledgeIndex) -> None:
    assert kb.rebuilt is False and len(kb) == 0 and kb.search("anything") == []
    cards = kb.add_document("cards.md", CARDS)
    hours = kb.add_document("hours.txt", HOURS, title="Hours")
    assert (cards.title, cards.n_chunks, hours.title, hours.n_chunks) == ("Cards", 2, "Hours", 1)
    assert len(kb) == 3
    assert [d.source for d in kb.list_documents()] == ["cards.md", "hours.txt"]

    top = kb.search("I lost my card, freeze it", k=2)
    assert top[0].source == "cards.md" and top[0].heading == "Cards > Lost card"
    assert top[0].doc_id == cards.doc_id and "stolen" in top[0].text
    assert 0.3 < top[0].score <= 1.0 and top[0].score >= top[1].score
    assert kb.search("branch opening hours", k=1)[0].source == "hours.txt"

    assert kb.delete_document(cards.doc_id) is True
    assert kb.delete_document(cards.doc_id) is False
    assert len(kb) == 1
    assert {p.source for p in kb.search("lost card", k=3)} == {"hours.txt"}


def test_search_vector_matches_search(kb: KnowledgeIndex) -> None:
    kb.add_document("cards.md", CARDS)
    vec = kb.embedder.embed_batch(["abroad fees"])[0]
    assert kb.search_vector(vec, k=2) == kb.search("abroad fees", k=2)
    assert kb.search_vector(vec, k=2)[0].heading == "Cards > Fees"
    with pytest.raises(DataError):
        kb.search_vector(np.zeros(DIM + 1, np.float32))


def test_readding_a_source_replaces_it_and_identical_text_is_a_noop(kb: KnowledgeIndex) -> None:
    first = kb.add_document("cards.md", CARDS)
    embedder = kb.embedder
    assert isinstance(embedder, HashEmbedder)
    calls = embedder.calls
    assert kb.add_document("cards.md", CARDS) == first
    assert embedder.calls == calls  # nothing re-embedded
    second = kb.add_document("cards.md", "# Cards\n\nCards are now made of wood.")
    assert second.doc_id != first.doc_id and len(kb) == 1
    assert [d.doc_id for d in kb.list_documents()] == [second.doc_id]
    assert "wood" in kb.search("lost card", k=1)[0].text


def test_bad_documents_are_rejected_and_nothing_is_written(kb: KnowledgeIndex) -> None:
    with pytest.raises(DataError) as info:
        kb.add_document("empty.md", "  \n")
    assert info.value.source == "empty.md"
    assert len(kb) == 0 and kb.list_documents() == []


def test_reopen_memory_maps_the_saved_index(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    with KnowledgeIndex.open(root, HashEmbedder()) as kb:
        doc = kb.add_document("cards.md", CARDS)
        before = kb.search("lost card", k=2)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["embedding_version"] == "hash-v1" and manifest["embedding_dim"] == DIM
    assert manifest["n_chunks"] == 2
    embedder = HashEmbedder()
    with KnowledgeIndex.open(root, embedder) as kb:
        assert kb.rebuilt is False and embedder.calls == 0
        assert kb.search_vector(HashEmbedder().embed_batch(["lost card"])[0], k=2) == before
        assert kb.list_documents()[0].doc_id == doc.doc_id
        # the mapped view becomes writable on the first mutation
        kb.add_document("hours.txt", HOURS)
        assert kb.search("opening hours", k=1)[0].source == "hours.txt"
    with KnowledgeIndex.open(root, HashEmbedder()) as kb:
        assert kb.rebuilt is False and len(kb) == 3


def test_embedding_version_change_reembeds_everything(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    with KnowledgeIndex.open(root, HashEmbedder("hash-v1")) as kb:
        kb.add_document("cards.md", CARDS)
        kb.add_document("hours.txt", HOURS)
    new = HashEmbedder("hash-v2")
    with KnowledgeIndex.open(root, new) as kb:
        assert kb.rebuilt is True and new.calls >= 1
        assert kb.embedding_version == "hash-v2"
        assert kb.search("opening hours", k=1)[0].source == "hours.txt"
    assert json.loads((root / "manifest.json").read_text())["embedding_version"] == "hash-v2"
    again = HashEmbedder("hash-v2")
    with KnowledgeIndex.open(root, again) as kb:
        assert kb.rebuilt is False and again.calls == 0 and len(kb) == 3


@pytest.mark.parametrize("damage", ["delete_index", "corrupt_index", "delete_manifest", "stale"])
def test_inconsistent_files_are_rebuilt_from_metadata(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "kb"
    with KnowledgeIndex.open(root, HashEmbedder()) as kb:
        kb.add_document("cards.md", CARDS)
        stale_index = (root / "index.usearch").read_bytes()
        stale_manifest = (root / "manifest.json").read_bytes()
        kb.add_document("hours.txt", HOURS)
    if damage == "delete_index":
        (root / "index.usearch").unlink()
    elif damage == "corrupt_index":
        (root / "index.usearch").write_bytes(b"\x00" * 100)
    elif damage == "delete_manifest":
        (root / "manifest.json").unlink()
    else:  # crash after the metadata commit, before the index save
        (root / "index.usearch").write_bytes(stale_index)
        (root / "manifest.json").write_bytes(stale_manifest)
    embedder = HashEmbedder()
    with KnowledgeIndex.open(root, embedder) as kb:
        assert kb.rebuilt is True
        assert embedder.calls == 0  # stored vectors are reused, nothing re-embedded
        assert len(kb) == 3
        assert kb.search("opening hours", k=1)[0].source == "hours.txt"
    with KnowledgeIndex.open(root, HashEmbedder()) as kb:
        assert kb.rebuilt is False


def test_a_second_handle_sees_the_other_writers_changes(tmp_path: Path) -> None:
    """The agent's handle and `aivos kb add`'s handle on the same directory stay coherent."""
    root = tmp_path / "kb"
    agent = KnowledgeIndex.open(root, HashEmbedder())
    cli = KnowledgeIndex.open(root, HashEmbedder())
    try:
        agent.add_document("cards.md", CARDS)
        cli.add_document("hours.txt", HOURS)
        assert agent.search("opening hours", k=1)[0].source == "hours.txt"
        agent.add_document("more.txt", "Cheques are no longer accepted at the branch.")
        assert cli.search("cheques accepted", k=1)[0].source == "more.txt"
        assert len(agent) == len(cli) == 4
    finally:
        agent.close()
        cli.close()
    with KnowledgeIndex.open(root, HashEmbedder()) as kb:
        assert kb.rebuilt is False and len(kb) == 4


def test_concurrent_searches_during_writes(kb: KnowledgeIndex) -> None:
    kb.add_document("cards.md", CARDS)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                hits = kb.search("lost card", k=3)
                assert hits and hits[0].source.startswith(("cards", "doc"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(15):
        kb.add_document(f"doc{i}.txt", f"Document number {i} talks about savings rates.")
        if i % 3 == 0:
            kb.delete_document(kb.list_documents()[-1].doc_id)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(kb) == 2 + 10


def test_a_writer_waits_for_another_process_holding_the_index_lock(
    kb: KnowledgeIndex, caplog: pytest.LogCaptureFixture
) -> None:
    """Writers of one index in two processes (the agent and `aivos kb add`) take the flock
    on `directory/lock` (`shared/filelock.py`, as `aivos backup` does); here the test holds
    it as the other process would, through a file description of its own."""
    added: list[str] = []
    writer = threading.Thread(target=lambda: added.append(kb.add_document("h.txt", HOURS).title))
    with exclusive(kb.directory / "lock", "test"):
        with caplog.at_level("WARNING", logger="aivos.shared.filelock"):
            writer.start()
            give_up = time.monotonic() + 60  # a guard against hanging, not a timing claim
            while "waiting for" not in caplog.text and time.monotonic() < give_up:
                time.sleep(0.01)
        # the writer said it waits (logged just before it blocks), and it has not written
        assert "waiting for" in caplog.text and writer.is_alive()
        assert added == [] and len(kb) == 0
    writer.join(60)
    assert len(added) == 1 and len(kb) == 1
