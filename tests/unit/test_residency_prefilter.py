"""The pre-filter (`scan.py`) changes where recognizers look, never what they find.

Every built-in recognizer with a `find_scanned` must return the same spans as its full scan
`find`, on sentences of the public set (presidio-research, MIT), on the generated set, and on
texts made of several of them (so windows of different values meet and merge).
"""

from __future__ import annotations

import random

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.idpack import IdPack
from aivos.shared.residency.ids import id_recognizers
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.scan import Scan
from aivos.shared.residency.spans import find_all
from tests.fixtures.pii_corpus import residency_texts


def _texts() -> list[str]:
    return [normalize(t).text for t in residency_texts()]


TEXTS = _texts()


@pytest.mark.parametrize(
    "rec",
    [r for r in default_masker().recognizers if hasattr(r, "find_scanned")],
    ids=lambda r: type(r).__name__,
)
def test_find_scanned_equals_full_scan(rec) -> None:
    differ = [
        t
        for t in TEXTS
        if sorted(rec.find(t), key=lambda s: (s.start, s.end))
        != sorted(rec.find_scanned(Scan(t)), key=lambda s: (s.start, s.end))
    ]
    assert differ == []


def test_windows_hold_clusters_with_enough_digits() -> None:
    text = "order 12 then card 4111 1111 1111 1111 12/26 and 7 days"
    scan = Scan(text)
    assert scan.max_digits == 20
    [(start, end)] = scan.windows(12)
    assert "4111 1111 1111 1111 12/26" in text[start:end]
    assert scan.windows(21) == []
    assert len(scan.windows(1)) == 1  # the margins merge the three clusters


@pytest.mark.parametrize("rec", id_recognizers(), ids=lambda r: f"{r.country}-{r.entity}")
def test_each_id_recognizer_scanned_equals_full_scan(rec) -> None:
    differ = [t for t in TEXTS if rec.find(t) != rec.find_scanned(Scan(t))]
    assert differ == []


@pytest.mark.parametrize(
    "pack", [None, ("US", "CA", "MX"), ("GB", "IE"), ("IN",), ("ES", "FR", "IT"), ("BR", "CN")]
)
def test_id_pack_equals_its_recognizers_one_by_one(pack) -> None:
    """The one-pass `IdPack` finds the spans, in the order, of its recognizers run in turn."""
    recs = id_recognizers(pack)
    joined = IdPack(recs)
    differ = [
        t
        for t in TEXTS + ID_TEXTS
        if joined.find_scanned(Scan(t)) != [s for r in recs for s in r.find_scanned(Scan(t))]
        or find_all(t, [joined]) != find_all(t, recs)
    ]
    assert differ == []


ID_TEXTS = [
    "sort code 20-00-00 account 12345678, routing 021000021, SIN 046454286 or 046 454 286, "
    "passport 123456789, NIE X1234567L, DNI 12345678Z, PAN ABCPE1234F, CPF 111.444.777-35, "
    "NINO AB 12 34 56 C, codice fiscale RSSMRA85T10A562S, Aadhaar 2345 6789 0124",
    "NIR 1 84 12 76 451 089 46 and RIC 11010519491231002X, 20-00-00 a/c no. 12345678",
]


def _id_heavy(n: int, seed: int) -> list[str]:
    """Valid ids of every kind (check digits from `python-stdnum`) with neighbours that test
    the gates: glued to letters or digits, after another number's group, in lower case."""
    from stdnum import luhn, verhoeff
    from stdnum.cn import ric
    from stdnum.es import dni, nie
    from stdnum.it import codicefiscale

    rnd = random.Random(seed)

    def digits(k: int) -> str:
        return "".join(rnd.choice("0123456789") for _ in range(k))

    def letters(k: int) -> str:
        return "".join(rnd.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(k))

    def values() -> list[str]:
        d8, x7 = digits(8), rnd.choice("XYZ") + digits(7)
        cf = letters(6) + digits(2) + rnd.choice("ABCDEHLMPRST") + digits(2) + letters(1)
        cf += digits(3)
        aadhaar = str(rnd.randint(2, 9)) + digits(10)
        aadhaar += verhoeff.calc_check_digit(aadhaar)
        sin = str(rnd.randint(1, 7)) + digits(7)
        sin += luhn.calc_check_digit(sin)
        cn = "110105" + "19" + digits(2) + f"{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        cn += digits(3)
        sep = rnd.choice([" ", "-", ""])
        return [
            d8 + dni.calc_check_digit(d8),
            x7 + nie.calc_check_digit(x7),
            x7[0] + "-" + x7[1:] + "-" + nie.calc_check_digit(x7),
            cf + codicefiscale.calc_check_digit(cf),
            (cf + codicefiscale.calc_check_digit(cf)).lower(),
            letters(3) + rnd.choice("ABCFGHLJPT") + letters(1) + digits(4) + letters(1),
            rnd.choice(["AB", "QQ", "CE"]) + rnd.choice([" ", ""]) + f"{digits(2)} {digits(2)} "
            f"{digits(2)} " + rnd.choice("ABCD"),
            rnd.choice(["AB", "QQ"]) + digits(6) + rnd.choice("ABCD"),
            sep.join([aadhaar[:4], aadhaar[4:8], aadhaar[8:]]),
            rnd.choice([" ", "-"]).join([sin[:3], sin[3:6], sin[6:]]),
            cn + ric.calc_check_digit(cn),
            f"{digits(2)}-{digits(2)}-{digits(2)} {digits(8)}",
        ]

    left = ["", "ref ", "id:", "x", "4111 ", "no. ", "(", "ES-", "card 4111 1111 ", "DE89 "]
    right = ["", ".", " ok", "x", " 12", "-3", ")", ", and more"]
    out = []
    for _ in range(n):
        vs = values()
        rnd.shuffle(vs)
        out.append(" ".join(rnd.choice(left) + v + rnd.choice(right) for v in vs[:3]))
    return out


ID_TEXTS += _id_heavy(300, 8)
