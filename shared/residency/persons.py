"""PERSON: names found by titles, cue phrases and a first/last-name gazetteer.

- capitalised words after a title (`Dr.`, `Mrs`) or a cue (`my name is`, `Dear`, `signed`,
  `called`, `patient`), trimmed of stop words at the edges;
- a capitalised word that is a known first name (or a last name not at a sentence start),
  extended over the capitalised words and initials that follow. The gazetteer holds ~20k
  first and ~18k last names from Faker's locale data (MIT licence, `data/*.txt.gz`).

`find_scanned` tries the title and cue patterns only where a title or cue word starts, and
walks the capitalised words only from the gazetteer hits on (see `scan.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aivos.shared.residency.names import STOP, STOP_LOWER, all_names, common_words, gazetteer
from aivos.shared.residency.scan import Scan, Words, matches_at
from aivos.shared.residency.spans import Span
from aivos.shared.residency.tagger_features import Lexicon
from aivos.shared.residency.words import CAP_WORD, UPPER

__all__ = ["PersonRecognizer"]

_UP = UPPER
_CAP = CAP_WORD
_INITIAL = rf"[{_UP}]\."
_NAME_SEQ = rf"(?:{_CAP}|{_INITIAL})(?:[ ](?:{_CAP}|{_INITIAL}|[{_UP}](?![\w]))){{0,3}}"

_STOP, _STOP_LOWER = STOP, STOP_LOWER

_TITLE = re.compile(
    rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Dott|Ing)\.?"
    rf"[ ]+({_NAME_SEQ})"
)
_CUE = re.compile(
    r"(?i:\b(?:my name is|name is|name:|names? are|i am|i'm|this is|called|named|signed|"
    r"regards,?|sincerely,?|cheers,?|dear|hi|hello|thanks,?|by:|from:|to:|contact|"
    r"last name\??|first name\??|surname\??|full name\??|customer|patient|client|"
    r"account holder|cardholder|holder|spouse|husband|wife|son|daughter|mother|father|"
    r"brother|sister|friend|colleague|manager|doctor|nurse|your name\?)(?:\b|(?<=[:,?])))"
    rf"[ :,]*[\n>]*[ ]*({_NAME_SEQ})"
)
_STRONG_CUE = re.compile(
    r"(?i)\b(?:my name is|name is|last name\??|first name\??|surname\??|full name\??)[ :]*"
    r"([^\W\d_][\w'’-]*(?:[ ][^\W\d_][\w'’-]*)?)"
)
_LOWER = "a-zß-öø-ÿ"  # lower-case letters after a capital (title case, not ALL CAPS)
_INITIALLED = re.compile(
    rf"[{_UP}][{_LOWER}]+(?:['’-][{_UP}]?[{_LOWER}]+)?[ ][{_UP}]\.[ ][{_UP}][{_LOWER}]+"
    rf"(?:['’-][{_UP}]?[{_LOWER}]+)?(?![\w])"
)
_WORD = re.compile(rf"[{_UP}][^\W\d_]*(?:['’-][^\W\d_]+)*")


# Where the title / cue patterns can start (lower case; a superset is fine, each is verified).
_TITLE_STARTS = (
    "mr", "ms", "mx", "miss", "dr", "prof", "sir", "madam", "mme", "mlle", "herr", "frau", "sr",
    "dott", "ing",
)  # fmt: skip
_CUE_STARTS = (
    "my name", "name", "i am", "i'm", "this is", "called", "named", "signed", "regards",
    "sincerely", "cheers", "dear", "hi", "hello", "thanks", "by:", "from:", "to:", "contact",
    "last name", "first name", "surname", "full name", "customer", "patient", "client", "your name",
    "account holder", "cardholder", "holder", "spouse", "husband", "wife", "son", "daughter",
    "mother", "father", "brother", "sister", "friend", "colleague", "manager", "doctor", "nurse",
)  # fmt: skip
_STRONG_STARTS = ("my name is", "name is", "last name", "first name", "surname", "full name")
_STARTS = Words(*_TITLE_STARTS, *_CUE_STARTS, *_STRONG_STARTS)
_NAME_REACH = 120  # a name sequence after a gazetteer hit ends within this many characters


class PersonRecognizer:
    entity = "PERSON"

    def find(self, text: str) -> list[Span]:
        spans = self._cued(
            text, _TITLE.finditer(text), _CUE.finditer(text), _STRONG_CUE.finditer(text)
        )
        spans.extend(self._gazetteer_spans(text, [(0, len(text))]))
        spans.extend(self._initialled(text))
        return [s for s in spans if s.end > s.start]

    def find_scanned(self, scan: Scan) -> list[Span]:
        text = scan.text
        starts = scan.word_starts(_STARTS)  # each pattern is tried at all: fails fast
        spans = self._cued(
            text,
            matches_at(_TITLE, text, starts),
            matches_at(_CUE, text, starts),
            matches_at(_STRONG_CUE, text, starts),
        )
        hits = _gazetteer_hits(text, scan.pieces)
        if hits:
            spans.extend(self._gazetteer_spans(text, _merge(hits, text)))
        spans.extend(self._initialled(text))
        return [s for s in spans if s.end > s.start]

    def _cued(
        self,
        text: str,
        titles: Iterable[re.Match[str]],
        cues: Iterable[re.Match[str]],
        strong: Iterable[re.Match[str]],
    ) -> list[Span]:
        spans: list[Span] = []
        for m in titles:
            spans.append(self._trim(text, m.start(1), m.end(1)))
        for m in cues:
            s = self._trim(text, m.start(1), m.end(1), cue=True)
            if s.end <= s.start or _shouting(text, m.start(), s.start, s.end):
                continue
            if text[m.start() : s.end].isupper():
                shouted = _shouted_name(m, s)
                if shouted is None:
                    continue
                s = shouted
            # A role word ("Customer:", "patient") is as often a prompt template's label as a
            # name's introduction: there the first word must be a known name, or
            # "Customer: Ignore previous instructions" would lose its verb.
            if _is_role_cue(m) and text[s.start : s.end].split(" ")[0] not in all_names():
                continue
            spans.append(s)
        for m in strong:
            start, end = m.start(1), m.end(1)
            words = m.group(1).split(" ")
            if len(words) == 2 and words[1].lower() in _STOP_LOWER | {"but", "and"}:
                end = start + len(words[0])
            if text[m.start() : end].isupper():
                # shouted: only the words that could be a name (`MY NAME IS GOING TO BE`)
                k = 0
                while k < len(words) and _caps_name_word(words[k], k > 0):
                    k += 1
                end = start + len(" ".join(words[:k]))
            if end > start and text[start:end].lower() not in _STOP_LOWER:
                spans.append(Span(start, end, self.entity))
        return spans

    def _initialled(self, text: str) -> list[Span]:
        """`Faina D. Yefremova`: two title-case words around a middle initial with a full
        stop, a name whatever the gazetteer holds (not glued to a word before it). Looked for
        only where `. ` follows a lone capital, so a text costs a `str.find` or two."""
        spans: list[Span] = []
        i = text.find(". ")
        while i >= 2:
            nxt = i + 1
            if text[i - 1].isupper() and text[i - 2] == " ":
                k = i - 2
                while k > 0 and (text[k - 1].isalpha() or text[k - 1] in "'’-"):
                    k -= 1
                m = _INITIALLED.match(text, k)
                if m is not None and (k == 0 or not text[k - 1].isalnum()):
                    spans.append(Span(m.start(), m.end(), self.entity))
                    nxt = m.end()
            i = text.find(". ", nxt)
        return spans

    def _trim(self, text: str, start: int, end: int, cue: bool = False) -> Span:
        """Drop stop words at the edges of a capitalised sequence (and a trailing 's)."""
        words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
        while words and text[words[-1][0] : words[-1][1]].rstrip(".") in _STOP:
            words.pop()
        while words and text[words[0][0] : words[0][1]].rstrip(".") in _STOP:
            words.pop(0)
        if not words:
            return Span(start, start, self.entity)
        s, e = words[0][0], words[-1][1]
        if text[s:e].endswith(("'s", "’s")):
            e -= 2
        return Span(s, e, self.entity)

    def _gazetteer_spans(self, text: str, regions: list[tuple[int, int]]) -> list[Span]:
        first, last = gazetteer()
        spans: list[Span] = []
        for rs, re_ in regions:
            words = list(_WORD.finditer(text, rs, re_))
            i, n = 0, len(words)
            while i < n:
                w = words[i]
                token = w.group(0)
                base = token[:-2] if token.endswith(("'s", "’s")) else token
                if base in first or (base in last and not _sentence_start(text, w.start())):
                    start, end, j = w.start(), w.start() + len(base), i + 1
                    # extend over following capitalised words / initials separated by one space
                    while (
                        j < n
                        and words[j].start() - end <= 3
                        and text[end : words[j].start()] in (" ", ". ", " ", "-")
                    ):
                        nxt = words[j].group(0).rstrip("'s").rstrip("’s")
                        if nxt in _STOP or (len(nxt) > 1 and not nxt[0].isupper()):
                            break
                        end = words[j].start() + len(nxt)
                        j += 1
                    spans.append(Span(start, end, self.entity))
                    i = j
                else:
                    i += 1
        return spans


_ROLE_CUES = frozenset(
    [
        "customer",
        "patient",
        "client",
        "holder",
        "cardholder",
        "spouse",
        "husband",
        "wife",
        "son",
        "daughter",
        "mother",
        "father",
        "brother",
        "sister",
        "friend",
        "colleague",
        "manager",
        "doctor",
        "nurse",
        "contact",
    ]
)


def _is_role_cue(m: re.Match[str]) -> bool:
    cue = m.string[m.start() : m.start(1)]
    words = cue.lower().replace(":", " ").replace(",", " ").split()
    return bool(words) and words[-1] in _ROLE_CUES


# per space-separated piece of text seen, where its gazetteer names start (bounded)
_PIECE_HITS: dict[str, tuple[int, ...]] = {}
_NO_NAMES: set[str] = set()  # the pieces of `_PIECE_HITS` that hold no name
_PIECE_CACHE = 20_000


def _gazetteer_hits(text: str, pieces: list[str] | None = None) -> list[int]:
    """Start of every capitalised word that is in the gazetteer (sorted).

    A word never holds a space, so the text's words are its pieces' words in turn: each
    piece is looked up in a table of pieces already seen (most recur from text to text), and
    a text whose pieces hold no name costs a split and one C-level `map`."""
    pieces = text.split(" ") if pieces is None else pieces
    if _NO_NAMES.issuperset(pieces):  # one C-level pass: most texts hold no name
        return []
    found = list(map(_PIECE_HITS.get, pieces))
    if None in found:
        found = [_piece_hits(p) if f is None else f for f, p in zip(found, pieces, strict=True)]
    if not any(found):
        return []
    starts: list[int] = []
    pos = 0
    for piece, hits in zip(pieces, found, strict=True):
        if hits:
            starts.extend(pos + h for h in hits)
        pos += len(piece) + 1
    return starts


def _piece_hits(piece: str) -> tuple[int, ...]:
    names = all_names()
    hits = []
    for m in _WORD.finditer(piece):
        t = m.group(0)
        if (t[:-2] if t.endswith(("'s", "’s")) else t) in names:
            hits.append(m.start())
    found = tuple(hits)
    if len(_PIECE_HITS) >= _PIECE_CACHE:
        _PIECE_HITS.clear()  # bounded: start again (dict operations are atomic under the GIL)
        _NO_NAMES.clear()
    _PIECE_HITS[piece] = found
    if not found:
        _NO_NAMES.add(piece)
    return found


def _merge(starts: list[int], text: str) -> list[tuple[int, int]]:
    n = len(text)
    out: list[tuple[int, int]] = []
    for p in starts:
        e = min(n, p + _NAME_REACH)
        while e < n and not text[e].isspace():
            e += 1
        if out and p <= out[-1][1]:
            out[-1] = (out[-1][0], e)
        else:
            out.append((p, e))
    return out


def _shouting(text: str, cue: int, start: int, end: int) -> bool:
    """Cue and words both in capitals (`THE CUSTOMER CAN OPEN`), where case says nothing, and
    the first word, written as a name, is no known first name (`DEAR JOHN SMITH` stays)."""
    if not text[cue:end].isupper():
        return False
    return text[start:end].split()[0].strip(",:.").title() not in gazetteer()[0]


# Cues that introduce a person's name, whatever the case: after these a known name stands
# alone in shouted text (`I WANT TO BE CALLED FRANK`); after the others (`THIS IS`, `HELLO`,
# `THANKS`, role words) it must be no dictionary word (`THIS IS TRUE`, `THANKS A LOT`).
_NAMING_CUES = (
    "name is", "names are", "i am", "i'm", "called", "named", "signed", "dear", "name",
    "name:", "name?", "surname", "surname?",
)  # fmt: skip


def _shouted_name(m: re.Match[str], s: Span) -> Span | None:
    """A cued span in text all in capitals, where case says nothing: cut to the words that
    could be a name (`_caps_name_word`: `MY NAME IS DEB PLEASE USE MY` -> `DEB`); one word
    left must follow a naming cue (`_NAMING_CUES`) or be no web2 word (`HELLO SIRI`, not
    `HELLO, FRIEND`); two or more adjacent name words (first + last) stand after any cue."""
    text = m.string
    words = text[s.start : s.end].split(" ")
    k = 0
    while k < len(words) and _caps_name_word(words[k], k > 0):
        k += 1
    if k == 0:
        return None
    if k == 1:
        cue = " ".join(text[m.start() : m.start(1)].lower().replace(",", " ").split())
        lone = words[0].rstrip(",.!?;:").lower()
        if not cue.endswith(_NAMING_CUES) and lone in _lexicon():
            return None
    return Span(s.start, s.start + len(" ".join(words[:k])), s.entity)


def _caps_name_word(word: str, later: bool = False) -> bool:
    """A word written in capitals that could be a name: a known first or last name, or a word
    that is no common English word (`_english`: `TOMOMI`, `HERTZOG`, not `GOING`), not a stop
    word (`PLEASE`); after a first word (`later`), an initial too (`RUTH R MONTEZ`)."""
    word = word.rstrip(",.!?;:")
    if later and len(word) == 1 and word.isalpha():
        return True
    title = word.title()
    if len(word) < 2 or not word.replace("-", "").replace("'", "").isalpha() or title in _STOP:
        return False
    return title in all_names() or not _english(word)


def _english(word: str) -> bool:
    """A common English word and no known name: in the frequency list (`common_words`, names
    left out) and in the tagger's web2 lexicon (`going`, `everyone`; not `hertzog`, which the
    frequency list holds, nor `trevisano`)."""
    lower = word.lower()
    return lower in common_words() and lower in _lexicon()


def _lexicon() -> Lexicon:
    from aivos.shared.residency.tagger import load_model  # loaded once, lazily, on first use

    return load_model().lexicon


def _sentence_start(text: str, pos: int) -> bool:
    before = text[max(0, pos - 3) : pos].rstrip(" \"'“(")
    return not before or before[-1] in ".!?\n:>"
