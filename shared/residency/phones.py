"""Phone numbers in free text, validated by Google's libphonenumber port (`phonenumbers`).

Candidates are runs of digit groups joined by single separators (space, dash, dot, slash,
an area code in brackets, also before a slash `(52)/301-1100`, `+CC`, `00CC` or `(+CC)` in
front, an `x123` extension behind). A candidate
is a phone number when it has 7–15 digits, is not shaped like a date, an SSN or a version, and
- it carries an international prefix (`+49`, `0049`) and libphonenumber finds it possible, or
- libphonenumber finds it valid for one of the site's phone regions (its locale pack), or
- a phone cue ("call", "tel", "mobile", "fax", "phone", "number" ...) stands right before it.
A bare run without separators must be 10–13 digits (or have a cue), so order numbers stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers

from aivos.shared.residency.scan import Scan, in_windows
from aivos.shared.residency.spans import Span

__all__ = ["PhoneRecognizer", "DEFAULT_PHONE_REGIONS"]

DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "SE", "DK", "NO",
    "FI", "PL", "PT", "IN", "CN", "BR", "AU", "MX",
)  # fmt: skip

_CANDIDATE = re.compile(
    r"(?<![\w@#$€£¥/.,:+=&-])(?<![A-Za-z]{2}\d{2} )(?<![A-Za-z]{2}\d{2} [A-Za-z0-9]{4} )(?<!\d[ .-])"
    r"(?:\+[ ]?|\b00|\(\+\d{1,3}\)[ ]?)?"
    r"(?:\(\d{1,5}\)[ ./-]?)?"
    r"\d+(?:(?:[ .\-/]|[ ]?\(\d{1,4}\)[ ]?|[ ]-[ ])\d+)*"
    r"(?:[ ]?(?:x|ext\.?)[ ]?\d{1,5})?"
    r"(?![\w@]|[.,:/-]\d)"
)
_NOT_A_PHONE = re.compile(
    r"^(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{3}-\d{2}-\d{4}"
    r"|\d{1,3}(?:\.\d{1,3}){3}|\d{4}\.\d{1,2}\.\d{1,2}|\d{4}([ -])\d{6}\1\d{5})$"
)
_CUE = re.compile(
    r"(?i)(?:\b(?:phone|tel|telephone|mobile|mob|cell|cellphone|fax|call|ring|text|sms|whatsapp"
    r"|number|no|nr|desk|landline|hotline|contact|reach|dial|handy|t[ée]l[ée]phone|telefono"
    r"|telefon)\b|☎)[^\d\n]{0,20}$"
)
# `(+358) 40 123 4567`: an international prefix written in brackets, read as `+358 40 ...`
_BRACKETED_CC = re.compile(r"^\((\+\d{1,3})\)[ ]?")
_EXT = re.compile(r"[ ]?(?:x|ext\.?)[ ]?\d{1,5}$")


class PhoneRecognizer:
    """Phone numbers of the given regions plus any number with an international prefix."""

    entity = "PHONE"

    def __init__(self, regions: Iterable[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(r.upper() for r in regions)

    def find(self, text: str) -> list[Span]:
        return self._spans(text, _CANDIDATE.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        return self._spans(scan.text, in_windows(_CANDIDATE, scan.text, scan.windows(7)))

    def _spans(self, text: str, candidates: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        for m in candidates:
            value = m.group(0)
            digits = sum(c.isdigit() for c in value)
            if not 7 <= digits <= 18 or _NOT_A_PHONE.match(value):
                continue
            core = _BRACKETED_CC.sub(r"\1 ", _EXT.sub("", value), count=1)
            if self._accept(core, text, m.start()):
                spans.append(Span(m.start(), m.end(), self.entity))
        return spans

    def _accept(self, value: str, text: str, start: int) -> bool:
        digits = sum(c.isdigit() for c in value)
        if digits > 15:
            return False
        if _CUE.search(text, max(0, start - 32), start):
            return True
        if value.startswith("+") or value.startswith("00"):
            intl = "+" + value[2:] if value.startswith("00") else value
            return _possible(intl, None)
        if value.isdigit() and not 10 <= digits <= 13:
            return False
        return any(_valid(value, region) for region in self.regions)


def _parse(value: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None


def _possible(value: str, region: str | None) -> bool:
    n = _parse(value, region)
    return n is not None and phonenumbers.is_possible_number(n)


def _valid(value: str, region: str) -> bool:
    n = _parse(value, region)
    return n is not None and phonenumbers.is_valid_number(n)
