"""ADDRESS: street addresses by street patterns, with the city/region/postcode lines after.

- a house number with a street word (`217 Lovers Lane`), a continental prefix (`rue de la
  Paix`, `ul. Cicha 86`, `Via Roma 12`) or suffix (`Vesterskovvej 79`, `Kopfhölzistrasse 45`);
- apartment/suite/unit numbers, PO boxes, US military addresses (`USNS Brown`, `PSC 1234,
  Box 5678`, `FPO AE 09661`);
- a number after an address cue (`I live at 4 ...`, `postcode 90210`);
each extended over the comma- or line-separated city, region, postcode and country parts.

`find_scanned` tries the street pattern only where a digit run, a street prefix, a unit word,
a PO box or a military cue starts, and the other two patterns only next to their cue. Which
digit runs may start a street is decided on ASCII text by one search of a digit-folded byte
copy (`_digit_starts`; tighter in a text without lower-case letters, where no English street
suffix can match); `tests/unit/test_residency_address_cost.py` checks it against the plain gate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aivos.shared.residency.names import common_words
from aivos.shared.residency.scan import Scan, Words, in_windows, matches_at
from aivos.shared.residency.spans import Span
from aivos.shared.residency.tagger_features import Lexicon
from aivos.shared.residency.words import (
    CAP_WORD,
    STREET_SUFFIXES_EN,
    SUFFIX_WORDS,
    UPPER,
    strip_trailing,
    trie,
)

__all__ = ["AddressRecognizer"]

_UP = UPPER
_CAP = CAP_WORD
_SUFFIX_EN = STREET_SUFFIXES_EN
# street-name endings of continental Europe: "Vesterskovvej 79", "Kopfhölzistrasse 45"
_SUFFIX_EU = tuple(
    [
        "straße",
        "strasse",
        "str.",
        "weg",
        "gasse",
        "platz",
        "allee",
        "ring",
        "damm",
        "ufer",
        "vej",
        "gade",
        "gatan",
        "gata",
        "vägen",
        "väg",
        "laan",
        "straat",
        "plein",
        "gracht",
        "dijk",
        "katu",
        "tie",
        "kuja",
        "polku",
        "utca",
        "út",
        "tér",
        "ulica",
        "cesta",
        "ulice",
        "náměstí",
        "tee",
        "iela",
        "gatve",
        "vegur",
        "vegen",
        "veien",
        "u.",  # Hungarian utca
        "útja",
        "terrasse",
        "trg",
        "sokak",
        "caddesi",
        "str",
    ]
)
_PREFIX_EU = (
    r"rue|avenue|boulevard|bd|chemin|allée|impasse|place|quai|viale|piazza|corso|largo|"
    r"calle|avenida|av\.|paseo|plaza|carrer|rua|travessa|praça|ul\.|ulica|al\.|aleja|"
    r"straße|strada|calea|bulevardul|odos|ulitsa|avda\.|c/|av|trg|λεωφόρος|οδός"
)
# lower-case particles inside street and place names (`Paseo del Mar`, `Soto del Barco`)
_PARTICLE = r"(?:de|du|des|la|le|del|della|dei|degli|delle|di|da|do|dos|das|van|von|der|den|na|y|i)"
# the same alternations as tries (tried by first letter: the street regex runs often)
_SUFFIX_TRIE, _PREFIX_TRIE = trie(_SUFFIX_EN), trie(_PREFIX_EU)
_NUM = r"\d{1,5}+[A-Za-z]?(?:[-/]\d{1,4}+)?"  # possessive: nothing after a number is a digit
_WORDS = rf"(?:{_CAP}\.?[ ]){{0,4}}"
_STREET = (
    rf"(?:{_NUM}[ ]+)?(?:{_NUM}[ ]+{_WORDS}(?:{_CAP})?(?:{_SUFFIX_TRIE})\b\.?"  # 217 Lovers Lane
    rf"|(?:{_NUM}[ ,]+)?(?i:{_PREFIX_TRIE})[ ]+(?:{_PARTICLE}[ ]+)*"
    rf"{_WORDS}{_CAP}(?:[ ,]+{_NUM})?"  # rue de la Paix, ul. Cicha 86
    # `via` is also an English preposition ("travel via London"): a street only with its number
    rf"|(?:{_NUM}[ ,]+)?(?i:via)[ ]+(?:(?:{_PARTICLE}|{_CAP}\.?)[ ]+){{0,4}}{_CAP}[ ,]+{_NUM}\b"
    rf"|{_NUM}[ ]+(?:{_CAP}[ ]){{1,3}}{_NUM}\b"  # 6750 Koskikatu 25, 5850 Jana Nerudy 894
    rf"|(?:P\.?O\.?|Post Office)[ ]?Box[ ]+\d{{1,6}}"
    rf"|(?:USNS|USNV|USS|USCGC)[ ]+{_CAP}(?:[ ,\n]+(?:FPO|APO|DPO)[ ]+[A-Z]{{2}}[ ]+\d{{5}})?"
    rf"|(?:Unit|PSC)[ ]+\d{{4}},?[ ]+Box[ ]+\d{{4}}(?:[ ,\n]+(?:FPO|APO|DPO)[ ]+[A-Z]{{2}}[ ]+\d{{5}})?"
    rf")"
)
# a unit number is never cut out of a longer one (`Room 94-2841935` is some id, not room 94)
_UNIT = (
    r"(?i:\b(?:apt|apartment|suite|ste|unit|flat|room|floor|fl)\b\.?[ ]?#?[ ]?"
    r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4})?(?![-/]?\d))"
)
# city / region / postcode / country lines or comma parts that follow a street
_TAIL = (
    rf"(?:(?:[ ]*,[ ]*|(?:[ ]*\n){{1,2}}[ >•·*?-]*(?:,[ ]*)?|[ ]+)(?:{_UNIT}|\d{{4,6}}(?:-\d{{4}})?|[A-Z]{{2}}[ ]\d{{5}}"
    rf"|[{_UP}]{{2,3}}\b|[{_UP}][\w'.()-]*(?:[ ](?:{_PARTICLE}[ ])*[{_UP}(][\w'.()-]*){{0,3}}"
    rf"(?:[ ]\d{{4,6}})?))"
)
_UNIT_RE = re.compile(_UNIT)
_ADDRESS = re.compile(rf"(?<![\w-])(?:{_STREET}(?:[ ,]+{_UNIT})?|{_UNIT})(?:{_TAIL}){{0,5}}")
# In text without lower-case letters (`27 MOSS LANE`, `PSC 0413, BOX 8144`) the English street
# suffix is written in capitals: `_STREET` with the suffixes, `Box`, `Post Office` and `Unit`
# in capitals, and a suffix only as a word of its own after one to four words (not glued to
# one: `7 DAYS IS THE BEST`). Such a match is then checked by `_caseless_street`.
_SUFFIX_UP_TRIE = trie(_SUFFIX_EN.upper())
_STREET_UPPER = (
    _STREET.replace(
        rf"{_NUM}[ ]+{_WORDS}(?:{_CAP})?(?:{_SUFFIX_TRIE})\b\.?",
        rf"{_NUM}[ ]+(?:{_CAP}\.?[ ]){{1,4}}(?:{_SUFFIX_UP_TRIE})\b\.?",
    )
    .replace("Post Office)[ ]?Box", "POST OFFICE)[ ]?BOX")
    .replace("(?:Unit|PSC)", "(?:UNIT|PSC)")
    .replace(",?[ ]+Box[ ]+", ",?[ ]+BOX[ ]+")
)
assert _STREET_UPPER.count("BOX") == 2 and _SUFFIX_UP_TRIE in _STREET_UPPER
_ADDRESS_UPPER = re.compile(
    rf"(?<![\w-])(?:{_STREET_UPPER}(?:[ ,]+{_UNIT})?|{_UNIT})(?:{_TAIL}){{0,5}}"
)
_EU_STREET = re.compile(
    rf"(?<![\w-])(?:{_NUM}[ ]+)?(?:{_CAP}[ ]){{0,2}}([^\W\d_][\w'.-]*)[ ]+{_NUM}(?![\w])"
)
_TAIL_RE = re.compile(rf"(?:[ ,]+{_UNIT})?(?:{_TAIL}){{0,5}}")
_ADDRESS_CUE = re.compile(
    r"(?i)\b(?:address|live at|lives at|living at|located at|moved to|move to|deliver(?:ed)? to|"
    r"ship(?:ped)? to|send (?:it |them )?to|zip|postcode|post code|postal code)\b[ :]*(?:is[ ]+)?"
    r"(?:[\w' -]{0,30}?)(\d{1,5}(?:[ ]+[\w'.-]+){0,5})"
)


# How every `_ADDRESS` match that starts at a digit begins (one or two house numbers, then a
# capitalised word or a street prefix): a cheap test before the big regex is tried there.
_DIGIT_GATE = re.compile(  # possessive spaces: nothing after them is a space or comma
    rf"{_NUM}(?:[ ]++{_NUM})?(?:[ ]++(?:{_NUM}[ ]++)?[{_UP}]|[ ,]++(?i:{_PREFIX_TRIE}|via\b))"
)

# The same gate on an ASCII text, found in one search of a byte copy whose digits are all `0`
# (a literal the regex engine skips to; see `scan.py`): at each digit that starts a run (not
# after a letter, digit, `_` or `-`, as `Scan.digit_run_starts`), a look-ahead holding the
# gate. On ASCII text `\d`, `[{_UP}]`, `\b` and the case-blind prefix words mean what their
# ASCII forms mean in a bytes pattern (no prefix word with a non-ASCII letter can occur).
_ZERO_DIGITS = bytes.maketrans(b"0123456789", b"0" * 10)
_NUM_B = r"0{1,5}+[A-Za-z]?(?:[-/]0{1,4}+)?"
_PREFIX_ASCII = trie("|".join(w for w in _PREFIX_EU.split("|") if w.isascii()))
_GATE_HEAD = rf"0(?<![\w-]0)(?=0{{0,4}}+[A-Za-z]?(?:[-/]0{{1,4}}+)?(?:[ ]++{_NUM_B})?"
# the prefix words' first letters as one set, tested before the words one by one
_PREFIX_FIRST = "".join(sorted({w[0] for w in _PREFIX_EU.split("|") if w.isascii()} | {"v"}))
_GATE_PREFIX = rf"[ ,]++(?=[{_PREFIX_FIRST}{_PREFIX_FIRST.upper()}])(?i:{_PREFIX_ASCII}|via\b)"
_DIGIT_GATE_ASCII = re.compile(
    rf"{_GATE_HEAD}(?:[ ]++(?:{_NUM_B}[ ]++)?[A-Z]|{_GATE_PREFIX}))".encode()
)
# In a text without lower-case letters (`_ADDRESS_UPPER`) a number followed by capitals starts
# a street only as `6750 KOSKIKATU 25` (one to three words, then a number), as `27 MOSS LANE`
# (one to four words, then an English street suffix in capitals), before a PO box, a military
# cue (`P.O. BOX`, `USNS`, `PSC`) or a prefix: a necessary shape (a superset of `{_CAP}[ ]` on
# ASCII), so the upper-case passages of a request do not try the street pattern at `7 DAYS`.
_DIGIT_GATE_UPPER = re.compile(
    rf"{_GATE_HEAD}(?:[ ]++(?:{_NUM_B}[ ]++)?(?:P|US|(?:[A-Z][A-Za-z'-]*+[ ]){{1,3}}0"
    rf"|(?:[A-Z][A-Za-z'-]*+\.?[ ]){{1,4}}{_SUFFIX_UP_TRIE}\b)"
    rf"|{_GATE_PREFIX}))".encode()
)
# where a continental street ending can end (its last three characters; two for `u.`, `út`):
# a cheap necessary test before `str.endswith` with all of them
_EU_LAST3 = frozenset(s[-3:] for s in _SUFFIX_EU if len(s) >= 3)
_EU_LAST2 = frozenset(s for s in _SUFFIX_EU if len(s) == 2)
assert all(len(s) >= 2 for s in _SUFFIX_EU)

_PREFIX_WORDS = tuple(w.replace("\\", "") for w in _PREFIX_EU.split("|"))
# where an `_ADDRESS` match can start besides a digit run (lower case, verified by the regex)
_STREET_STARTS = Words(
    *_PREFIX_WORDS, "via", "apt", "apartment", "suite", "ste", "unit", "flat", "room", "floor", "fl",
    "p.o", "po box", "pobox", "po. box", "post office", "usns", "usnv", "uss", "uscgc", "psc",
)  # fmt: skip
_CUE_STARTS = Words(
    "address", "live", "living", "located", "move", "deliver", "ship", "send", "zip",
    "postcode", "post code", "postal code",
)  # fmt: skip


class AddressRecognizer:
    entity = "ADDRESS"

    def find(self, text: str) -> list[Span]:
        return self._spans(
            text,
            _caseless_bounds(text, None) if _no_lower(text) else _bounds(_ADDRESS.finditer(text)),
            _EU_STREET.finditer(text),
            _ADDRESS_CUE.finditer(text),
        )

    def find_scanned(self, scan: Scan) -> list[Span]:
        text = scan.text
        upper = _no_lower(text)
        digits = _digit_starts(scan, upper)
        starts = sorted({*digits, *scan.word_starts(_STREET_STARTS)})
        if scan.max_digits:
            eu = in_windows(_EU_STREET, text, _eu_windows(scan))
            cued = matches_at(_ADDRESS_CUE, text, scan.word_starts(_CUE_STARTS))
        else:
            eu = cued = iter(())
        if upper:
            streets = _caseless_bounds(text, starts)
        else:
            streets = _bounds(matches_at(_ADDRESS, text, starts))
        return self._spans(text, streets, eu, cued)

    def _spans(
        self,
        text: str,
        streets: list[tuple[int, int]],
        eu_streets: Iterable[re.Match[str]],
        cued: Iterable[re.Match[str]],
    ) -> list[Span]:
        spans = [Span(a, strip_trailing(text, a, b), self.entity) for a, b in streets]
        for m in eu_streets:
            if m.group(1).lower().endswith(_SUFFIX_EU):
                tail = _TAIL_RE.match(text, m.end())
                end = tail.end() if tail else m.end()
                spans.append(Span(m.start(), strip_trailing(text, m.start(), end), self.entity))
        for m in cued:
            spans.append(Span(m.start(1), strip_trailing(text, m.start(1), m.end(1)), self.entity))
        return [s for s in spans if s.end - s.start >= 3]


def _bounds(matches: Iterable[re.Match[str]]) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in matches]


def _caseless_bounds(text: str, starts: Iterable[int] | None) -> list[tuple[int, int]]:
    """`_ADDRESS_UPPER`'s matches in a text without lower-case letters, each checked and cut
    by `_caseless_street`, tried at `starts` (sorted; None: at every position): after a kept
    match the next is looked for from where it now ends (`... 24893, AND USNV BOTOLEN`: the
    military address after the cut), after a dropped one from the next position."""
    out: list[tuple[int, int]] = []
    last = 0
    if starts is None:
        while (m := _ADDRESS_UPPER.search(text, last)) is not None:
            last = _caseless_add(out, text, m)
        return out
    for p in starts:
        if p >= last and (m := _ADDRESS_UPPER.match(text, p)) is not None:
            last = _caseless_add(out, text, m)
    return out


def _caseless_add(out: list[tuple[int, int]], text: str, m: re.Match[str]) -> int:
    """Keep `m` as cut by `_caseless_street`; where the next match may start."""
    end = _caseless_street(text, m.start(), m.end())
    if end > m.start():
        out.append((m.start(), end))
        return end
    return m.start() + 1


# English words that are never part of a street's name: in text without case `2 AND 3`,
# `4 PEOPLE FROM MAY 3`, `PLACE TO STAY IN PHOENIX` match the street patterns word for word.
# (Particles of continental names, `DE`, `DO`, `I`, `Y`, are not here.)
_FUNCTION_WORDS_TEXT = """
    a an the and or but nor of to in on at by for from with without into onto over under
    about after before between through during until till than as if then so that this these
    those is are was were be been am does did have has had will would can could should may
    might must shall you he she it we they me him her us them my your his its our their what
    which who whom whose where when why how not no yes per pm
"""
_MONTHS_TEXT = """
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
"""
_UNITS_TEXT = "apt apartment suite ste unit flat room floor fl p.o po post usns usnv uss uscgc psc"
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_MONTH_WORDS = frozenset(_MONTHS_TEXT.split())
_UNIT_WORDS = frozenset(_UNITS_TEXT.split())
_SUFFIX_UPPER = frozenset(w.upper() for w in SUFFIX_WORDS)
_CASELESS_WORD = re.compile(r"[^\s,]+")


def _caseless_street(text: str, start: int, end: int) -> int:
    """Where a street match `text[start:end]` ends in text without lower-case letters, where
    every word is capitalised and the street patterns match plain words (`2 AND 3`, `PLACE TO
    STAY IN PHOENIX`); `start` when it is no street. It is cut before its first English
    function word or month (`76 BOULEVARD DE NORMANDIE AND ...`, `2 TO MARCH 10` -> `2`), and
    what is left must hold a unit (`SUITE 845`), an English street suffix after a word
    (`FOURTH AVENUE`) or a word that is no English dictionary word (`KOSKIKATU`, `JANA
    NERUDY`, `DE LA PAIX`; not `47 TIMES 83`, `PLACE AN ORDER`)."""
    words = list(_CASELESS_WORD.finditer(text, start, end))
    for k, m in enumerate(words):
        w = m.group().strip(".'’").lower()
        if w.isalpha() and (w in _FUNCTION_WORDS or w in _MONTH_WORDS):
            after = words[k + 1].group() if k + 1 < len(words) else ""
            if len(w) == 2 and after.isdigit() and len(after) >= 4:
                continue  # a region before its postcode (`INDIANAPOLIS, IN 46201`)
            end = m.start()
            words = words[:k]
            break
    if words and words[0].group().lower().rstrip(".") in _UNIT_WORDS:
        return end  # a unit, box or military address: its own cue
    if _UNIT_RE.search(text, start, end):
        return end
    lexicon, common = _lexicon(), common_words()
    for i, m in enumerate(words):
        w = m.group().strip(".")
        if i > 0 and w in _SUFFIX_UPPER and words[i - 1].group()[:1].isalpha():
            return end
        for part in re.split(r"['’-]", w.lower()):
            english = part.isascii() and (part in lexicon or part in common)
            if len(part) > 2 and part.isalpha() and not english:
                return end  # `KOSKIKATU`, `RUA`, `ÞORSTEINSGATA`: no English word
    return start


def _lexicon() -> Lexicon:
    from aivos.shared.residency.tagger import load_model  # loaded once, lazily, on first use

    return load_model().lexicon


def _no_lower(text: str) -> bool:
    """`text.isupper()`, on ASCII text by the bytes method (a table lookup per character
    instead of a Unicode database lookup: the upper-case passage of a request is long)."""
    return text.encode().isupper() if text.isascii() else text.isupper()


def _digit_starts(scan: Scan, upper: bool | None = None) -> list[int]:
    """The digit-run starts where `_ADDRESS` may match (in text order): those `_DIGIT_GATE`
    passes, found on ASCII text by one search of a byte copy; in a text without lower-case
    letters (`upper`, computed when None) only those shaped like a street of
    `_ADDRESS_UPPER`."""
    text = scan.text
    if not text.isascii():
        gate = _DIGIT_GATE.match
        return [p for p in scan.digit_run_starts() if gate(text, p)]
    if not scan.max_digits:
        return []
    raw = text.encode()
    if upper is None:
        upper = raw.isupper()
    gate_b = _DIGIT_GATE_UPPER if upper else _DIGIT_GATE_ASCII
    zeros = raw.translate(_ZERO_DIGITS)
    first = gate_b.search(zeros)  # most texts have none: one call
    if first is None:
        return []
    return [m.start() for m in gate_b.finditer(zeros, first.start())]


def _eu_windows(scan: Scan) -> list[tuple[int, int]]:
    """Regions around each number that follows a word with a continental street ending."""
    text, lower, n = scan.text, scan.lower, len(scan.text)
    out: list[tuple[int, int]] = []
    for p in scan.digit_run_starts():
        j = p
        while j > 0 and text[j - 1] == " ":
            j -= 1
        # every suffix is made of word characters, so the text up to `j` ends with one exactly
        # when the word before the number does; its last letters are tested first (for `j` < 3
        # the slices are empty: a space and a digit follow, so the text is longer than 3)
        if (
            j == p
            or j == 0
            or (lower[j - 3 : j] not in _EU_LAST3 and lower[j - 2 : j] not in _EU_LAST2)
            or not lower.endswith(_SUFFIX_EU, 0, j)
        ):
            continue
        k = j
        while k > 0 and (lower[k - 1].isalnum() or lower[k - 1] in "_'.-"):
            k -= 1
        ws, we = max(0, k - 48), min(n, p + 16)
        while ws > 0 and not text[ws - 1].isspace():
            ws -= 1
        while we < n and not text[we].isspace():
            we += 1
        if out and ws <= out[-1][1]:
            out[-1] = (out[-1][0], we)
        else:
            out.append((ws, we))
    return out
