"""PII recognizers: one small Protocol, the built-ins implement it, plus config-driven regexes.

A recognizer finds spans of one entity type in a text. Structured types are validated
beyond the regex (Luhn for cards, mod-97 for IBANs, `ipaddress` for IPs, SSA area rules
for SSNs) so look-alikes such as order numbers or invalid card numbers are not flagged.
`find_all` merges the spans of several recognizers: on overlap the longest span wins,
ties go to the recognizer listed first (the most specific), then to the earliest start.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from aivos.shared.residency.context import context_recognizers
from aivos.shared.residency.idpack import IdPack
from aivos.shared.residency.ids import id_recognizers
from aivos.shared.residency.locales import DEFAULT_LOCALES
from aivos.shared.residency.phones import PhoneRecognizer
from aivos.shared.residency.scan import Scan, Words, matches_at
from aivos.shared.residency.spans import Recognizer, Span, find_all

__all__ = [
    "Span",
    "Recognizer",
    "RegexRecognizer",
    "EmailRecognizer",
    "PhoneRecognizer",
    "CardRecognizer",
    "IbanRecognizer",
    "Ipv4Recognizer",
    "Ipv6Recognizer",
    "SsnRecognizer",
    "builtin_recognizers",
    "find_all",
    "luhn_valid",
    "iban_valid",
]


class RegexRecognizer:
    """A recognizer from a regular expression (group 0 is the value); used for custom config rules."""

    def __init__(self, entity: str, pattern: str | re.Pattern[str]) -> None:
        self.entity = entity
        self._re = re.compile(pattern) if isinstance(pattern, str) else pattern

    def find(self, text: str) -> list[Span]:
        return [
            Span(m.start(), m.end(), self.entity)
            for m in self._re.finditer(text)
            if m.end() > m.start()
        ]


# --- e-mail -----------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[^\W_](?:[\w.%+-]{0,63})@"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-])"
)
# "anna dot smith at example dot com", "anna [at] example [dot] org"
_AT = r"(?:\s+at\s+|\s*[\[(]\s*at\s*[\])]\s*)"
_DOT = r"(?:\s+dot\s+|\s*[\[(]\s*dot\s*[\])]\s*)"
_EMAIL_SPELLED = re.compile(
    rf"(?i)(?<![\w.])[^\W_][\w.+-]{{0,63}}(?:{_DOT}[\w+-]+)*{_AT}[^\W_][\w-]{{0,62}}"
    rf"(?:(?:{_DOT}|\.)[^\W_][\w-]{{0,62}})*{_DOT}[^\W\d_]{{2,24}}(?![\w-])"
)


class EmailRecognizer(RegexRecognizer):
    def __init__(self) -> None:
        super().__init__("EMAIL", _EMAIL)

    def find(self, text: str) -> list[Span]:
        spans = self._at_signs(text) if "@" in text else []
        lowered = text.lower()
        if "dot" in lowered and "at" in lowered:
            spans += [Span(m.start(), m.end(), self.entity) for m in _EMAIL_SPELLED.finditer(text)]
        return spans

    def _at_signs(self, text: str) -> list[Span]:
        """The matches of `_EMAIL.finditer(text)`, searched from just before each `@`: a match
        holds exactly one `@` (its local part has none) at most 64 characters after its start,
        so none starts earlier than 64 characters before the first `@` not yet passed."""
        spans: list[Span] = []
        pos, search = 0, _EMAIL.search
        while (at := text.find("@", pos)) >= 0:
            m = search(text, max(pos, at - 64))
            if m is None:
                break
            spans.append(Span(m.start(), m.end(), self.entity))
            pos = m.end()
        return spans


# --- payment cards ----------------------------------------------------------------------

# A run of digit groups separated by one kind of separator (space, dash, dot) or none; may be
# glued to a brand name ("VISA4111...") and followed by an expiry ("4111 ... 1111 12/26").
# Not carved out of a longer digit run, nor out of an IBAN ("DE89 3704 ...").
_CARD = re.compile(
    r"(?<![\d+.,-])(?<!\d[ .-])(?<!\b[A-Za-z]{2})(?<![A-Za-z]{2}\d{2} )(?<![A-Za-z]{2}\d{2} [A-Za-z0-9]{4} )"
    r"(?:\d{12,19}|\d{2,6}([ .-])\d{2,6}(?:\1\d{1,6}){0,5})(?!\d|[.,-]\d)"
)
# IIN ranges: Visa 4, Mastercard 51-55/2221-2720, Amex 34/37, Diners 30/36/38/39, JCB 35 and
# 1800/2131, Discover 6011/644-649/65, UnionPay 62/81, Maestro 50/56-69, RuPay 60/65/81/82/508.
_CARD_PREFIX = re.compile(r"^(?:4|5[0-9]|2[2-7]|3[0-9]|1800|2131|6|8[12])")
_MAESTRO_SHORT = re.compile(r"^(?:50|5[6-9]|6)")  # 12-digit Maestro / RuPay


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class CardRecognizer:
    """12–19 digit payment card numbers grouped by one kind of separator, with a known IIN
    prefix and a valid Luhn digit (12 digits only for Maestro/RuPay ranges). A trailing
    group that breaks the checksum (an expiry or CVV written after the number) is left out."""

    entity = "CARD"

    def find(self, text: str) -> list[Span]:
        return self._spans(_CARD.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        return self._spans(matches_at(_CARD, scan.text, scan.run_starts(12)))

    def _spans(self, matches: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        for m in matches:
            raw = m.group(0)
            sep = m.group(1) or ""
            groups = raw.split(sep) if sep else [raw]
            # try the whole run, then without trailing groups (expiry, CVV)
            for k in range(len(groups), 0, -1):
                digits = "".join(groups[:k])
                if not 12 <= len(digits) <= 19:
                    continue
                if not _CARD_PREFIX.match(digits) or not luhn_valid(digits):
                    continue
                if len(digits) == 12 and not _MAESTRO_SHORT.match(digits):
                    continue
                dropped = "".join(groups[k:])
                if dropped and (len(dropped) > 4 or len(digits) < 13):
                    break  # only an expiry or CVV may follow a card number
                end = m.start() + len(sep.join(groups[:k]))
                spans.append(Span(m.start(), end, self.entity))
                break
        return spans


# --- IBAN -------------------------------------------------------------------------------

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")
_BASE36 = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})  # A -> 10 ... Z -> 35
# the rest of an IBAN of `n` characters after its first four: ASCII letters and digits, single
# spaces or dashes between them
_IBAN_REST: dict[int, re.Pattern[str]] = {}


def _iban_rest(n: int) -> re.Pattern[str]:
    found = _IBAN_REST.get(n)
    if found is None:
        found = _IBAN_REST[n] = re.compile(rf"(?:[ -]?[A-Za-z0-9]){{{n}}}")
    return found


def iban_valid(iban: str) -> bool:
    """True when the compact IBAN has its country's length and passes ISO 7064 mod 97-10."""
    iban = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int((iban[4:] + iban[:4]).translate(_BASE36)) % 97 == 1


class IbanRecognizer:
    """IBANs, compact or grouped by single spaces or dashes, any case; validated by the
    country's length and mod-97."""

    entity = "IBAN"

    def find(self, text: str) -> list[Span]:
        return self._spans(text, _IBAN_START.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        return self._spans(scan.text, matches_at(_IBAN_START, scan.text, scan.iban_starts()))

    def _spans(self, text: str, matches: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        n = len(text)
        for m in matches:
            want = _IBAN_LENGTHS.get(m.group(1).upper())
            if want is None:
                continue
            rest = _iban_rest(want - 4).match(text, m.end())
            if rest is None:
                continue
            i = rest.end()
            if i < n and text[i].isalnum():
                continue
            iban = m.group(1) + m.group(2) + rest.group().replace(" ", "").replace("-", "")
            if iban_valid(iban):
                spans.append(Span(m.start(), i, self.entity))
        return spans


# --- IP addresses -----------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f:]")  # every IPv6 address has a colon before a hex digit/colon
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![\w:.]\w|\w)"
)


class Ipv4Recognizer:
    entity = "IPV4"

    def find(self, text: str) -> list[Span]:
        return self._spans(_IPV4.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        # an address opens with one to three digits and a dot: other digit runs are not tried
        text = scan.text
        starts = [p for p in scan.run_starts(4) if "." in text[p + 1 : p + 4]]
        return self._spans(matches_at(_IPV4, text, starts))

    def _spans(self, matches: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        for m in matches:
            try:
                ipaddress.IPv4Address(m.group(0))
            except ValueError:
                continue
            spans.append(Span(m.start(), m.end(), self.entity))
        return spans


class Ipv6Recognizer:
    """Candidates from a loose regex, validated by `ipaddress.IPv6Address` (so times and MACs fail)."""

    entity = "IPV6"

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        if text.count(":") < 2 or _IPV6_HINT.search(text) is None:
            return spans
        for m in _IPV6.finditer(text):
            value, end = m.group(0), m.end()
            # a sentence may end with a colon right after the address
            while value.endswith(":") and not value.endswith("::"):
                value, end = value[:-1], end - 1
            if value.count(":") < 2:
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            spans.append(Span(m.start(), end, self.entity))
        return spans


# --- US SSN -----------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w.-])(\d{3})([- .])(\d{2})\2(\d{4})(?![\w]|[.-]\d)")
_SSN_BARE = re.compile(
    r"(?i:\b(?:ssn|social security(?: number| no\.?)?)\b)[^\d\n]{0,20}(?<!\d)(\d{3})(\d{2})(\d{4})(?!\d)"
)


_SSN_CUES = Words("ssn", "social security")
_SSN_SEPARATORS = frozenset("- .")


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


class SsnRecognizer:
    """US SSNs `AAA-GG-SSSS` / `AAA GG SSSS` (or 9 bare digits right after "SSN"); SSA invalid
    ranges (area 000, 666, 900–999; group 00; serial 0000) are rejected."""

    entity = "SSN"

    def find(self, text: str) -> list[Span]:
        return self._spans(_SSN.finditer(text), _SSN_BARE.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        if scan.max_digits < 9:
            return []
        # a formatted SSN opens with three digits and a separator: other runs are not tried
        text = scan.text
        starts = [p for p in scan.run_starts(9) if text[p + 3 : p + 4] in _SSN_SEPARATORS]
        return self._spans(
            matches_at(_SSN, text, starts),
            matches_at(_SSN_BARE, scan.text, scan.word_starts(_SSN_CUES)),
        )

    def _spans(
        self, formatted: Iterable[re.Match[str]], bare: Iterable[re.Match[str]]
    ) -> list[Span]:
        spans = []
        for m in formatted:
            if _ssn_valid(m.group(1), m.group(3), m.group(4)):
                spans.append(Span(m.start(), m.end(), self.entity))
        for m in bare:
            if _ssn_valid(m.group(1), m.group(2), m.group(3)):
                spans.append(Span(m.start(1), m.end(3), self.entity))
        return spans


def builtin_recognizers(locales: Sequence[str] | None = None) -> list[Recognizer]:
    """The built-ins for the locale pack `locales` (ISO country codes; None = every country
    known), most specific first: this order breaks ties between equal-length spans."""
    pack = DEFAULT_LOCALES if locales is None else tuple(locales)
    return [
        IbanRecognizer(),
        CardRecognizer(),
        SsnRecognizer(),
        IdPack(id_recognizers(pack)),
        EmailRecognizer(),
        Ipv6Recognizer(),
        Ipv4Recognizer(),
        PhoneRecognizer([c for c in pack if len(c) == 2]),
        *context_recognizers(),
    ]
