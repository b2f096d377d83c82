"""The cheaper street-address paths of `addresses.py` find what the plain definitions find.

- on ASCII text the digit gate is one search of a byte copy whose digits are all `0`: it must
  give exactly the digit-run starts where `_DIGIT_GATE` matches;
- on a text without lower-case letters a number followed by capitals is tried only when a
  number follows one to three words, or an English street suffix in capitals one to four
  (`_ADDRESS_UPPER`): the spans must be those of the full scan `find`;
- `_eu_windows` tests the last letters of the word before a number with a set before
  `str.endswith`: the windows must be those of the plain test.

Texts: the public dev sentences (presidio-research, MIT; `template_id` even), generated
street-like texts, each also upper- and lower-cased.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from aivos.shared.residency import addresses
from aivos.shared.residency.addresses import _DIGIT_GATE, AddressRecognizer, _digit_starts
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.scan import Scan

ROOT = Path(__file__).resolve().parents[2]

_WORDS = [
    "Main", "Street", "St", "St.", "Lane", "Rd", "Road", "ROAD", "STREET", "rue", "RUE", "de",
    "la", "Paix", "Via", "via", "VIA", "Roma", "ul.", "UL.", "Cicha", "Koskikatu", "KOSKIKATU",
    "Vesterskovvej", "Kopfhölzistrasse", "Jana", "Nerudy", "Apt", "APT", "Suite", "Unit", "PO",
    "Box", "P.O.", "Post", "Office", "USNS", "Brown", "FPO", "AE", "PSC", "London", "NY", "CA", "days", "DAYS",
    "Avenue", "av.", "AV", "c/", "calle", "Calle", "Plaza", "allée", "straße", "Straße", "Way",
    "the", "and", "at", "I", "live", "at", "postcode", "Room", "Ørsted", "İzmir", "weg", "Weg",
    "gatan", "u.", "út", "tie", "Drive", "Dr", "Place", "PLACE", "Lovers", "O'Neil", "Saint-Jean",
]  # fmt: skip
_NUMBERS = ["7", "12", "217", "4111", "123456", "12B", "3-5", "10/2", "90210", "1", "00", "٣٤"]
_SEPS = [" ", " ", " ", ", ", "  ", "\n", ". ", "-", "/", ","]


def _generated(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(1, 14)):
            parts.append(rnd.choice(_NUMBERS if rnd.random() < 0.35 else _WORDS))
            parts.append(rnd.choice(_SEPS))
        out.append("".join(parts))
    return out


def _dev() -> list[str]:
    path = ROOT / "benchmarks/data/presidio_synth_dataset_v2.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r["text"] for r in rows if r["template_id"] % 2 == 0]


def _cased(texts: list[str]) -> list[str]:
    return [normalize(c).text for t in texts for c in (t, t.upper(), t.lower())]


def _plain_gate(scan: Scan) -> list[int]:
    return [p for p in scan.digit_run_starts() if _DIGIT_GATE.match(scan.text, p)]


def _plain_eu_windows(scan: Scan) -> list[tuple[int, int]]:
    """`_eu_windows` without the last-letters pre-test."""
    saved = addresses._EU_LAST3, addresses._EU_LAST2
    everything = type("Everything", (), {"__contains__": lambda self, x: True})()
    addresses._EU_LAST3 = addresses._EU_LAST2 = everything  # type: ignore[assignment]
    try:
        return addresses._eu_windows(scan)
    finally:
        addresses._EU_LAST3, addresses._EU_LAST2 = saved


def _differ(texts: list[str]) -> list[str]:
    rec = AddressRecognizer()
    bad = []
    for t in texts:
        scan = Scan(t)
        gate_differs = t.isascii() and not t.isupper() and _digit_starts(scan) != _plain_gate(scan)
        if gate_differs or rec.find_scanned(scan) != rec.find(t) or _eu_windows_differ(scan):
            bad.append(t)
    return bad


def _eu_windows_differ(scan: Scan) -> bool:
    return addresses._eu_windows(scan) != _plain_eu_windows(scan)


@pytest.mark.parametrize(
    "text",
    [
        "7 DAYS. IF IT IS STILL THERE AFTER 3-5 BUSINESS DAYS",
        "6750 KOSKIKATU 25, HELSINKI",
        "12 34 RUE DE LA PAIX, PARIS",
        "217 Lovers Lane, Springfield",
        "4111 1111 1111 1111 on 2024-03-15",
        "VESTERSKOVVEJ 79, 8000 AARHUS",
        "12 Main Street",
        "90210 USNS Brown, FPO AE 09661",
        "12 P.O. Box 5678",
        "12 Post Office Box 5678",
        "7 PSC 1234, Box 5678",
        "7 Unit 1234, Box 5678",
        "u. 5",
        "Kossuth u. 5",
        "út 5",
        "Vesterskovvej  79",
        "a 7",
    ],
)
def test_fast_paths_equal_plain_paths_on_examples(text: str) -> None:
    assert _differ(_cased([text])) == []


def test_upper_case_gate_finds_streets_and_skips_plain_numbers() -> None:
    scan = Scan("SEE 7 DAYS. OR 6750 KOSKIKATU 25, OR 12 RUE CICHA")
    starts = _digit_starts(scan)
    assert [scan.text[p : p + 4] for p in starts] == ["6750", "12 R"]
    assert [(s.start, s.end) for s in AddressRecognizer().find_scanned(scan)] == [
        (s.start, s.end) for s in AddressRecognizer().find(scan.text)
    ]


def test_fast_paths_equal_plain_paths_on_generated_texts() -> None:
    assert _differ(_cased(_generated(3000, 14))) == []


def test_fast_paths_equal_plain_paths_on_public_dev_sentences() -> None:
    texts = _dev()
    assert len(texts) > 500
    assert _differ(_cased(texts)) == []
