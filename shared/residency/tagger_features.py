"""Tokens and features of the PII token tagger, shared by its build step and the edge.

Every feature of a token is a feature of one word in a window of five around it, tagged with
that word's offset (`-2 .. +2`): the word itself (lower-cased), its shape, affixes and
character trigrams at offset 0; its lower-cased form, shape and gazetteer membership at the
other offsets. Because no feature joins two words, a linear model's score of a token is a sum
over the window of one per-(word, offset) vector, and the edge computes that vector once per
distinct word (see `tagger.py`).

Features are hashed (CRC-32, stable across processes, unlike `hash`) into `N_BUCKETS` rows.

`Lexicon` says whether a lower-case word is an English dictionary word (or one with an
`-s`, `-es`, `-ed`, `-ing`, `-ly` ending): what tells "volunteer" from "desrosiers" in a
lower-case sentence. It is a Bloom filter (two CRC-32 probes in `LEXICON_BITS` bits, about
1 % false positives) of the lower-case words of the `web2` list (Webster's Second
International, public domain; from the `english-words` package, MIT), shipped inside the
model file: 512 KB instead of 210,000 strings in memory.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

import numpy as np

from aivos.shared.residency.names import STOP, gazetteer

__all__ = [
    "CLASSES",
    "N_BUCKETS",
    "OFFSETS",
    "PAD_START",
    "PAD_END",
    "tokenize",
    "word_features",
    "feature_rows",
    "Lexicon",
    "LEXICON_BITS",
]

CLASSES = ("O", "PERSON", "ADDRESS")
N_BUCKETS = 1 << 17
OFFSETS = (-2, -1, 0, 1, 2)
PAD_START, PAD_END = "<s>", "</s>"
LEXICON_BITS = 1 << 22
_ENDINGS = ("s", "es", "ed", "ing", "ly")
_SEEN_WORDS = 20_000


class Lexicon:
    """A Bloom filter of lower-case words."""

    __slots__ = ("bits", "_seen")

    def __init__(self, bits: np.ndarray) -> None:
        if bits.dtype != np.uint8 or bits.shape != (LEXICON_BITS // 8,):
            raise ValueError(f"a lexicon is {LEXICON_BITS // 8} bytes of uint8")
        self.bits = bits
        # per word asked, the answer: two CRC-32s and numpy's per-element indexing cost more
        # than the rest of a tagged run's checks together (bounded: most words recur)
        self._seen: dict[str, bool] = {}

    @classmethod
    def of(cls, words: Iterable[str]) -> Lexicon:
        bits = np.zeros(LEXICON_BITS // 8, dtype=np.uint8)
        for w in words:
            for p in _probes(w):
                bits[p >> 3] |= 1 << (p & 7)
        return cls(bits)

    def _has(self, word: str) -> bool:
        bits = self.bits
        return all(bits[p >> 3] >> (p & 7) & 1 for p in _probes(word))

    def __contains__(self, word: str) -> bool:
        """`word` (lower case) or its stem without a common ending is in the lexicon."""
        found = self._seen.get(word)
        if found is None:
            found = self._has(word) or any(
                word.endswith(e) and len(word) > len(e) + 2 and self._has(word[: -len(e)])
                for e in _ENDINGS
            )
            if len(self._seen) >= _SEEN_WORDS:
                self._seen.clear()  # dict operations are atomic under the GIL
            self._seen[word] = found
        return found


def _probes(word: str) -> tuple[int, int]:
    data = word.encode()
    return zlib.crc32(data) % LEXICON_BITS, zlib.crc32(data, 0x5BD1E995) % LEXICON_BITS


# words (letters, inner hyphens and apostrophes, but "'s" split off), digit runs, newlines,
# and every other visible character on its own
_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*(?:['’](?![sS]\b)[^\W\d_]+)*|\d+|\n|[^\w\s]")
_SHAPE_TABLE = {
    **{c: "X" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{c: "x" for c in "abcdefghijklmnopqrstuvwxyz"},
    **{c: "d" for c in "0123456789"},
}


def tokenize(text: str) -> list[re.Match[str]]:
    """The tokens of `text` (as matches: their text and offsets)."""
    return list(_TOKEN.finditer(text))


def _shape(word: str) -> str:
    """`Xx` for `Szczepańska`, `X` for `D`, `x` for `nan`, `d4` for `1985`, `XX` for `USA`."""
    if word.isdigit():
        return f"d{min(len(word), 6)}"
    if word.isalpha():
        if word.isupper():
            return "X" if len(word) == 1 else "XX"
        if word.islower():
            return "x"
        if word[0].isupper():
            return "Xx" if word[1:].islower() else "XxX"
        return "xX"
    if word[0].isalpha() or word[0].isdigit():
        return "mixed"
    return word  # punctuation: itself


def word_features(word: str, offset: int, lexicon: Lexicon, in_gazetteer: bool = True) -> list[str]:
    """The features `word` gives the token `offset` places from it. `in_gazetteer=False`
    hides gazetteer membership (the build step does so for some names, so that the model
    also learns names the gazetteer does not hold)."""
    lower = word.lower()
    shape = _shape(word)
    o = f"{offset}:"
    feats = [o + "w=" + lower, o + "s=" + shape]
    if word.isalpha():
        title = word[:1].upper() + word[1:].lower()
        first, last = gazetteer()
        if in_gazetteer:
            if title in first:
                feats.append(o + "gf")
            if title in last:
                feats.append(o + "gl")
        if title in STOP:
            feats.append(o + "stop")
        if lower in lexicon:
            feats.append(o + "lex")
        if offset == 0:
            feats.append(o + f"len={min(len(word), 12)}")
            if not word.isascii():
                feats.append(o + "nonascii")
            for k in (2, 3, 4):
                if len(lower) > k:
                    feats.append(o + f"p{k}=" + lower[:k])
                    feats.append(o + f"x{k}=" + lower[-k:])
            padded = f"^{lower}$"
            feats.extend(o + "t=" + padded[i : i + 3] for i in range(len(padded) - 2))
    return feats


def feature_rows(features: list[str]) -> list[int]:
    """The weight rows of `features`."""
    return [zlib.crc32(f.encode()) % N_BUCKETS for f in features]
