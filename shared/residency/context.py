"""The context recognizers: names, street addresses and dates of birth.

Rules (`persons.py`, `addresses.py`, `birthdates.py`) and a small token tagger
(`tagger.py`, names and street addresses the rules miss) run side by side; where their spans
overlap the longest wins. All run on the edge CPU and are measured on public data
(`benchmarks/pii_public.py`).
"""

from __future__ import annotations

from aivos.shared.residency.addresses import AddressRecognizer
from aivos.shared.residency.birthdates import DateOfBirthRecognizer
from aivos.shared.residency.persons import PersonRecognizer
from aivos.shared.residency.spans import Recognizer
from aivos.shared.residency.tagger import TaggerRecognizer

__all__ = [
    "PersonRecognizer",
    "AddressRecognizer",
    "DateOfBirthRecognizer",
    "TaggerRecognizer",
    "context_recognizers",
]


def context_recognizers() -> list[Recognizer]:
    """Names, addresses and dates of birth, after the structured recognizers."""
    return [DateOfBirthRecognizer(), AddressRecognizer(), PersonRecognizer(), TaggerRecognizer()]
