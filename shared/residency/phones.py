"""Phone numbers in free text, validated by Google's libphonenumber port (`phonenumbers`).

Candidates are runs of digit groups joined by single separators (space, dash, dot, slash,
an area code in brackets, also before a slash `(52)/301-1100`, `+CC`, `00CC` or `(+CC)` in
front, an `x123` / `X123` extension behind) of 6–15 digits, not shaped like a date, an SSN or
a version; a label may be glued on with a colon or a full stop (`Phone:0623 ...`, `Tel.0623
...`), a phone cue by `#` (`Phone#0623 ...`), a word by a comma (a CSV row); ` 24/7` behind
is no part of it; numbers of 6+ digits each joined by slashes are judged one by one
(`0623 286 01 29/0725 102 73 46`). Unless it carries an international prefix, a word naming
another kind of number right before it ("order", "Order number", "invoice", "case",
"policy", "licence number is", "EUR", ...) says it is no phone. Otherwise it is one when
- a phone cue ("call", "tel", "mobile", "fax", "phone", "number" ...) stands right before it
  (six digits only in groups: `Tel: 48 45 55`), or
- it carries an international prefix (`+49`, `0049`) and libphonenumber finds it possible, or
  it is `+` and 10–15 digits, in one run or in groups (`+54 9 3358 0730`), or
- it is not shaped like another number (a year range, a ZIP+4 code, an amount with cents,
  an amount in thousands ending in 000, a yyyymmdd or ISO date inside it) and
  - libphonenumber finds it valid for one of the site's phone regions (its locale pack), or
  - it has the North American shape `555-123-4567` / `(555)123-4567` / `555.123.4567` (the
    public set's generator draws area codes at random), or four or more digit groups with
    9–15 digits (`06 010 891 1512`): shapes reference numbers rarely take, or
  - it is grouped exactly as some country's numbering plan writes its numbers and valid
    there, whatever the pack (`395 3624`, `26 943046`, `66 31 35`: `phone_plans.py`); six
    digits only in three groups.
A bare run without separators must be 10–13 digits (or have a cue), so order numbers stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers

from aivos.shared.residency.phone_plans import written_as_plan
from aivos.shared.residency.scan import Scan, in_windows_at
from aivos.shared.residency.spans import Span

__all__ = ["PhoneRecognizer", "DEFAULT_PHONE_REGIONS"]

DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "SE", "DK", "NO",
    "FI", "PL", "PT", "IN", "CN", "BR", "AU", "MX",
)  # fmt: skip

# the value itself: `+CC`, `00CC` or `(+CC)`, an area code in brackets, digit groups joined by
# single separators, an extension (`x123`, `ext. 123`, `Ext 12`, `extension 1234`)
_BODY = (
    r"(?:\+[ ]?|\b00|\(\+\d{1,3}\)[ ]?)?"
    r"(?:\(\d{1,5}(?:[ .-]\d{1,4})?\)[ ./-]?)?"
    r"\d+(?:(?:[ .\-/]|[ ]?\(\d{1,5}\)[ ]?|[ ]-[ ])\d+)*"
    r"(?:[ ]?(?i:x|ext\.?|extension)[ ]?\d{1,5})?"
    r"(?![\w@%]|[ ]%|[.,:/-]\d)"  # not a percentage: `23%`, `12 345 678 %`
)
_CANDIDATE = re.compile(
    # a colon or a full stop glued to a word is a label (`Phone:0623 286 01 29`, `tel:+44...`,
    # `Tel.0623 ...`, after an abbreviation too: `Tel.:0623 ...`); after a digit it is a time,
    # a ratio or a decimal (`10:42:13`, `3.14`), after `..` an ellipsis
    # glued to a word by `=`, `/` or `-` it is a phone only after a phone cue word
    # (`tel=+4930...`, `Tel/Fax/0623...`, `mobile-07700...`), by `#` only after one
    # (`Phone#0623...`, `Tel #0623...`: `_spans`); a comma glues a value to a word in a CSV
    # row (`Smith,0623 ...`), after a digit it is a thousands separator (`1,234,567`)
    r"(?<![\w@$€£¥+&])(?<!\d,)"
    r"(?<!\d[:.])(?<!\.\.)(?<![A-Za-z]{2}\d{2} )(?<![A-Za-z]{2}\d{2} [A-Za-z0-9]{4} )"
    # never cut out of a longer digit run, unless it opens with `+` (`Room 12 +41 ...`,
    # `(898)666-3621/+41 ...`)
    r"(?:(?<![\W\d_][=/-])(?<!\d[ .-])|(?=\(?\+))" + _BODY
)
_DAY, _MONTH = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])"
_DATE_DMY = rf"(?:{_DAY}[./]{_MONTH}|{_MONTH}[./]{_DAY})[./](?:19|20)\d\d"
# shapes that are something else whatever the context: an ISO or a day-month-year date (a
# real one: `80-21-23`, `75.12.34` are Faroese and Caledonian numbers), an SSN, an IPv4
# address (a valid one: `012.34.56.78` is a Belgian number), ...
_NOT_A_PHONE = re.compile(
    rf"^(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|(?:{_DAY}[./-]{_MONTH}|{_MONTH}[./-]{_DAY})[./-]\d{{2,4}}"
    r"|\d{3}-\d{2}-\d{4}"
    r"|(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"  # IPv4
    r"|\d{4}\.\d{1,2}\.\d{1,2}|\d{4}([ -])\d{6}\1\d{5}"
    # a document's number in a year, or in a month of a year: `12/2024`, `0932/01/2026`
    r"|\d{1,4}/(?:19|20)\d\d|\d+(?:/\d+)*/(?:0?[1-9]|1[0-2])/(?:19|20)\d\d)$"
)
# phone cue words, inflected and compound forms of other languages included (`telefonu`,
# `Telefonnummer`, `teléfono`, `telefoon`, `Rufnummer`, `móvil`, `komórka`, `direct line`)
_CUE_WORDS = (
    r"phone|t[ée]l|telephone|mobile|mob|cell|cellphone|fax|fon|call|ring|text|sms|whatsapp"
    r"|number|no|nr|desk|landline|hotline|helpline|contact|kontakt|reach|dial|handy"
    r"|(?:direct|phone|mobile|office|home|work)[ ]line"
    r"|t[ée]l[ée]phon[a-z]*|tel[ée]fo+n[a-zà-ÿ]*|phone[-]?(?:no|nr|number|numbers)"
    r"|(?:ruf|handy|mobil|telefon|tel|fax)nummer|durchwahl|mobil[a-z]*|m[óo]vil|celular|cellulare"
    r"|portable|kom[óo]rk[a-zęąó]*|gsm|ph|tlf|tfn|puh(?:elin)?[a-z]*"
)
_CUE = re.compile(rf"(?i)(?:\b(?:{_CUE_WORDS})\b|☎)[^\d\n]{{0,20}}$")
# what glues a value to a word (`Tel.0623 ...`, `Phone:0623 ...`, `tel=+4930 ...`); a value
# glued by any but `:` to a word that is no phone cue is part of a reference (`WK.5410.127.2024`)
_GLUE = ".:=/-"
_CUE_WORD = re.compile(rf"(?i)(?:{_CUE_WORDS})")
# a word naming another kind of number right before the value: "order 4512 3398",
# "Order number 100234567", "Policy 88 1234 5678", "EUR 1 250 000", "ZIP 94105-1234"
_OTHER_NUMBER = re.compile(
    r"(?i)(?:\b(?:orders?|invoices?|inv|tickets?|ref|refs|reference|case|claims?|polic(?:y|ies)"
    r"|contracts?|serial|sn|batch|model|store|pallet|parcel|tracking|shipment|items?|sku"
    r"|product|part|article|booking|reservation|confirmation|transaction|txn|receipt|member"
    r"|customer|client|loan|flight|room|zip|postcode|postal|version|build"
    r"|release|pages?|code|(?<!caller )id|amount|total|balance|sum|price|eur|usd|gbp|chf|inr|brl"
    r"|licen[cs]e|permit|passport|registration|plate|vin|badge|employee|staff|student)\.?"
    r"(?:[ ]?(?:number|no\.?|nr\.?|num\.?|#|id|code))?(?:[ ](?:is|was))?|[€$£¥₹])"
    r"[ ]?[:#]?[ ]?$"
)
# values shaped like something else; only when no phone cue says otherwise
_OTHER_SHAPE = re.compile(
    r"^(?:(?:19|20)\d\d ?[-/–] ?(?:19|20)\d\d"  # a year range 2023-2024
    r"|\d{5}-\d{4}"  # a US ZIP+4 code
    # an amount with cents: 12345.67 (a decimal such as `3.14159265` is left: single-dot
    # phones are written too, `362.24154`, `10.603954`)
    r"|\d+\.\d\d"
    r"|\d{1,3}(?:[ ]\d{3})+[.]\d\d"  # with thousands and cents: 7 500.00, 12 300.00
    r"|\d{1,3}(?:([ .,])\d{3})*\1(?:000)"  # an amount in thousands: 1 250 000, 2.500.000
    r"|(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b.*"  # an ISO date in front: 2024-03-15-0007
    r"|.*(?<!\d)(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d).*"  # yyyymmdd
    # a date range: 1/11/2025 - 1/5/2026, 01.03.2024-31.03.2024
    rf"|{_DATE_DMY}[ ]?[-–][ ]?{_DATE_DMY}"
    r")$"
)
# North American shape, valid area code or not: 555-123-4567, (555)123-4567, +1-555-123-4567
_NANP_SHAPE = re.compile(r"^(?:(?:\+1|001|1)[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[.-]\d{4}$")
_GROUP = re.compile(r"\d+")
# what follows a building and a house number: a capitalised street name on the same line
# (one capitalised word before another, a number, a comma or the line's end: `Crown St`,
# `Pavlou Drandaki`; not a sentence going on, `467 3395 Please call`) or, within three words,
# a street word
_STREET_AFTER = re.compile(
    r"[ ]+(?:[A-Z][a-z]+(?:[ ]+[A-Z0-9]|[ ]*(?:[,\n]|$))"
    r"|(?i:(?:[a-z]+[ ]+){0,2}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr"
    r"|boulevard|blvd|way|court|ct|place|pl|square|sq|terrace|close|crescent)\b))"
)
# `(+358) 40 123 4567`: an international prefix written in brackets, read as `+358 40 ...`
_BRACKETED_CC = re.compile(r"^\((\+\d{1,3})\)[ ]?")
# "around the clock" after a number is no part of it: `0800 123 4567 24/7`
_AROUND_THE_CLOCK = " 24/7"
_EXT = re.compile(r"(?i)[ ]?(?:x|ext\.?|extension)[ ]?\d{1,5}$")


class PhoneRecognizer:
    """Phone numbers of the given regions plus any number with an international prefix."""

    entity = "PHONE"

    def __init__(self, regions: Iterable[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(r.upper() for r in regions)

    def find(self, text: str) -> list[Span]:
        return self._spans(text, _CANDIDATE.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        # a candidate opens with `+`, `(` or a digit run
        text, runs = scan.text, scan.all_run_starts
        return self._spans(text, in_windows_at(_CANDIDATE, text, scan.windows(6), runs, "+("))

    def _spans(self, text: str, candidates: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        for m in candidates:
            start, cue = m.start(), False
            if start > 1 and text[start - 1] in _GLUE and text[start - 2].isalpha():
                # glued to a word by `.`, `=`, `/` or `-`: a phone only when that word is a
                # phone cue (`Tel.0623`, not `WK.5410.127.2024`); by `:` as before (`T:0623`)
                if _CUE_WORD.fullmatch(_word_before(text, start - 1)) is not None:
                    cue = True
                elif text[start - 1] != ":":
                    continue
            elif start > 0 and text[start - 1] == "#":
                # `Phone#0623 ...`, `Tel #0623 ...`; after any other word a reference number
                # (`Ticket#4471203`, `at #12`)
                glue = start - 2 if start > 1 and text[start - 2] in " ." else start - 1
                if _CUE_WORD.fullmatch(_word_before(text, glue)) is None:
                    continue
                cue = True
            value, end = m.group(0), m.end()
            if value.endswith(_AROUND_THE_CLOCK):
                value, end = value[: -len(_AROUND_THE_CLOCK)], end - len(_AROUND_THE_CLOCK)
            if self._is_phone(value, text, start, end, cue):
                spans.append(Span(start, end, self.entity))
            elif "/" in value:
                spans += self._slashed(value, text, start, cue)
        return spans

    def _is_phone(self, value: str, text: str, start: int, end: int, cue: bool) -> bool:
        digits = sum(c.isdigit() for c in value)
        if not 6 <= digits <= 18 or _NOT_A_PHONE.match(value):
            return False
        core = _BRACKETED_CC.sub(r"\1 ", _EXT.sub("", value), count=1)
        return self._accept(core, text, start, end, cue)

    def _slashed(self, value: str, text: str, start: int, cue: bool) -> list[Span]:
        """Numbers of 6+ digits each joined by slashes, which no phone is as a whole
        (`0623 286 01 29/0725 102 73 46`, `Tel/Fax: 75721103/30271937`): each one on its own,
        a cue before the first counting for all."""
        parts = value.split("/")
        if any(sum(c.isdigit() for c in p) < 6 for p in parts):
            return []  # `030/1234567` is one number, `0932/01/2026` none
        cue = cue or _CUE.search(text, max(0, start - 32), start) is not None
        spans, pos = [], start
        for p in parts:
            if self._is_phone(p, text, pos, pos + len(p), cue):
                spans.append(Span(pos, pos + len(p), self.entity))
            pos += len(p) + 1
        return spans

    def _accept(self, value: str, text: str, start: int, end: int, cue: bool = False) -> bool:
        digits = sum(c.isdigit() for c in value)
        intl = value.startswith("+") or value.startswith("00")
        if digits - 2 * value.startswith("00") > 15:
            return False
        if not intl and _OTHER_NUMBER.search(text, max(0, start - 24), start):
            return False
        if cue or _CUE.search(text, max(0, start - 32), start):
            # six digits only in groups (`48 45 55`, Greenland, Faroe): a bare 6-digit run is
            # a PIN, a code or an amount as often as a phone
            return digits >= 7 or not value.isdigit()
        if digits < 6 or _OTHER_SHAPE.match(value):
            return False
        if intl:
            # `+` and 10-15 digits is how only phone numbers are written, whether or not its
            # country has such numbers: in one run (`+1234567890`, a placeholder models write)
            # or grouped (`+54 9 3358 0730`, `+389(0)332245383`: a digit too few or too many
            # for their plans, as generators and people write them)
            if value[0] == "+" and digits >= 10:
                return True
            e164 = "+" + value[2:] if value.startswith("00") else value
            if digits >= 7 and _possible(e164, None):
                return True
            # a `00` that leads to no country, in the North American shape: a national number
            # whose area code was drawn at random, as the shape is taken below (`005-599-2651`)
            return (
                value[0] == "0"
                and _NANP_SHAPE.match(value) is not None
                and not _OTHER_NUMBER.search(text, max(0, start - 24), start)
            )
        if value.isdigit():
            return 10 <= digits <= 13 and any(_valid(value, r) for r in self.regions)
        groups = len(_GROUP.findall(value))
        if digits >= 7 and (_NANP_SHAPE.match(value) or (digits >= 9 and groups >= 4)):
            return True
        if digits >= 7 and any(_valid(value, region) for region in self.regions):
            return True
        # grouped exactly as some country's plan writes its numbers, and valid there
        # (`395 3624`, `26 943046`, `66 31 35`); six digits only in three groups; not two
        # house numbers before a street (`9816 214 Pavlou Drandaki`, `3747 3911 fourth avenue`);
        # three groups are no pair of house numbers (`80 59 01 Monday`)
        if groups == 2 and _STREET_AFTER.match(text, end):
            return False
        return (digits >= 7 or groups >= 3) and written_as_plan(value)


def _word_before(text: str, end: int) -> str:
    """The letters right before `end` (at most 24)."""
    start = end
    while start > max(0, end - 24) and text[start - 1].isalpha():
        start -= 1
    return text[start:end]


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
