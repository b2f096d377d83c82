"""Phone formats found missing (or over-masked) on public sets nobody here wrote
(`benchmarks/pii_phones_external.py`: pl-pii-bench, contextual-anonymizer), one test per
format, each with the look-alikes that must stay unmasked."""

from __future__ import annotations

import pytest

from aivos.shared.residency import MaskMapping, default_masker
from aivos.shared.residency.phones import PhoneRecognizer

PHONE = PhoneRecognizer()


def _phones(text: str) -> list[str]:
    return [text[s.start : s.end] for s in PHONE.find(text)]


def _masked_phones(text: str) -> str:
    """The text as the whole masker (scanned path) leaves it."""
    return default_masker().mask(text, MaskMapping()).text


@pytest.mark.parametrize(
    "text, value",
    [
        # inflected and compound cue words of other languages, bare 9-digit mobiles after them
        ("Prosimy podać numer telefonu kontaktowego: 510070896.", "510070896"),
        ("04 | rejestr | numer telefonu kontaktowego | 510070895 | sprawdzono", "510070895"),
        ("Meine Telefonnummer ist 301234567.", "301234567"),
        ("Rufnummer: 891234567", "891234567"),
        ("Mi número de teléfono es 612345678.", "612345678"),
        ("Il mio cellulare: 312345678", "312345678"),
        ("Kontakt komórkowy 601234567 po 16.", "601234567"),
        ("My direct line is 2025550143 if anyone asks.", "2025550143"),
    ],
)
def test_cue_words_of_other_languages(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked_phones(text)


def test_the_same_bare_digits_without_a_cue_stay() -> None:
    # 9 bare digits without a cue are an id or an amount as often as a phone (by design)
    assert _phones("Dokument 510070896 z dnia.") == []
    assert _phones("Line 510070896 of the log.") == []


@pytest.mark.parametrize("value", ["+1234567890", "+1987654321", "+3216549870"])
def test_e164_run_whatever_its_country(value: str) -> None:
    # `+` and 10-15 digits in one run: E.164's written form, valid number or placeholder
    text = f"Customer: Sure, it's {value}."
    assert _phones(text) == [value]
    assert value not in _masked_phones(text)


def test_e164_needs_ten_digits_in_one_run() -> None:
    assert _phones("The score moved +12345 points.") == []
    assert _phones("Temperature delta +123456789 units") == []  # 9 digits: not E.164-shaped


@pytest.mark.parametrize(
    "text, value",
    [
        ("tel=+49 30 1234567", "+49 30 1234567"),
        ("Tel/Fax/030 1234567", "030 1234567"),
        ("mobile-07700 900123", "07700 900123"),
    ],
)
def test_label_glued_with_a_sign(text: str, value: str) -> None:
    assert _phones(text) == [value]
    assert value not in _masked_phones(text)


@pytest.mark.parametrize(
    "text",
    [
        "order-123456789 is late",
        "see ISO_2024031512 in the archive",
        "contact phone_0623 286 01 29 today",  # `_` glues a value into an identifier
        "build=1234567890 was deployed",
        "Case WK.5410.127.2024 was opened",  # glued to a word by a full stop: a reference
    ],
)
def test_values_glued_to_other_words_stay(text: str) -> None:
    assert _phones(text) == []


def test_colon_glued_labels_keep_working() -> None:
    # `:` glues a label to its value in key-value text; kept as before for any word
    assert _phones("T:+44 20 7946 0958") == ["+44 20 7946 0958"]
    assert _phones("Kontakt:+49 30 1234567") == ["+49 30 1234567"]
    assert _phones("Tél.01 23 45 67 89") == ["01 23 45 67 89"]


@pytest.mark.parametrize("value", ["(555) 123-4567 Ext. 89", "555-123-4567 EXT 1234",
                                   "020 7946 0958 extension 12"])  # fmt: skip
def test_extension_in_any_case(value: str) -> None:
    text = f"Call {value} tomorrow."
    assert _phones(text) == [value]


@pytest.mark.parametrize(
    "text",
    [
        "UMOWA O PRACĘ NR 12/2024 zawarta w Poznaniu",  # a document's number in a year
        "zapisano FV 0932/01/2026 oraz PK-60938/07",  # ... in a month of a year
        "Uslugi 7 500.00 23% netto",  # an amount with cents, then a VAT rate
        "Towary 12 300,00 zł",
        "Growth was 12 345 678 % over the decade",
        "Ansættelse fra: 1/11/2025 - 1/5/2026",  # a date range (DAB)
        "valid 01.03.2024-31.03.2024 only",
    ],
)
def test_document_numbers_amounts_and_rates_stay(text: str) -> None:
    assert _phones(text) == []


def test_cue_words_still_need_a_word_boundary() -> None:
    # `telefonu` is a cue; a word merely containing a cue word is not
    assert _phones("Telefonu nie podano, kod 512345678.") == ["512345678"]
    assert _phones("Notelephoned 512345678 units") == []
