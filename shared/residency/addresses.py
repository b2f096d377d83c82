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

from aivos.shared.residency.scan import Scan, Words, in_windows, matches_at
from aivos.shared.residency.spans import Span
from aivos.shared.residency.words import CAP_WORD, UPPER, strip_trailing, trie

__all__ = ["AddressRecognizer"]

_UP = UPPER
_CAP = CAP_WORD
_SUFFIX_EN = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|"
    r"Square|Sq|Terrace|Trail|Trl|Loop|Hills?|Greens?|Parkway|Pkwy|Highway|Hwy|Circle|Cir|"
    r"Crescent|Close|Row|Walk|Gardens?|Grove|Heights|Manor|Mews|Point|Ridge|View|Vista|"
    r"Crossing|Path|Pike|Plaza|Ports?|Springs?|Station|Summit|Turnpike|Valley|Village|Wells?|"
    r"Alley|Bypass|Causeway|Cove|Creek|Estates?|Expressway|Falls|Fields?|Forest|Gateway|Glen|"
    r"Harbor|Haven|Island|Junction|Lakes?|Landing|Meadows?|Mills?|Mount|Orchard|Oval|Pass|"
    r"Pines|Plains?|Ranch|Rapids|Rest|Route|Run|Shores?|Stream|Track|Trace|Tunnel|Underpass|"
    r"Union|Viaduct|Ville|Wharf|Motorway|Green|Broadway|Esplanade|Parade|Quay|"
    # the rest of the USPS street suffixes (Publication 28, C1) and a few British ones
    r"Anex|Arcade|Bayou|Beach|Bend|Bluffs?|Bottom|Branch|Bridge|Brooks?|Burgs?|Camp|Canyon|"
    r"Cape|Centers?|Circles|Cliffs?|Club|Corners?|Course|Courts|Coves|Crest|Crossroads?|Curve|"
    r"Dale|Dam|Divide|Drives|Extensions?|Ferry|Flats?|Fords?|Forges?|Forks?|Fort|Freeway|Glens|"
    r"Groves|Harbors|Hollow|Inlet|Islands|Isle|Junctions|Knolls?|Lodge|Mall|Manors|Mission|"
    r"Mountains?|Neck|Overpass|Parks|Parkways|Passage|Points|Prairie|Radial|Ramp|Ridges|River|"
    r"Roads|Shoals?|Skyway|Spurs?|Squares|Stravenue|Streets|Throughway|Trafficway|Trailer|"
    r"Unions|Valleys|Views|Villages|Walks|Wall|Ways|Drove|Wynd"
)
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
_ADDRESS = re.compile(rf"(?<![\w-])(?:{_STREET}(?:[ ,]+{_UNIT})?|{_UNIT})(?:{_TAIL}){{0,5}}")
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
# In a text without lower-case letters no English street suffix (`Street`, `St`: a capital and
# lower-case letters, matched case-sensitively) can match, so a number followed by capitals
# starts a street only as `6750 KOSKIKATU 25` (one to three words, then a number), before a
# PO box, a military cue (`P.O. BOX`, `USNS`, `PSC`) or a prefix: a necessary shape (a
# superset of `{_CAP}[ ]` on ASCII), so the upper-case passages of a request no longer try the
# street pattern at every `7 DAYS`.
_DIGIT_GATE_UPPER = re.compile(
    rf"{_GATE_HEAD}(?:[ ]++(?:{_NUM_B}[ ]++)?(?:P|US|(?:[A-Z][A-Za-z'-]*+[ ]){{1,3}}0)"
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
            text, _ADDRESS.finditer(text), _EU_STREET.finditer(text), _ADDRESS_CUE.finditer(text)
        )

    def find_scanned(self, scan: Scan) -> list[Span]:
        text = scan.text
        digits = _digit_starts(scan)
        starts = sorted({*digits, *scan.word_starts(_STREET_STARTS)})
        if scan.max_digits:
            eu = in_windows(_EU_STREET, text, _eu_windows(scan))
            cued = matches_at(_ADDRESS_CUE, text, scan.word_starts(_CUE_STARTS))
        else:
            eu = cued = iter(())
        return self._spans(text, matches_at(_ADDRESS, text, starts), eu, cued)

    def _spans(
        self,
        text: str,
        streets: Iterable[re.Match[str]],
        eu_streets: Iterable[re.Match[str]],
        cued: Iterable[re.Match[str]],
    ) -> list[Span]:
        spans = [Span(m.start(), strip_trailing(text, m.start(), m.end()), self.entity)
                 for m in streets]  # fmt: skip
        for m in eu_streets:
            if m.group(1).lower().endswith(_SUFFIX_EU):
                tail = _TAIL_RE.match(text, m.end())
                end = tail.end() if tail else m.end()
                spans.append(Span(m.start(), strip_trailing(text, m.start(), end), self.entity))
        for m in cued:
            spans.append(Span(m.start(1), strip_trailing(text, m.start(1), m.end(1)), self.entity))
        return [s for s in spans if s.end - s.start >= 3]


def _digit_starts(scan: Scan) -> list[int]:
    """The digit-run starts where `_ADDRESS` may match (in text order): those `_DIGIT_GATE`
    passes, found on ASCII text by one search of a byte copy; in a text without lower-case
    letters only those shaped like a street without an English suffix."""
    text = scan.text
    if not text.isascii():
        gate = _DIGIT_GATE.match
        return [p for p in scan.digit_run_starts() if gate(text, p)]
    if not scan.max_digits:
        return []
    gate_b = _DIGIT_GATE_UPPER if text.isupper() else _DIGIT_GATE_ASCII
    zeros = text.encode().translate(_ZERO_DIGITS)
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
