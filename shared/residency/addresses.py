"""ADDRESS: street addresses by street patterns, with the city/region/postcode lines after.

- a house number with a street word (`217 Lovers Lane`), a continental prefix (`rue de la
  Paix`, `ul. Cicha 86`, `Via Roma 12`) or suffix (`Vesterskovvej 79`, `Kopfhölzistrasse 45`);
- apartment/suite/unit numbers, PO boxes, US military addresses (`USNS Brown`, `PSC 1234,
  Box 5678`, `FPO AE 09661`);
- a number after an address cue (`I live at 4 ...`, `postcode 90210`);
each extended over the comma- or line-separated city, region, postcode and country parts.

`find_scanned` tries the street pattern only where a digit run, a street prefix, a unit word,
a PO box or a military cue starts, and the other two patterns only next to their cue.
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
        gate = _DIGIT_GATE.match
        digits = [p for p in scan.digit_run_starts() if gate(text, p)]
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


def _eu_windows(scan: Scan) -> list[tuple[int, int]]:
    """Regions around each number that follows a word with a continental street ending."""
    text, lower, n = scan.text, scan.lower, len(scan.text)
    out: list[tuple[int, int]] = []
    for p in scan.digit_run_starts():
        j = p
        while j > 0 and text[j - 1] == " ":
            j -= 1
        # every suffix is made of word characters, so the text up to `j` ends with one exactly
        # when the word before the number does
        if j == p or j == 0 or not lower.endswith(_SUFFIX_EU, 0, j):
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
