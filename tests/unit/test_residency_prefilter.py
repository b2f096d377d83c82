"""The pre-filter (`scan.py`) changes where recognizers look, never what they find.

Every built-in recognizer with a `find_scanned` must return the same spans as its full scan
`find`, on sentences of the public set (presidio-research, MIT), on the generated set, and on
texts made of several of them (so windows of different values meet and merge).
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest

from aivos.shared.residency import default_masker
from aivos.shared.residency.normalize import normalize
from aivos.shared.residency.scan import Scan

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pii_dataset import generate  # noqa: E402


def _texts() -> list[str]:
    with gzip.open(ROOT / "benchmarks/data/presidio_synth_dataset_v2.jsonl.gz", "rt") as fh:
        public = [json.loads(line)["text"] for line in fh if line.strip()]
    generated = [r["text"] for r in generate(400, 5)]
    rnd = random.Random(1)
    joined = [
        rnd.choice([" ", "\n", ". "]).join(rnd.sample(public + generated, 4)) for _ in range(150)
    ]
    extra = [
        "Dr. Anna Kowalski, 20-00-00 a/c no. 12345678, born 25th of December 1985, lives at "
        "ul. Cicha 86 — call + 49 30 12345678 ext. 12, İstanbul Caddesi 5",
        "RSSMRA85T10A562S / ABCDE1234F / GB82 WEST 1234 5698 7654 32 / SSN 078051120",
    ]
    return [normalize(t).text for t in public + generated + joined + extra]


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
