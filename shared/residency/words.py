"""Regex fragments for words of Latin-script languages, and the English street suffixes,
shared by the context recognizers (the address rules and the tagger)."""

from __future__ import annotations

import re

__all__ = ["UPPER", "CAP_WORD", "STREET_SUFFIXES_EN", "SUFFIX_WORDS", "strip_trailing", "trie"]

UPPER = r"A-ZÀ-ÖØ-ÞĀ-Ž"  # upper-case letters of Latin scripts (a superset; checked with isupper)
CAP_WORD = rf"[{UPPER}][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word


#: English street suffixes, as a regex alternation (`Hills?`: with or without `s`)
STREET_SUFFIXES_EN = (
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
#: the English street suffixes as lower-case words (`lane`, `st`, `hills`)
SUFFIX_WORDS = frozenset(
    w.lower()
    for alt in STREET_SUFFIXES_EN.split("|")
    for w in ([alt[:-2], alt[:-1]] if alt.endswith("?") else [alt])
)


def strip_trailing(text: str, start: int, end: int) -> int:
    """`end` moved left over trailing spaces, commas, full stops, newlines, `?`, `!`, `>`."""
    while end > start and text[end - 1] in " ,.\n?!>":
        end -= 1
    return end


_Trie = dict[str, "_Trie"]


def trie(words: str) -> str:
    """An alternation of words (`Street|St|Hills?`, a trailing `?` allowed) as a regex trie
    (`(?:S(?:t(?:reet)?)|Hills?)`-like): the same strings, tried by first character instead of
    one by one. Only for alternations whose match is unique where they are used (a whole word,
    followed by `\\b` or a space), since a trie may try the alternatives in another order."""
    root: _Trie = {}
    for w in words.split("|"):
        for form in [w[:-2], w[:-1]] if w.endswith("?") else [w]:
            node = root
            for ch in re.findall(r"\\.|.", form):
                node = node.setdefault(ch, {})
            node[""] = {}
    return _emit(root)


def _emit(node: _Trie) -> str:
    alts = [ch + _emit(child) for ch, child in node.items() if ch]
    if not alts:
        return ""
    body = "(?:" + "|".join(alts) + ")"
    return body + "?" if "" in node else body
