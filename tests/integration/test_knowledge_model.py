"""The knowledge index with the real int8 intent bundle, and the `aivos kb add` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aivos.edge.intent.runtime import IntentModel
from aivos.edge.knowledge import KnowledgeIndex

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "kb"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(small_bundle: Path) -> IntentModel:
    return IntentModel.load(small_bundle)


def _aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from aivos.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("query", "source", "heading"),
    [
        ("I lost my card, what should I do?", "cards.md", "Cards > Lost or stolen card"),
        (
            "I was charged twice for the same purchase",
            "cards.md",
            "Cards > Disputing a card payment",
        ),
        (
            "what time does the branch open on saturday",
            "branch.md",
            "Visiting the branch > Opening hours",
        ),
        ("how much does it cost to send money abroad", "transfers.md", None),
    ],
)
def test_real_embeddings_find_the_right_passage(
    tmp_path: Path, model: IntentModel, query: str, source: str, heading: str | None
) -> None:
    with KnowledgeIndex.open(tmp_path / "kb", model) as kb:
        for file in sorted(EXAMPLES.iterdir()):
            kb.add_document(file.name, file.read_text())
        hits = kb.search(query, k=3)
        assert hits[0].source == source, [(h.source, h.heading, h.score) for h in hits]
        if heading:
            assert hits[0].heading == heading
        assert 0 < hits[0].score <= 1
        # the agent's path: the embedding from classification serves retrieval too
        vec = model.classify(query).embedding
        assert [h.chunk_id for h in kb.search_vector(vec, k=3)] == [h.chunk_id for h in hits]


def test_kb_add_cli_indexes_a_directory_and_is_idempotent(
    tmp_path: Path, small_bundle: Path
) -> None:
    docs = tmp_path / "kb"
    shutil.copytree(EXAMPLES, docs)
    data = tmp_path / "data"
    first = _aivos("kb", "add", "--data-dir", str(data), "--bundle", str(small_bundle), str(docs))
    assert first.returncode == 0, first.stderr
    assert "kb/cards.md" in first.stdout and "added" in first.stdout
    assert "4 documents" in first.stdout
    manifest = json.loads((data / "knowledge" / "manifest.json").read_text())
    assert manifest["embedding_version"] == IntentModel.load(small_bundle).embedding_version

    (docs / "fees.txt").write_text("Account fees\n\nThe current account is now free of charge.\n")
    second = _aivos("kb", "add", "--data-dir", str(data), "--bundle", str(small_bundle), str(docs))
    assert second.returncode == 0, second.stderr
    assert "replaced" in second.stdout and "unchanged" in second.stdout
    assert "4 documents" in second.stdout

    with KnowledgeIndex.open(data / "knowledge", IntentModel.load(small_bundle)) as kb:
        assert kb.rebuilt is False
        assert sorted(d.source for d in kb.list_documents()) == [
            "kb/branch.md",
            "kb/cards.md",
            "kb/fees.txt",
            "kb/transfers.md",
        ]
        assert "free of charge" in kb.search("current account monthly fee", k=1)[0].text


def test_kb_add_cli_rejects_invalid_utf8_and_writes_nothing(
    tmp_path: Path, small_bundle: Path
) -> None:
    good = tmp_path / "good.md"
    good.write_text("# Hours\n\nOpen nine to five.\n")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latte")
    data = tmp_path / "data"
    result = _aivos(
        "kb", "add", "--data-dir", str(data), "--bundle", str(small_bundle), str(good), str(bad)
    )
    assert result.returncode == 1
    assert "bad.txt" in result.stderr and "UTF-8" in result.stderr
    assert not (data / "knowledge").exists()


def test_reopening_with_another_bundle_version_reembeds(tmp_path: Path, model: IntentModel) -> None:
    class Renamed:
        embedding_version = "another-model@1"
        embedding_dim = model.embedding_dim

        def embed_batch(self, texts: list[str]) -> np.ndarray:
            return model.embed_batch(texts)

    root = tmp_path / "kb"
    with KnowledgeIndex.open(root, model) as kb:
        kb.add_document("cards.md", (EXAMPLES / "cards.md").read_text())
        n = len(kb)
    with KnowledgeIndex.open(root, Renamed()) as kb:
        assert kb.rebuilt is True and len(kb) == n
        assert kb.search("lost card", k=1)[0].heading == "Cards > Lost or stolen card"
