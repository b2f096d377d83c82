"""A bundle's word list: the words and word pairs of its training rows with their counts
(`words.txt`).

The build writes it beside the model (listed in the manifest's `files`, so it is hashed and
verified like them); the edge's spelling correction (`edge/intent/spelling.py`) reads it so
that the site's own words ("apr", "routing", a product name) count as known and rank first
among corrections; the pairs ("reward points") pick between equally near candidates by
their neighbours. One `word<TAB>count` line per word, then one `word word<TAB>count` line per
pair, each most frequent first. A bundle without the file (built before it existed) still
loads: the edge then knows only general English.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import msgspec

from aivos.shared.errors import BundleError

__all__ = [
    "VOCABULARY_FILE",
    "Vocabulary",
    "count_words",
    "read_vocabulary",
    "word_spans",
    "write_vocabulary",
]

VOCABULARY_FILE = "words.txt"
# Runs of ASCII letters: what the corrector may change and what the word list counts.
_LETTERS = re.compile(r"[A-Za-z]+")


class Vocabulary(msgspec.Struct, frozen=True):
    words: dict[str, int]  # word -> count
    pairs: dict[str, int]  # "word next" -> count


def word_spans(text: str) -> Iterable[re.Match[str]]:
    """The runs of letters of `text`, as matches (their offsets locate them)."""
    return _LETTERS.finditer(text)


def count_words(texts: Iterable[str]) -> Vocabulary:
    """Lower-cased runs of letters over `texts` and adjacent pairs of them, counted."""
    words: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for text in texts:
        row = [m.group(0).lower() for m in word_spans(text)]
        words.update(row)
        pairs.update(f"{a} {b}" for a, b in zip(row, row[1:], strict=False))
    return Vocabulary(dict(words), dict(pairs))


def write_vocabulary(path: Path, vocabulary: Vocabulary) -> Path:
    lines = [
        f"{key}\t{n}\n"
        for counts in (vocabulary.words, vocabulary.pairs)
        for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_vocabulary(path: Path) -> Vocabulary:
    """The words and pairs of a file `write_vocabulary` wrote."""
    words: dict[str, int] = {}
    pairs: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        key, sep, count = line.partition("\t")
        parts = key.split(" ")
        if not sep or not count.isdigit() or len(parts) > 2 or not all(map(str.isalpha, parts)):
            raise BundleError(str(path), f"line {number} is not 'word[ word]<TAB>count'")
        (words if len(parts) == 1 else pairs)[key] = int(count)
    return Vocabulary(words, pairs)
