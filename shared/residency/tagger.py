"""PERSON and ADDRESS by a small token tagger: a linear model over hashed word features.

The model (`data/pii_tagger.npz`, built by the cloud tier's `modelbuild/pii_model.py`) is
an averaged perceptron with one weight row per hashed feature and class (`O`, `PERSON`,
`ADDRESS`). Its SHA-256 is recorded here and checked before it is loaded: a changed file is
refused (`ModelIntegrityError`), it is never silently used.

Cost (issue 14: the masker's budget is 1 ms for a prompt and three passages, all recognizers
together): a token's score is the sum of one vector per word in its five-word window
(`tagger_features.py`), so the tagger keeps, per distinct word seen, its five offset scores as
plain floats, and per space-separated piece of text seen, its tokens. A text is then split at
spaces and looked up piece by piece, with no regex run over it. Only the tokens that could make
a tagged run pass `_plausible` (a capitalised or non-dictionary word, a capitalised street word)
are labelled, and each tagged one grown to its whole run: the spans are those of labelling every
token (checked in `tests/unit/test_residency_tagger.py`), at a fraction of the cost. Both tables
are bounded (`CACHE_WORDS`) and start again when full.
"""

from __future__ import annotations

import hashlib
import io
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from itertools import accumulate, chain, compress, count
from operator import itemgetter
from typing import Any

import numpy as np

from aivos.shared.errors import AivosError
from aivos.shared.residency.id_labels import is_id_label
from aivos.shared.residency.names import STOP, common_words, english_names, gazetteer
from aivos.shared.residency.scan import Scan
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
from aivos.shared.residency.words import SUFFIX_WORDS

__all__ = ["MODEL_SHA256", "ModelIntegrityError", "TaggerModel", "TaggerRecognizer", "load_model"]

MODEL_FILE = "pii_tagger.npz"
#: the SHA-256 of `data/pii_tagger.npz` that `pii_model.py` printed when it built it
MODEL_SHA256 = "73e66f139afc38a3fddf2793c8e7bcd563bc88838b8edb4caf39000cf5347284"
CACHE_WORDS = 20_000
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


# a word's entry in the per-word table: `[0:5]` its PERSON and `[5:10]` its ADDRESS score
# over `O` at window offsets -2..+2, then whether it can be the word that makes a tagged run
# a name (`_P_KEY`) or a street, in text with capitals (`_A_KEY`) or in lower-case text;
# whether it can make a run a name in text written all in capitals (`_CAPS_KEY`: a known name);
# and whether it is a key word at all in mixed-case text (`_KEY`) and in lower-case text;
# last the word itself (so a text's words need no list of their own)
_P_KEY, _A_KEY, _A_KEY_LOWER, _CAPS_KEY, _KEY, _KEY_LOWER, _WORD = 10, 11, 12, 13, 14, 15, 16
_Entry = tuple[Any, ...]  # floats, flags and a word
# a space-separated piece of text: its tokens, their entries, whether one of them is a key word
# in mixed-case / lower-case / all-capitals text, and where the tokens start
_Piece = tuple[tuple[str, ...], tuple[_Entry, ...], bool, bool, bool, tuple[int, ...]]
# by the case of the whole text: which flag of a piece and of an entry marks a key word
_LOWER_TEXT, _MIXED_TEXT, _UPPER_TEXT = (3, _KEY_LOWER), (2, _KEY), (4, _CAPS_KEY)
_TOKENS, _ENTRIES, _STARTS = itemgetter(0), itemgetter(1), itemgetter(5)
_PIECE_CHARS = 64  # longer pieces (a URL, a run of base64) are tokenised each time, not kept


class TaggerModel:
    """Weights (`rows x classes`), per-class thresholds over `O`, the per-word and per-piece
    tables."""

    def __init__(
        self, weights: np.ndarray, bias: np.ndarray, margin: np.ndarray, lexicon: Lexicon
    ) -> None:
        self.lexicon = lexicon
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self._words: dict[str, _Entry] = {}
        self._pieces: dict[str, _Piece] = {}
        self._pads = (self.entry(PAD_START), self.entry(PAD_END))
        self.set_margin(margin)

    def set_margin(self, margin: np.ndarray) -> None:
        """A token is class c when `score_c - score_O > margin[c]` (`margin[0]` unused)."""
        self.margin = np.asarray(margin, dtype=np.float32)
        b, m = self.bias.astype(float), self.margin.astype(float)
        # the sum of a token's five window scores must exceed this, per class
        self._cut = (m[1] - (b[1] - b[0]), m[2] - (b[2] - b[0]))

    def entry(self, word: str) -> _Entry:
        """`word`'s row of the per-word table, computed on first sight. Plain floats: a text
        needs a few additions per token, where numpy's per-call cost would dominate."""
        found = self._words.get(word)
        if found is not None:
            return found
        d1, d2 = [], []
        for offset in OFFSETS:
            rows = feature_rows(word_features(word, offset, self.lexicon))
            o, p, a = self.weights[rows].sum(axis=0).tolist()
            d1.append(p - o)
            d2.append(a - o)
        person, street, street_lower, caps = _keys(word, self.lexicon)
        key, key_lower = person or street, person or street_lower
        found = (*d1, *d2, person, street, street_lower, caps, key, key_lower, word)
        words = self._words
        if len(words) >= CACHE_WORDS:
            words.clear()  # bounded: start again (dict operations are atomic under the GIL)
        words[word] = found
        return found

    def pieces(self, split: list[str]) -> list[_Piece]:
        """The pieces of a text split at spaces (`text.split(" ")`), tokenised. No token holds
        a space, so the tokens of a text are those of its pieces in turn; most pieces recur
        from text to text and are tokenised once (at most `CACHE_WORDS` are kept)."""
        found = list(map(self._pieces.get, split))
        if None in found:
            found = [f or self._piece(p) for f, p in zip(found, split, strict=True)]
        return found  # type: ignore[return-value]

    def _piece(self, piece: str) -> _Piece:
        tokens = tokenize(piece)
        words = tuple(t.group() for t in tokens)
        entries = tuple(map(self.entry, words))
        found = (
            words,
            entries,
            any(e[_KEY] for e in entries),
            any(e[_KEY_LOWER] for e in entries),
            any(e[_CAPS_KEY] for e in entries),
            tuple(t.start() for t in tokens),
        )
        if len(piece) <= _PIECE_CHARS:
            if len(self._pieces) >= CACHE_WORDS:
                self._pieces.clear()
            self._pieces[piece] = found
        return found

    def labels(self, words: list[str]) -> list[int]:
        """The class index of each word in its window (0 = not PII)."""
        entries = [self._pads[0], self._pads[0], *map(self.entry, words), *2 * [self._pads[1]]]
        return [self._label(entries, i) for i in range(len(words))]

    def _label(self, entries: list[_Entry], i: int) -> int:
        """The class of token `i`, given `entries` padded with two entries at each end."""
        a, b, c, d, e = entries[i : i + 5]
        over_p = a[0] + b[1] + c[2] + d[3] + e[4] - self._cut[0]
        over_a = a[5] + b[6] + c[7] + d[8] + e[9] - self._cut[1]
        if over_p >= over_a:  # a tie goes to the first class, as `argmax` did
            return 1 if over_p > 0 else 0
        return 2 if over_a > 0 else 0


def _keys(word: str, lexicon: Lexicon) -> tuple[bool, bool, bool, bool]:
    """Whether `word` passes `_plausible`'s test for one word of a run: of a name (position
    aside: a capitalised dictionary word opening a sentence counts here), of a street in text
    with capitals, of a street in lower-case text, of a name in text all in capitals. A run
    holding none of them is dropped, so only runs around such words need to be looked at."""
    if not word[:1].isalpha():
        return False, False, False, False
    person = (
        (len(word) > 1 or word.isupper())
        and word.title() not in STOP
        and (word[:1].isupper() or _unknown(word.lower(), lexicon))
    )
    street = len(word) > 1 and word.isalpha() and not word.isupper()
    street = street and word.lower() not in _MONTHS
    return person, street and word[0].isupper(), street, _caps_name(word, lexicon)


def _unknown(lower: str, lexicon: Lexicon) -> bool:
    """A lower-case word in no dictionary: not in web2, not a common word of the frequency
    list (`common_words`, known names aside), no contraction: `desrosiers`, `tomomi`, not
    `wanna`, `laptop` or `i've`."""
    return lower not in lexicon and lower not in common_words() and not _contraction(lower)


_CONTRACTIONS = ("n't", "n’t", "'ve", "’ve", "'re", "’re", "'ll", "’ll", "'m", "’m", "'d", "’d")


def _contraction(word: str) -> bool:
    """`i've`, `don't`, `i'm` (one token each): a word, no name (`o'brien` is one)."""
    return word.endswith(_CONTRACTIONS)


# In text without case (all lower or all capitals) a lone name right after one of these is
# mostly a place ("a bus to dallas", "FLIGHTS FROM HOUSTON")...
_PLACE_WORDS = "to from in at near around into towards toward via visit visiting"
# ...unless the text speaks of reaching or meeting someone ("send my location to steve")
_TALK_WORDS = """
    call calls calling called phone dial ring text texts texting message messages msg sms
    email e-mail mail talk talking speak speaking say says said tell told ask asked send sent
    give gave share sharing location whereabouts gps reply respond write wrote introduce meet
    meeting invite remind pay paid transfer owe lend
"""
_PLACE_BEFORE, _TALK = frozenset(_PLACE_WORDS.split()), frozenset(_TALK_WORDS.split())


def _year(number: str) -> bool:
    return len(number) == 4 and number[:2] in ("19", "20")


def _caps_name(word: str, lexicon: Lexicon) -> bool:
    """In text all in capitals, where case says nothing, whether `word` can make a tagged run
    a name: a known first or last name (a part of it, when hyphenated: `SMITH-JONES`), or a
    word of four letters or more that is in no dictionary and has no hyphen (`TOMOMI`; not
    `PRE-AUTHORISATION`, nor an acronym such as `PTO`). Whether it does alone: `_caps_strong`."""
    if not word[:1].isalpha():
        return False
    first, last = gazetteer()
    for part in word.split("-"):
        title = part.title()
        if title not in STOP and (title in first or title in last):
            return True
    return (
        len(word) >= 4
        and "-" not in word
        and word.title() not in STOP
        and _unknown(word.lower(), lexicon)
    )


# words after which, in text without case, a word is a common noun and no name: articles,
# possessives, demonstratives, quantifiers (`A DOCTOR`, `MY CASE`, `HOW MANY MILES`)
_DETERMINER_WORDS = """
    a an the my your his its our their this these those some any every each no many much
    few more most several all both either neither another other such
"""
_DETERMINERS = frozenset(_DETERMINER_WORDS.split())


# `'S` after these is `IS` / `US` (`HERE'S MATEJ`, `LET'S`), not a possessive
_IS_WORDS = "it he she that there here what who where how when why let"
_IS_BEFORE = frozenset(_IS_WORDS.split())


def _determined(prev: str, prev2: str, prev3: str) -> bool:
    """Whether the word after `prev` (after `prev2`, after `prev3`) is a common noun by
    position: `prev` is a determiner (`_DETERMINERS`), a number, or the `S` of a possessive
    (`DELTA'S CARRY`, not `HERE'S MATEJ`)."""
    lower = prev.lower()
    if lower in _DETERMINERS or prev[:1].isdigit():
        return True
    return lower == "s" and prev2 in ("'", "’") and prev3.lower() not in _IS_BEFORE


def _caps_strong(word: str, lexicon: Lexicon) -> bool:
    """A word that makes a run a name by itself in text all in capitals: one of `_caps_name`
    that is no lower-case dictionary word, or a name of an English-language locale
    (`english_names`: `MARY`, `FRANK`, `REED`). A known name of another locale's list that is
    also an English word (`JOKE`, `CAR`, `MALE`, `LOT`, `TRUE`) is, in English text without
    case, more often the word than the name: it makes a name only beside another name word
    (`_plausible`)."""
    if not _caps_name(word, lexicon):
        return False
    english = english_names()
    return all(
        part.title() in english or part.lower() not in lexicon for part in word.split("-") if part
    )


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
        return self._find(text, text.split(" "))

    def find_scanned(self, scan: Scan) -> list[Span]:
        return self._find(scan.text, scan.pieces)

    def _find(self, text: str, split: list[str]) -> list[Span]:
        model = self.model
        pieces = model.pieces(split)
        if text.isascii():  # the bytes methods: a table lookup per character, not Unicode's
            raw = text.encode()
            lower_text = raw.islower()
            upper_text = not lower_text and raw.isupper()
        else:
            lower_text = text.islower()
            upper_text = not lower_text and text.isupper()
        piece_key, key = _LOWER_TEXT if lower_text else _UPPER_TEXT if upper_text else _MIXED_TEXT
        if not any(map(itemgetter(piece_key), pieces)):
            return []
        start_pad, end_pad = model._pads
        padded = [
            start_pad,
            start_pad,
            *chain.from_iterable(map(_ENTRIES, pieces)),
            end_pad,
            end_pad,
        ]
        # a run the model tags is kept only if it holds a key word (`_keys`): label those,
        # then grow each tagged one to its whole run; most tokens are never labelled (token i
        # is `padded[i + 2]`; the pads are no key words)
        candidates = compress(count(-2), map(itemgetter(key), padded))
        n, label = len(padded) - 4, model._label
        runs: list[tuple[int, int, int]] = []
        for i in candidates:
            if runs and i <= runs[-1][1]:
                continue
            c = label(padded, i)
            if c == 0:
                continue
            a, b = i, i
            while a > 0 and label(padded, a - 1) == c:
                a -= 1
            while b + 1 < n and label(padded, b + 1) == c:
                b += 1
            runs.append((a, b, c))
        if not runs:
            return []
        spans: list[Span] = []
        offsets: _Offsets | None = None
        for a, b, c in runs:
            while a <= b and padded[a + 2][_WORD] in _TRIM:
                a += 1
            while b >= a and (
                padded[b + 2][_WORD] in _TRIM or lower_text and _contraction(padded[b + 2][_WORD])
            ):
                b -= 1  # also `i'm` after `jim` in lower-case text
            if c == 2 and a <= b < n - 1 and padded[b + 3][_WORD].lower() in SUFFIX_WORDS:
                b += 1  # the street word the model left out (`27 moss` + `lane`)
            if c == 1:  # the label of an id is no part of a name (`codice fiscale`, `NINO`)
                while a <= b and is_id_label(padded[a + 2][_WORD], upper_text):
                    a += 1
                while b >= a and is_id_label(padded[b + 2][_WORD], upper_text):
                    b -= 1
            before = padded[a + 1][_WORD]  # a pad's word when a == 0
            at_start = a == 0 or before in _SENTENCE_END
            entity = CLASSES[c]
            words = [e[_WORD] for e in padded[a + 2 : b + 3]]
            if a > b or not _plausible(
                entity,
                words,
                model.lexicon,
                at_start,
                lower_text,
                upper_text,
                before,
                map(itemgetter(_WORD), padded),
                padded[a][_WORD],
                padded[a - 1][_WORD] if a > 0 else "",
            ):
                continue
            offsets = offsets or _Offsets(split, pieces)
            start, end = offsets[a], offsets[b] + len(words[-1])
            glued = start > 0 and text[start - 1].isalnum() or text[end : end + 1].isalnum()
            if entity == "ADDRESS" and len(text[start:end].split()) < 2:
                continue  # one word (`ab123`, `23rd`, `DL123`): a code or an ordinal
            if not glued:
                spans.append(Span(start, end, entity))
        return spans


class _Offsets:
    """Where the tokens of a text start, found from its pieces when a span needs them."""

    def __init__(self, split: list[str], pieces: list[_Piece]) -> None:
        self.pieces = pieces
        self.tokens_before = [0, *accumulate(map(len, map(_TOKENS, pieces)))]
        self.chars_before = [0, *accumulate(map(len, split))]

    def __getitem__(self, i: int) -> int:
        k = bisect_right(self.tokens_before, i) - 1
        # piece k starts after the k pieces and the k spaces before it
        return self.chars_before[k] + k + _STARTS(self.pieces[k])[i - self.tokens_before[k]]


def _plausible(
    entity: str,
    words: list[str],
    lexicon: Lexicon,
    at_start: bool,
    lower_text: bool,
    upper_text: bool = False,
    before: str = "",
    context: Iterable[str] = (),
    before2: str = "",
    before3: str = "",
) -> bool:
    """Checks a tagged run must pass. A name holds a word that is capitalised (not merely as
    the first word of a sentence) or is no dictionary word: "boss", "Maybe" are not names,
    "Tomomi", "desrosiers", "Mark Young" are; a dictionary word is one of web2 or a common word
    of the English frequency list that is no known name ("wanna", "laptop": `_unknown`). In
    text all in lower case or all in capitals, a lone name right after a place word is a
    place ("a bus to dallas"), unless the text's words (`context`) speak of reaching someone
    ("send my location to steve": `_TALK`). In text all in capitals, where case says nothing
    and the model tags shouted words (`PRE-AUTHORISATION`), a name holds a word that makes one
    by itself (`_caps_strong`: a known name that is no English word or is a name of an
    English-language locale, or a word of four letters or more in no dictionary), two name
    words side by side (`TOM HANKS`), or a name word right after a verb of speaking to someone
    (`SAID GLADYS`); a name word right after a determiner, number or possessive is none (`A
    DOCTOR`, `5 MILES`, `DELTA'S CARRY`: `_determined`). An address holds a
    word that is not in capitals nor a month (capitalised, unless the text is all lower case),
    and a number or two capitalised words ("Tarsicio Isle"): so none in text all in capitals;
    in lower-case text a year beside one word ("2019 apart") is none, and an address is never
    one word ("ab123", "23rd": checked in `_find`).
    A run glued to a letter or digit (inside `NL35LKPF7807`) is none of them."""
    if entity == "ADDRESS":
        # a street name is capitalised, except in text written all in lower case
        named = [w for w in words if len(w) > 1 and w.isalpha() and not w.isupper()]
        if not lower_text:
            named = [w for w in named if w[0].isupper()]
        if not any(w.lower() not in _MONTHS for w in named):
            return False  # numbers, codes (`TEZU 3299`) or a date (`January 12`)
        numbers = [w for w in words if w.isdigit()]
        if numbers and lower_text and len(words) <= 2 and all(map(_year, numbers)):
            return False  # `2019 apart`, `sportage 2010`: a year beside a word
        if numbers:
            return True
        return sum(w[:1].isupper() for w in words if w.isalpha()) >= 2
    caseless = lower_text or upper_text
    if caseless and len(words) == 1 and before.lower() in _PLACE_BEFORE:
        talk = not _TALK.isdisjoint(w.lower() for w in context)
        if not talk:
            return False  # `a bus to dallas`, `FLIGHTS FROM HOUSTON`
    if upper_text:
        # a word right after a determiner, a number or a possessive `'S` is a common noun
        # (`A GOOD`, `MY ROCK`, `HOW MANY MILES`, `5 MILES`, `DELTA'S CARRY`), not a name
        seq = [before3, before2, before, *words]
        name_at = [
            _caps_name(w, lexicon)
            and not _determined(seq[k + 2], seq[k + 1], seq[k])
            and not is_id_label(w, upper_text)
            for k, w in enumerate(words)
        ]
        if any(n and _caps_strong(w, lexicon) for n, w in zip(name_at, words, strict=True)):
            return True
        if name_at[0] and before.lower() in _TALK:
            return True  # right after a verb of speaking to someone: `SAID GLADYS`, `CALL TOM`
        # dictionary words that are names too count only as two name words side by side
        # (`TOM HANKS`; not `A CAR`, `TELL ME A JOKE`)
        return any(a and b for a, b in zip(name_at, name_at[1:], strict=False))
    first, _last = gazetteer()
    for k, w in enumerate(words):
        if not w[:1].isalpha() or len(w) < 2 and not w.isupper() or is_id_label(w):
            continue
        if w[:1].isupper() and w.title() not in STOP:
            if k > 0 or not at_start or w.title() in first or _unknown(w.lower(), lexicon):
                return True
        elif w.title() not in STOP and _unknown(w.lower(), lexicon):
            return True
    return False
