"""Normalise text before recognition, keeping a map back to the original characters.

Recognizers see one canonical form: Unicode NFKC (fullwidth `４１１１` -> `4111`, ligatures,
compatibility spaces), zero-width and other invisible format characters removed (`4111​1111`),
every decimal digit folded to ASCII (Arabic-Indic, Devanagari, ...), every dash to `-` and
every space separator to ` `. `Normalized.span(start, end)` maps a span found in the canonical
text back to the original, so a placeholder replaces exactly the characters the user wrote.

Pure-ASCII text (the common case) is returned as is without building a map.
"""

from __future__ import annotations

import re
import unicodedata
from array import array

__all__ = ["Normalized", "normalize"]

# Invisible characters that split a value without showing: zero-width space/joiners, word
# joiner, BOM, soft hyphen, invisible operators, Mongolian vowel separator, bidi controls.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
    "\ufeff\u3164\uffa0"
)
# Characters that need work even when the text is already NFKC.
_SPECIAL = re.compile(
    "[" + "".join(sorted(_INVISIBLE)) + r"]|(?![0-9])\d|[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]"
    r"|[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
)


def _fold(ch: str) -> str:
    if ch in _INVISIBLE:
        return ""
    out = unicodedata.normalize("NFKC", ch)
    if out.isascii():
        return out
    folded = []
    for c in out:
        if c in _INVISIBLE:
            continue
        cat = unicodedata.category(c)
        if cat == "Nd":
            folded.append(str(unicodedata.decimal(c)))
        elif cat == "Pd" or c == "\u2212":
            folded.append("-")
        elif cat == "Zs":
            folded.append(" ")
        else:
            folded.append(c)
    return "".join(folded)


class Normalized:
    """The canonical `text` and, when it differs from the original, a char-offset map."""

    __slots__ = ("original", "text", "_map")

    def __init__(self, original: str, text: str, offsets: array[int] | None) -> None:
        self.original = original
        self.text = text
        self._map = offsets  # _map[i]: index in `original` of canonical char i

    @property
    def changed(self) -> bool:
        return self._map is not None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original `[start, end)` that canonical `[start, end)` came from."""
        m = self._map
        if m is None:
            return start, end
        if end <= start:
            pos = m[start] if start < len(m) else len(self.original)
            return pos, pos
        return m[start], m[end - 1] + 1


def normalize(text: str) -> Normalized:
    """Canonical form of `text` for recognition (see the module doc)."""
    if text.isascii() or (
        unicodedata.is_normalized("NFKC", text) and _SPECIAL.search(text) is None
    ):
        return Normalized(text, text, None)
    parts: list[str] = []
    offsets: array[int] = array("l")
    for i, ch in enumerate(text):
        if ch.isascii():
            parts.append(ch)
            offsets.append(i)
            continue
        out = _fold(ch)
        parts.append(out)
        offsets.extend([i] * len(out))
    return Normalized(text, "".join(parts), offsets)
