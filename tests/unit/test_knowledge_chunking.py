"""Chunking: structure-aware, bounded passages, deterministic; bad input is a DataError."""

from __future__ import annotations

import pytest

from aivos.edge.knowledge.chunking import chunk_document, decode_document, document_title
from aivos.shared.errors import DataError


def _para(n: int, word: str = "word") -> str:
    return " ".join(f"{word}{i}" for i in range(n)) + "."


def test_headings_become_context_paths() -> None:
    text = "# Cards\n\nIntro.\n\n## Lost card\n\nFreeze it.\n\n### Abroad\n\nCall us.\n\n## Fees\n\nFree."
    chunks = chunk_document("faq.md", text)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Cards", "Intro."),
        ("Cards > Lost card", "Freeze it."),
        ("Cards > Lost card > Abroad", "Call us."),
        ("Cards > Fees", "Free."),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert chunks[1].embed_text == "Cards > Lost card\nFreeze it."
    assert document_title(text) == "Cards"


def test_hash_lines_inside_code_fences_are_not_headings() -> None:
    text = "# Setup\n\n```sh\n# not a heading\necho hi\n```\n"
    chunks = chunk_document("s.md", text)
    assert len(chunks) == 1
    assert chunks[0].heading == "Setup"
    assert "# not a heading" in chunks[0].text


def test_paragraphs_are_packed_up_to_the_limit() -> None:
    text = "\n\n".join(_para(50, f"p{i}w") for i in range(5))  # 5 x 50 words
    chunks = chunk_document("t.txt", text, max_words=120, min_words=40, overlap_words=10)
    assert [len(c.text.split()) for c in chunks] == [100, 100, 50]
    assert all(c.heading == "" for c in chunks)


def test_long_paragraph_is_cut_into_overlapping_windows() -> None:
    sentences = " ".join(f"Sentence {i} has exactly six words." for i in range(100))
    chunks = chunk_document("long.txt", sentences, max_words=60, min_words=20, overlap_words=12)
    sizes = [len(c.text.split()) for c in chunks]
    assert max(sizes) <= 60
    assert len(chunks) > 10
    for a, b in zip(chunks, chunks[1:], strict=False):
        # consecutive windows share their boundary sentences
        assert a.text.split(". ")[-1].rstrip(".") in b.text
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence {i} " in joined for i in range(100))


def test_run_on_text_without_sentence_breaks_is_still_bounded() -> None:
    chunks = chunk_document("blob.txt", " ".join(["x"] * 1000), max_words=100, overlap_words=10)
    assert all(len(c.text.split()) <= 100 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) >= 1000


def test_short_tail_merges_into_previous_passage() -> None:
    text = _para(100) + "\n\n" + "Tiny tail."
    chunks = chunk_document("t.txt", text, max_words=120, min_words=30)
    assert len(chunks) == 1
    assert chunks[0].text.endswith("Tiny tail.")


def test_chunking_is_deterministic() -> None:
    text = "# A\n\n" + "\n\n".join(_para(70, f"s{i}") for i in range(6))
    assert chunk_document("a.md", text) == chunk_document("a.md", text)


@pytest.mark.parametrize("text", ["", "   \n\n\t\n", "# Only a heading\n\n## Another\n"])
def test_empty_documents_are_rejected_naming_the_source(text: str) -> None:
    with pytest.raises(DataError) as info:
        chunk_document("empty.md", text)
    assert info.value.source == "empty.md"


def test_invalid_utf8_is_rejected_naming_the_source() -> None:
    with pytest.raises(DataError) as info:
        decode_document("bad.txt", b"caf\xe9 au lait")
    assert info.value.source == "bad.txt"
    assert "UTF-8" in str(info.value)


def test_binary_data_is_rejected() -> None:
    with pytest.raises(DataError) as info:
        decode_document("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert info.value.source == "image.png"


def test_utf8_with_bom_and_crlf_decodes() -> None:
    text = decode_document("w.txt", "\ufeff# Título\r\n\r\nCafé.\r\n".encode())
    chunks = chunk_document("w.txt", text)
    assert [(c.heading, c.text) for c in chunks] == [("Título", "Café.")]
