"""The context recognizers: names, street addresses and dates of birth, by rules.

No model: these run in microseconds on the edge CPU and are measured on public data
(`benchmarks/pii_public.py`). Each lives in its own module: `persons.py`, `addresses.py`,
`birthdates.py`.
"""

from __future__ import annotations

from aivos.shared.residency.addresses import AddressRecognizer
from aivos.shared.residency.birthdates import DateOfBirthRecognizer
from aivos.shared.residency.persons import PersonRecognizer
from aivos.shared.residency.spans import Recognizer

__all__ = ["PersonRecognizer", "AddressRecognizer", "DateOfBirthRecognizer", "context_recognizers"]


def context_recognizers() -> list[Recognizer]:
    """Names, addresses and dates of birth, after the structured recognizers."""
    return [DateOfBirthRecognizer(), AddressRecognizer(), PersonRecognizer()]
