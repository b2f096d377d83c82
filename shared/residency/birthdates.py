"""DATE_OF_BIRTH: a full date after a birth cue, or any full date at least 16 years back.

Full dates only (numeric `05/03/1985`, ISO `1985-03-05`, or with a month name `March 5th,
1985`, `5 Mar 1985`); transaction dates of recent years stay readable. `find_scanned` runs
the date pattern only around digit clusters that can hold a year.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from aivos.shared.residency.scan import Scan, Words, in_windows_at
from aivos.shared.residency.spans import Span

__all__ = ["DateOfBirthRecognizer"]

_MONTHS = (
    r"Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
_DATE = re.compile(
    r"(?<![\w/.-])(?:"
    r"(?P<y1>(?:19|20)\d{2})-(?:0?[1-9]|1[0-2])-(?:0?[1-9]|[12]\d|3[01])(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"
    r"|(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|[12]\d|3[01])[./-](?P<y2>(?:19|20)?\d{2})"
    rf"|(?i:(?:{_MONTHS})\.?)[ ](?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?,?[ ](?P<y3>(?:19|20)\d{{2}})"
    rf"|(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\.?[ ](?:of[ ])?(?i:(?:{_MONTHS})\.?),?[ ](?P<y4>(?:19|20)\d{{2}})"
    r")(?![\w/-]|\.\d)"
)
# what every `_DATE` match holds: a 19xx/20xx year, or `d/m/yy`; a window without it (an
# amount `5,000`, a range `3-5 days`) is not searched
_DATE_GATE = re.compile(r"(?:19|20)\d\d|\d[./-]\d{1,2}[./-]\d\d")
_CENTURIES = ("19", "20")
# where a month name may start a date (lower case; a superset, each is verified by `_DATE`)
_MONTH_STARTS = Words(
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"
)  # fmt: skip
_BIRTH = re.compile(
    r"(?i)\b(?:born|birth|birthday|dob|d\.o\.b|b\.|geboren|né|née|nacido|nata|nato)\b"
)


class DateOfBirthRecognizer:
    entity = "DATE_OF_BIRTH"

    def __init__(self, min_age_years: int = 16) -> None:
        self.cutoff = datetime.date.today().year - min_age_years

    def find(self, text: str) -> list[Span]:
        return self._spans(text, _DATE.finditer(text))

    def find_scanned(self, scan: Scan) -> list[Span]:
        # a year has 4 digits (or d/m/yy: 4); a month name and "25th of" may stand before it
        text = scan.text
        windows = [w for w in scan.windows(4) if _DATE_GATE.search(text, *w) is not None]
        if not windows:
            return []
        # a date opens with a digit run (nothing glued before it) or a month name: trying
        # those positions in order finds what `_DATE.finditer` over each window finds. The run
        # is a day or month (one or two digits) or a year 19xx/20xx (four): a card's or an
        # IBAN's groups (`4111`, `0044`, `004512`) are not tried
        runs = [
            p
            for p in scan.all_run_starts
            if not text[p + 1 : p + 3].isdecimal()  # `isdecimal` is what `\d` matches
            or (
                text[p : p + 2] in _CENTURIES
                and text[p + 2 : p + 4].isdecimal()
                and not text[p + 4 : p + 5].isdecimal()
            )
        ]
        starts = sorted(runs + scan.word_starts(_MONTH_STARTS))
        return self._spans(text, in_windows_at(_DATE, text, windows, starts))

    def _spans(self, text: str, matches: Iterable[re.Match[str]]) -> list[Span]:
        spans = []
        for m in matches:
            y = m.group("y1") or m.group("y2") or m.group("y3") or m.group("y4") or ""
            year = int(y) + (1900 if len(y) == 2 and int(y) > 30 else 2000 if len(y) == 2 else 0)
            cue = _BIRTH.search(text, max(0, m.start() - 40), m.start()) is not None
            if cue or year <= self.cutoff:
                spans.append(Span(m.start(), m.end(), self.entity))
        return spans
