"""Split text/Markdown documents into passages for retrieval.

Passages follow the document's structure: a Markdown heading starts a new section and its
path (``"Cards > Lost card"``) travels with every passage of that section as context.
Within a section, whole paragraphs are packed into passages of up to `max_words` words;
a paragraph longer than that is cut into overlapping windows at sentence boundaries.
The output depends only on the input text and the parameters (deterministic).

The default sizes keep a passage plus its heading inside the 256-token window of the
MiniLM encoder (about 1.3 tokens per English word).
"""

from __future__ import annotations

import re

import msgspec

from aivos.shared.errors import DataError

__all__ = ["Chunk", "decode_document", "chunk_document", "document_title"]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f]")


class Chunk(msgspec.Struct, frozen=True):
    ordinal: int
    text: str
    heading: str  # heading path, " > "-joined; "" before the first heading

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading path gives the passage its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def decode_document(source: str, data: bytes) -> str:
    """Decode a document's bytes as UTF-8 text; binary or undecodable data is a `DataError`."""
    if _BINARY_BYTES.search(data[:65536]):
        raise DataError(source, "looks like a binary file (control bytes); expected UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(source, f"not valid UTF-8 (byte offset {exc.start})") from exc
    return text


def document_title(text: str) -> str | None:
    """The first level-1 Markdown heading, if any."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else _HEADING.match(line)
        if m and len(m.group(1)) == 1:
            return m.group(2)
    return None


def chunk_document(
    source: str,
    text: str,
    *,
    max_words: int = 160,
    min_words: int = 40,
    overlap_words: int = 20,
) -> list[Chunk]:
    """Split `text` into passages; an empty (or whitespace-only) document is a `DataError`."""
    if not (0 <= overlap_words < max_words // 2 and 0 < min_words <= max_words):
        raise DataError("chunking", "need 0 <= overlap_words < max_words/2 and 0 < min_words")
    if "\x00" in text:
        raise DataError(source, "document contains NUL characters")
    pieces: list[tuple[str, str]] = []
    for heading, paragraphs in _sections(text):
        for body in _pack(paragraphs, max_words, min_words, overlap_words):
            pieces.append((heading, body))
    if not pieces:
        raise DataError(source, "document is empty")
    return [Chunk(ordinal=i, text=body, heading=h) for i, (h, body) in enumerate(pieces)]


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section, in document order; empty sections dropped."""
    sections: list[tuple[str, list[str]]] = []
    path: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        if current:
            paragraphs.append("\n".join(current).strip())
            current.clear()

    def end_section() -> None:
        end_paragraph()
        kept = [p for p in paragraphs if p]
        if kept:
            sections.append((" > ".join(title for _, title in path), kept))
        paragraphs.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        if _FENCE.match(line):
            in_fence = not in_fence
            current.append(line)
            continue
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            end_section()
            level = len(heading.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, heading.group(2)))
        elif not line.strip() and not in_fence:
            end_paragraph()
        else:
            current.append(line)
    end_section()
    return sections


def _pack(paragraphs: list[str], max_words: int, min_words: int, overlap: int) -> list[str]:
    """Greedily pack paragraphs into passages of at most `max_words` words."""
    out: list[str] = []
    buf: list[str] = []
    n = 0
    for para in paragraphs:
        words = len(para.split())
        if words > max_words:
            if buf:
                out.append("\n\n".join(buf))
                buf, n = [], 0
            out.extend(_windows(para, max_words, overlap))
            continue
        if buf and n + words > max_words:
            out.append("\n\n".join(buf))
            buf, n = [], 0
        buf.append(para)
        n += words
    if buf:
        tail = "\n\n".join(buf)
        # a short tail joins the previous passage of the section when it still fits
        if out and n < min_words and len(out[-1].split()) + n <= max_words:
            out[-1] = f"{out[-1]}\n\n{tail}"
        else:
            out.append(tail)
    return out


def _windows(paragraph: str, max_words: int, overlap: int) -> list[str]:
    """Cut one long paragraph into windows of whole sentences, overlapping by ~`overlap` words."""
    sentences: list[list[str]] = []
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        # a "sentence" longer than a window is cut into plain word runs
        step = max_words - overlap
        for start in range(0, len(words), step):
            sentences.append(words[start : start + max_words])
            if start + max_words >= len(words):
                break
    out: list[str] = []
    i = 0
    while i < len(sentences):
        window: list[str] = []
        j = i
        while j < len(sentences) and (not window or len(window) + len(sentences[j]) <= max_words):
            window.extend(sentences[j])
            j += 1
        out.append(" ".join(window))
        if j >= len(sentences):
            break
        # step back over trailing sentences worth about `overlap` words
        back, k = 0, j
        while k - 1 > i and back + len(sentences[k - 1]) <= overlap:
            k -= 1
            back += len(sentences[k])
        i = k if k > i else j
    return out
