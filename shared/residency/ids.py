"""National identifiers and bank account numbers, checked by `python-stdnum` where it can.

Each recognizer belongs to a country (ISO 3166 alpha-2) so a locale pack can pick them;
`id_recognizers(countries)` builds those of the given countries. A candidate regex finds
the shape, the library (or the documented rule where stdnum has none) validates it, and a
cue word is required where the shape alone is too common (9-digit Canadian SIN, passports,
bare account numbers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from stdnum import luhn, verhoeff
from stdnum.br import cpf
from stdnum.cn import ric
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import pan
from stdnum.it import codicefiscale
from stdnum.us import ein, rtn

from aivos.shared.residency.scan import Scan, Words, in_windows, matches_at
from aivos.shared.residency.spans import Span

__all__ = ["Gate", "IdRecognizer", "id_recognizers", "ID_COUNTRIES", "LEFT_EDGE"]

Validator = Callable[[str], bool]


def _compact(value: str) -> str:
    return re.sub(r"[\s./-]", "", value).upper()


def _ok(module: object) -> Validator:
    def check(value: str) -> bool:
        return bool(module.is_valid(_compact(value)))  # type: ignore[attr-defined]

    return check


def _aadhaar(value: str) -> bool:
    d = _compact(value)
    return len(d) == 12 and d[0] not in "01" and d != d[::-1] and verhoeff.is_valid(d)


def _sin(value: str) -> bool:
    d = _compact(value)
    return len(d) == 9 and d[0] not in "08" and luhn.is_valid(d)


def _nino(value: str) -> bool:
    d = _compact(value)
    return d[:2] not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def _ifsc(value: str) -> bool:
    """An IFSC has no check digit: its shape (four letters, a zero, six letters or digits)
    is the test, and its branch part may hold no digit (`HDFC0CAGSBK`)."""
    return value[4] == "0"


def _any(value: str) -> bool:
    return sum(c.isdigit() for c in value) >= 2


class Gate(NamedTuple):
    """What stands right before a digit run: a character `before` accepts, directly or with
    one of the characters of `gap` between (`AB 12 ...`)."""

    before: Callable[[str], bool]
    gap: str = ""

    def runs(self, text: str, starts: list[int]) -> list[int]:
        """The digit runs of `starts` (positions in `text`) that follow this gate."""
        before, gap = self.before, self.gap
        if not gap:
            return [g for g in starts if g and before(text[g - 1])]
        return [
            g
            for g in starts
            if g and (before(text[g - 1]) or (text[g - 1] in gap and g > 1 and before(text[g - 2])))
        ]


class IdRecognizer:
    """Values of `pattern` (group `group`) that pass `valid`.

    For the pre-filter (`find_scanned`): every value holds a cluster of at least `min_digits`
    digits (see `scan.py`) and starts at most `scan.BEFORE` characters before it; a pattern
    led by a cue word names its `cues` (lower case), and is then tried only where one of
    them starts a word (and only if some cluster has `min_digits`); a `digit_led` pattern
    (a digit first, never after a word character) is tried only where a digit run starts.
    `gate`, when given, says what stands right before one of every value's digit runs (a
    letter, say), that run starting at most `lead` characters after the value's start:
    `IdPack`'s window pass then tries only the `lead` positions before each digit run that
    follows its gate, less the first `least` (where a value's letters stand: `AB 12 ...`
    starts two or three characters before its digits). `width`, when given, says that every
    value is one whole word (a maximal run of `\\w` characters: the pattern opens with
    `LEFT_EDGE`, ends with `(?![\\w]...`, and each of its characters is a letter or digit) of
    exactly `width` characters: the window pass then tries only the start of the word holding
    a gated run, and only when that word has this width (`RSSMRA85T10A562S`, not `DE89`;
    checked in `tests/unit/test_residency_cost_paths.py`).
    """

    def __init__(
        self,
        entity: str,
        country: str,
        pattern: str,
        valid: Validator = _any,
        *,
        flags: int = 0,
        group: int = 0,
        min_digits: int = 1,
        cues: tuple[str, ...] = (),
        digit_led: bool = False,
        gate: Gate | None = None,
        lead: int = 0,
        least: int = 0,
        width: int = 0,
    ) -> None:
        self.entity = entity
        self.country = country
        # kept as given: `IdPack` joins the patterns of a pack into one pass
        self.pattern, self.flags, self.group, self.valid = pattern, flags, group, valid
        self.min_digits, self.digit_led, self.cues = min_digits, digit_led, cues
        self.gate, self.lead, self.least, self.width = gate, lead, least, width
        self._re = re.compile(pattern, flags)
        self._cue_words = Words(*cues) if cues else None

    def find(self, text: str) -> list[Span]:
        return self._spans(self._re.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        if scan.max_digits < self.min_digits:
            return []
        if self._cue_words:
            return self._spans(matches_at(self._re, scan.text, scan.word_starts(self._cue_words)))
        if self.digit_led:
            return self._spans(matches_at(self._re, scan.text, scan.run_starts(self.min_digits)))
        return self._spans(in_windows(self._re, scan.text, scan.windows(self.min_digits)))

    def _spans(self, matches: Iterable[re.Match[str]]) -> list[Span]:
        g = self.group
        return [Span(m.start(g), m.end(g), self.entity) for m in matches if self.valid(m.group(g))]


LEFT_EDGE = _B = r"(?<![\w-])(?<!\d[ .-])"  # not glued to a word or a longer code
_E = r"(?![\w]|-\w|[ .-]\d)"
# between a cue and its value: punctuation, a word naming the number (`passport ID X1234567`)
_CUE_GAP = r"[^\w\n]{0,4}(?:(?:number|no|nr|num|id|#)\b[^\w\n]{0,4})?(?:is\s+)?"


# Gates at a digit run's start (see `IdRecognizer`): string tests, far cheaper than a regex
# searched over a window character by character. A letter right before the run: the first
# digit of every codice fiscale that holds one (six letters come first), of every PAN and
# IFSC; prose puts a space there ("within 3-5").
_AFTER_LETTER = Gate(str.isalpha)
_AFTER_LETTER_OR_LETTER_SPACE = Gate(str.isalpha, " ")  # `AB 12 34 56 C`, `AB123456C`: NINO
_AFTER_XYZ = Gate(frozenset("XYZxyz").__contains__, " -")  # `X1234567L`, `X-1234567-L`: NIE


_RECOGNIZERS: tuple[IdRecognizer, ...] = (
    # United Kingdom: National Insurance number (no stdnum module; HMRC prefix rules)
    IdRecognizer(
        "NATIONAL_ID", "GB",
        _B + r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]" + _E,
        _nino, flags=re.I, min_digits=6, gate=_AFTER_LETTER_OR_LETTER_SPACE, lead=3, least=2,
    ),
    # United Kingdom: sort code + account number ("20-00-00 12345678", "sort code 200000")
    IdRecognizer(
        "BANK_ACCOUNT", "GB",
        _B + r"\d{2}-\d{2}-\d{2}[ ,;/]{1,3}(?:(?:a/c|acc(?:oun)?t)(?: no\.?| number)?:? ?)?\d{8}"
        + _E, flags=re.I, min_digits=6, digit_led=True,
    ),
    IdRecognizer("BANK_ACCOUNT", "GB", r"(?i)\bsort[ -]?code\b" + _CUE_GAP + r"(\d{2}[- ]?\d{2}[- ]?\d{2})\b", group=1,
                 min_digits=6, cues=("sort",)),
    # United States: ABA routing number (checksum) and an account number after a cue
    IdRecognizer("BANK_ACCOUNT", "US", r"(?i)\b(?:routing|aba|rtn)\b" + _CUE_GAP + r"(\d{9})\b", _ok(rtn), group=1,
                 min_digits=9, cues=("routing", "aba", "rtn")),
    # United States: employer identification number after a cue (IRS campus prefix checked)
    IdRecognizer(
        "NATIONAL_ID", "US",
        r"(?i)\b(?:EIN|FEIN|TIN|(?:federal )?tax(?:payer)? id(?:entification)?|employer id(?:entification)?)\b"
        + _CUE_GAP + r"(\d{2}-?\d{7})\b",
        _ok(ein), group=1, min_digits=9, cues=("ein", "fein", "tin", "federal", "tax", "employer"),
    ),
    # Spain: DNI and NIE (check letter)
    IdRecognizer("NATIONAL_ID", "ES", _B + r"\d{8}[ -]?[A-Z]" + _E, _ok(dni), flags=re.I, min_digits=8, digit_led=True),
    IdRecognizer("NATIONAL_ID", "ES", _B + r"[XYZ][ -]?\d{7}[ -]?[A-Z]" + _E, _ok(nie), flags=re.I, min_digits=7,
                 gate=_AFTER_XYZ, lead=2, least=1),
    # Italy: codice fiscale (check character, omocodia letters)
    IdRecognizer(
        "NATIONAL_ID", "IT",
        _B + r"[A-Z]{6}[\dLMNPQRSTUV]{2}[A-EHLMPRST][\dLMNPQRSTUV]{2}[A-Z][\dLMNPQRSTUV]{3}[A-Z]" + _E,
        _ok(codicefiscale), flags=re.I, min_digits=1,  # omocodia: letters for digits
        gate=_AFTER_LETTER, lead=15, width=16,
    ),
    # India: Aadhaar (Verhoeff) and PAN
    IdRecognizer("NATIONAL_ID", "IN", _B + r"[2-9]\d{3}([ -]?)\d{4}\1\d{4}" + _E, _aadhaar, min_digits=12, digit_led=True),
    IdRecognizer("NATIONAL_ID", "IN", _B + r"[A-Z]{3}[ABCFGHLJPT][A-Z]\d{4}[A-Z]" + _E, _ok(pan), flags=re.I, min_digits=4,
                 gate=_AFTER_LETTER, lead=5, width=10),
    # India: IFSC, the bank branch code of an account (`SBIN0001234`: bank, a zero, branch)
    IdRecognizer("BANK_ACCOUNT", "IN", _B + r"[A-Z]{4}0[A-Z0-9]{6}" + _E, _ifsc, min_digits=1, gate=_AFTER_LETTER, lead=4,
                 width=11),
    # Canada: SIN (Luhn), formatted 3-3-3, or bare after a cue
    IdRecognizer("NATIONAL_ID", "CA", _B + r"\d{3}([ -])\d{3}\1\d{3}" + _E, _sin, min_digits=9, digit_led=True),
    IdRecognizer("NATIONAL_ID", "CA", r"(?i)\b(?:SIN|social insurance)\b" + _CUE_GAP + r"(\d{9})\b", _sin, group=1,
                 min_digits=9, cues=("sin", "social insurance")),
    # France: NIR / INSEE number (key mod 97)
    IdRecognizer(
        "NATIONAL_ID", "FR",
        _B + r"[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}" + _E,
        _ok(nir), flags=re.I, min_digits=13, digit_led=True,
    ),
    # Brazil: CPF; China: resident identity card
    IdRecognizer("NATIONAL_ID", "BR", _B + r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}" + _E, _ok(cpf), min_digits=11, digit_led=True),
    IdRecognizer("NATIONAL_ID", "CN", _B + r"\d{17}[\dX]" + _E, _ok(ric), flags=re.I, min_digits=17, digit_led=True),
    # Any country: passport and bank account numbers right after their cue word
    IdRecognizer(
        "PASSPORT", "*",
        r"(?i)\bpass(?:port|eport|aporte|aporto)\b" + _CUE_GAP + r"([A-Z0-9]{1,3}[ -]?\d{5,9}[A-Z]?)\b",
        group=1, min_digits=5, cues=("pass",),
    ),
    IdRecognizer(
        "BANK_ACCOUNT", "*",
        r"(?i)\b(?:account|acct|a/c|konto|compte|conto|cuenta|rekening)\b" + _CUE_GAP
        + r"((?-i:[A-Z]{2,10})?\d(?:[ -]?\d){5,17})\b",  # a bank prefix glued on: SBIN0123...
        group=1, min_digits=6, cues=("account", "acct", "a/c", "konto", "compte", "conto", "cuenta", "rekening"),
    ),
)  # fmt: skip

ID_COUNTRIES: tuple[str, ...] = tuple(sorted({r.country for r in _RECOGNIZERS} - {"*"}))


def id_recognizers(countries: Iterable[str] | None = None) -> list[IdRecognizer]:
    """The id recognizers of `countries` (ISO codes; None = all) plus the country-less ones."""
    wanted = None if countries is None else {c.upper() for c in countries}
    return [r for r in _RECOGNIZERS if r.country == "*" or wanted is None or r.country in wanted]
