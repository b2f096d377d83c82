"""The cheaper paths of the Dec 2 cost work find what the plain definitions find.

- `Scan` on ASCII text finds its digit clusters and runs on a byte copy where every digit is
  `0` (a literal the regex engine skips to): the same as the `\\d` patterns on the text;
- `IdPack`'s window pass tries a width pattern (`IdRecognizer.width`) only at the start of a
  word of that width: each such pattern must be one whole word of letters and digits of
  exactly that width, which is checked here on its regex, character class by character
  class, over every Unicode code point;
- an ungated window pattern still gets each window searched.
"""

from __future__ import annotations

import random
import re

import pytest

from aivos.shared.residency.idpack import IdPack
from aivos.shared.residency.ids import _E, LEFT_EDGE, IdRecognizer, id_recognizers
from aivos.shared.residency.scan import Scan

_DIGIT_RUN = re.compile(r"\d+")
_CLUSTER = re.compile(r"\d(?:[^\n]{0,3}?\d)*")


def _ascii_texts() -> list[str]:
    rnd = random.Random(3)
    alphabet = "0123456789 \n-./abcXYZ(+)"
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60))) for _ in range(2000)]
    texts += ["", "7", "a1\n2b", "4111 1111 1111 1111 12/26", "call 555\n0199 or +44 20 7946"]
    return texts


@pytest.mark.parametrize("text", _ascii_texts()[:5] + _ascii_texts()[-5:])
def test_scan_digit_facts_on_ascii_equal_the_digit_patterns(text: str) -> None:
    scan = Scan(text)
    digits = [
        (m.start(), m.end(), sum(c.isdigit() for c in m.group())) for m in _CLUSTER.finditer(text)
    ]
    assert scan.clusters == digits
    assert scan.all_run_starts == [m.start() for m in _DIGIT_RUN.finditer(text)]


def test_scan_digit_facts_on_many_ascii_texts() -> None:
    differ = [
        t
        for t in _ascii_texts()
        if Scan(t).clusters
        != [(m.start(), m.end(), sum(c.isdigit() for c in m.group())) for m in _CLUSTER.finditer(t)]
        or Scan(t).all_run_starts != [m.start() for m in _DIGIT_RUN.finditer(t)]
    ]
    assert differ == []


# one item of a width pattern's body: a character class, `\d`, or a literal letter or digit,
# with an optional `{n}`
_ITEM = re.compile(r"(\[(?:\\.|[^\]\\])*\]|\\d|[A-Za-z0-9])(?:\{(\d+)\})?")
_ALL = "".join(map(chr, range(0x110000)))


@pytest.mark.parametrize(
    "rec", [r for r in id_recognizers() if r.width], ids=lambda r: f"{r.country}-{r.width}"
)
def test_a_width_pattern_is_one_whole_word_of_that_width(rec: IdRecognizer) -> None:
    assert rec.pattern.startswith(LEFT_EDGE) and rec.pattern.endswith(_E)
    body = rec.pattern[len(LEFT_EDGE) : -len(_E)]
    items = list(_ITEM.finditer(body))
    assert "".join(m.group() for m in items) == body  # nothing but fixed-width items
    assert sum(int(m.group(2) or 1) for m in items) == rec.width
    for m in items:  # no character any item matches is outside `\w`
        outside = re.compile(r"(?=\W)" + m.group(1), rec.flags).search(_ALL)
        assert outside is None, (m.group(1), outside)


def _glued(values: list[str], seed: int) -> list[str]:
    rnd = random.Random(seed)
    left = ["", " ", "x", "-", "_", "12 ", "(", "ID ", "DE89 ", "A", "é"]
    right = ["", " ", "x", "-", "_", " 12", ")", ".", "9", "é"]
    return [
        rnd.choice(["code ", "", "in 3-5 days "]) + rnd.choice(left) + rnd.choice(values)
        + rnd.choice(right) + rnd.choice(["", " ok", " and 7 days"])
        for _ in range(600)
    ]  # fmt: skip


_WIDTH_VALUES = [
    "RSSMRA85T10A562S",
    "RSSMRAURTMLARSNS",  # every digit an omocodia letter: no digit, not looked for
    "RSSMRA8RT10A56NS",  # some digits replaced
    "rssmra85t10a562s",
    "ABCPE1234F",
    "SBIN0001234",
    "HDFC0CAGSBK",
    "X1234567L",
    "AB 12 34 56 C",
    "DE89 3704 0044 0532 0130 00",
]


@pytest.mark.parametrize("pack", [None, ("IT",), ("IN",), ("GB", "ES")])
def test_id_pack_window_pass_equals_each_pattern_searched(pack: tuple[str, ...] | None) -> None:
    recs = id_recognizers(pack)
    joined = IdPack(recs)
    differ = [
        t
        for t in _glued(_WIDTH_VALUES, 4)
        if joined.find_scanned(Scan(t)) != [s for r in recs for s in r.find(t)]
    ]
    assert differ == []


def test_an_ungated_window_pattern_still_gets_its_windows_searched() -> None:
    # a window pattern with no gate (here: two letters, dash, four digits) next to gated ones
    ungated = IdRecognizer("NATIONAL_ID", "ZZ", LEFT_EDGE + r"[A-Z]{2}-\d{4}" + _E, min_digits=4)
    recs = [*id_recognizers(("IT", "IN")), ungated]
    joined = IdPack(recs)
    texts = _glued([*_WIDTH_VALUES, "QX-2019", "qx-2019"], 6)
    assert any(ungated.find(t) for t in texts)
    differ = [
        t for t in texts if joined.find_scanned(Scan(t)) != [s for r in recs for s in r.find(t)]
    ]
    assert differ == []
