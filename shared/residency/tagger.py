"""PERSON and ADDRESS by a small token tagger: a linear model over hashed word features.

The model (`data/pii_tagger.npz`, built by `python -m aivos.cloud.modelbuild.pii_model`) is
an averaged perceptron with one weight row per hashed feature and class (`O`, `PERSON`,
`ADDRESS`). Its SHA-256 is recorded here and checked before it is loaded: a changed file is
refused (`ModelIntegrityError`), it is never silently used.

Cost: a token's score is the sum of one vector per word in its five-word window
(`tagger_features.py`), so the tagger keeps, per distinct word seen, its five offset vectors
in a table, and scoring a text is a gather and four additions in numpy. The table is bounded
(`CACHE_WORDS`) and starts again when full.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from functools import lru_cache
from importlib import resources

import numpy as np

from aivos.shared.errors import AivosError
from aivos.shared.residency.names import STOP, gazetteer
from aivos.shared.residency.spans import Span
from aivos.shared.residency.tagger_features import (
    CLASSES,
    OFFSETS,
    PAD_END,
    PAD_START,
    Lexicon,
    feature_rows,
    tokenize,
    word_features,
)

__all__ = ["MODEL_SHA256", "ModelIntegrityError", "TaggerModel", "TaggerRecognizer", "load_model"]

MODEL_FILE = "pii_tagger.npz"
#: the SHA-256 of `data/pii_tagger.npz` that `pii_model.py` printed when it built it
MODEL_SHA256 = "73e66f139afc38a3fddf2793c8e7bcd563bc88838b8edb4caf39000cf5347284"
CACHE_WORDS = 50_000
# tokens a span may end with only when a word of the span follows (a span is trimmed of them)
_TRIM = frozenset(",.;:\n-–()'’\"")
_MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_SENTENCE_END = frozenset('.!?\n:"“')


class ModelIntegrityError(AivosError):
    """The tagger's data file does not have the recorded SHA-256."""

    def __init__(self, name: str, expected: str, found: str) -> None:
        super().__init__(f"{name}: sha256 {found}, expected {expected}")
        self.name, self.expected, self.found = name, expected, found


class TaggerModel:
    """Weights (`rows x classes`), per-class thresholds over `O`, and the per-word table."""

    def __init__(
        self, weights: np.ndarray, bias: np.ndarray, margin: np.ndarray, lexicon: Lexicon
    ) -> None:
        self.lexicon = lexicon
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.margin = margin.astype(np.float32)  # a token is class c when score_c - score_O > m_c
        n_classes = len(CLASSES)
        self._width = len(OFFSETS) * n_classes
        self._index: dict[str, int] = {}
        self._table = np.zeros((1024, len(OFFSETS), n_classes), dtype=np.float32)
        self._lock = threading.Lock()

    def _add(self, word: str) -> int:
        """Compute and store `word`'s offset vectors (caller holds the lock)."""
        i = len(self._index)
        if i >= len(self._table):
            grown = np.zeros((2 * len(self._table), *self._table.shape[1:]), np.float32)
            grown[: len(self._table)] = self._table
            self._table = grown
        for k, offset in enumerate(OFFSETS):
            rows = feature_rows(word_features(word, offset, self.lexicon))
            self._table[i, k] = self.weights[rows].sum(axis=0)
        self._index[word] = i
        return i

    def scores(self, words: list[str]) -> np.ndarray:
        """`(len(words), classes)` scores of each word in its window."""
        padded = [PAD_START, PAD_START, *words, PAD_END, PAD_END]
        # under the lock: another thread may grow the table or start it again
        with self._lock:
            index = self._index
            if len(index) + len(padded) > CACHE_WORDS:
                index.clear()
            ids = [index[w] if w in index else self._add(w) for w in padded]
            g = self._table[ids]
        n = len(words)
        return (
            g[0:n, 0] + g[1 : n + 1, 1] + g[2 : n + 2, 2] + g[3 : n + 3, 3] + g[4:, 4] + self.bias
        )

    def labels(self, words: list[str]) -> np.ndarray:
        """The class index of each word (0 = not PII)."""
        s = self.scores(words)
        over = s[:, 1:] - s[:, :1] - self.margin[1:]
        best = over.argmax(axis=1)
        return np.where(over[np.arange(len(words)), best] > 0, best + 1, 0)


@lru_cache(maxsize=1)
def load_model() -> TaggerModel:
    """The shipped model, after checking its SHA-256."""
    data = resources.files("aivos.shared.residency").joinpath("data", MODEL_FILE).read_bytes()
    return model_from_bytes(data, MODEL_SHA256)


def model_from_bytes(data: bytes, sha256: str) -> TaggerModel:
    """A model from the bytes of its `.npz` file, refused unless they hash to `sha256`."""
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise ModelIntegrityError(MODEL_FILE, sha256, found)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return TaggerModel(z["weights"], z["bias"], z["margin"], Lexicon(z["lexicon"]))


class TaggerRecognizer:
    """Names and street addresses the tagger finds (both types, like `IdPack`)."""

    entity = "PERSON"
    weak = True  # where its spans overlap a rule's, the rule names the type (`find_all`)

    def __init__(self, model: TaggerModel | None = None) -> None:
        self.model = load_model() if model is None else model

    def find(self, text: str) -> list[Span]:
        tokens = tokenize(text)
        if not tokens:
            return []
        labels = self.model.labels([t.group() for t in tokens]).tolist()
        lexicon, lower_text = self.model.lexicon, text.islower()
        spans: list[Span] = []
        i, n = 0, len(tokens)
        while i < n:
            c = labels[i]
            if c == 0 or tokens[i].group() in _TRIM:
                i += 1
                continue
            j = i
            while j + 1 < n and labels[j + 1] == c:
                j += 1
            while tokens[j].group() in _TRIM:
                j -= 1
            words = [t.group() for t in tokens[i : j + 1]]
            start, end = tokens[i].start(), tokens[j].end()
            glued = start > 0 and text[start - 1].isalnum() or text[end : end + 1].isalnum()
            at_start = _sentence_start(tokens, i)
            if not glued and _plausible(CLASSES[c], words, lexicon, at_start, lower_text):
                spans.append(Span(start, end, CLASSES[c]))
            i = j + 1
            while i < n and labels[i] == c:
                i += 1
        return spans


def _sentence_start(tokens: list[re.Match[str]], i: int) -> bool:
    return i == 0 or tokens[i - 1].group() in _SENTENCE_END


def _plausible(
    entity: str, words: list[str], lexicon: Lexicon, at_start: bool, lower_text: bool
) -> bool:
    """Checks a tagged run must pass. A name holds a word that is capitalised (not merely as
    the first word of a sentence) or is no dictionary word: "boss", "Maybe" are not names,
    "Tomomi", "desrosiers", "Mark Young" are. An address holds a word that is not in capitals
    nor a month (capitalised, unless the text is all lower case), and a number or two capitalised words ("Tarsicio Isle"). A run glued to a
    letter or digit (inside `NL35LKPF7807`) is none of them."""
    if entity == "ADDRESS":
        # a street name is capitalised, except in text written all in lower case
        named = [w for w in words if len(w) > 1 and w.isalpha() and not w.isupper()]
        if not lower_text:
            named = [w for w in named if w[0].isupper()]
        if not any(w.lower() not in _MONTHS for w in named):
            return False  # numbers, codes (`TEZU 3299`) or a date (`January 12`)
        if any(w.isdigit() for w in words):
            return True
        return sum(w[:1].isupper() for w in words if w.isalpha()) >= 2
    first, _last = gazetteer()
    for k, w in enumerate(words):
        if not w[:1].isalpha() or len(w) < 2 and not w.isupper():
            continue
        if w[:1].isupper() and w.title() not in STOP:
            if k > 0 or not at_start or w.title() in first or w.lower() not in lexicon:
                return True
        elif w.lower() not in lexicon and w.title() not in STOP:
            return True
    return False
