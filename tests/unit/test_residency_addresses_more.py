"""Street rules that took words and ids for addresses: `via` the preposition, a unit number
cut out of a longer id."""

from __future__ import annotations

import pytest

from aivos.shared.residency.addresses import AddressRecognizer
from aivos.shared.residency.scan import Scan

ADDRESS = AddressRecognizer()


def _addresses(text: str) -> list[str]:
    plain = [text[s.start : s.end] for s in ADDRESS.find(text)]
    scanned = [text[s.start : s.end] for s in ADDRESS.find_scanned(Scan(text))]
    assert plain == scanned  # the pre-filtered path finds the same
    return plain


@pytest.mark.parametrize(
    "text",
    [
        "We will travel via London to Paris.",
        "Send the forms via Royal Mail.",
        "Room 94-2841935 is the reference on the letter.",
        "Suite 12-345678 was quoted on the invoice.",
    ],
)
def test_not_an_address(text: str) -> None:
    assert _addresses(text) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Megan lives on Via Tasso 129 street.", "Via Tasso 129"),
        ("Timotea lives on Via dei Fiorentini 17 street.", "Via dei Fiorentini 17"),
        ("His address: 6138 Via Roma 131", "6138 Via Roma 131"),
        ("We met on Via Porta di Mare 12 at noon.", "Via Porta di Mare 12"),  # a particle inside
        ("Leave it at Room 12-3 please.", "Room 12-3"),
        ("Leave it at Apt 4B please.", "Apt 4B"),
    ],
)
def test_still_an_address(text: str, value: str) -> None:
    assert value in _addresses(text)  # (an address cue before it adds a span of its own)
